"""Lab results as a county lab centre sends them: HL7 v2 ORU^R01 in UTF-8 and GB18030, FHIR R4.

The people are made up; 11010519491231002X is the sample number of GB 11643 (checksum valid).
The placer order numbers are consult ids, as the lab consult carries them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

CONSULT = "6f1c2a9e-4b7d-4e21-9a53-0c8d2f7e1b44"
CONSULT_CBC = "0b9e5d31-7c2a-4f18-8e6d-3a1f9c4b2d70"
NATIONAL_ID = "11010519491231002X"

# Emergency electrolytes and cardiac markers, UTF-8: a critical potassium, a critical troponin.
ORU_UTF8 = "\r".join(
    [
        "MSH|^~\\&|LIS|县人民医院检验科|HUIZHEN|远程检验中心|20240315103000+0800||ORU^R01^ORU_R01"
        "|LAB20240315000123|P|2.5.1|||AL|NE|CHN|UNICODE UTF-8",
        "PID|1||0001234567^^^县人民医院^MR~" + NATIONAL_ID + "^^^中华人民共和国公安部^NNCHN"
        "||张^三||19491231|M|||幸福路1号^^城关镇^^^CHN",
        "PV1|1|E",
        f"ORC|RE|{CONSULT}|F202403150088^LIS||CM",
        f"OBR|1|{CONSULT}|F202403150088^LIS|ELEC^电解质四项^99LAB|||20240315091500"
        "|||||||20240315092000|SER&血清|||||||20240315102800|||F",
        "OBX|1|NM|2823-3^血钾 K^LN||6.8|mmol/L^mmol/L^UCUM|3.5-5.3|HH|||F|||20240315101500",
        "NTE|1|L|危急值已电话通知临床\\.br\\接听人：李护士",
        "OBX|2|NM|2951-2^血钠 Na^LN||138|mmol/L|137-147|N|||F|||20240315101500",
        "OBX|3|NM|2075-0^血氯 Cl^LN||96|mmol/L|99-110|L|||F|||20240315101500",
        "OBX|4|NM|17861-6^血钙 Ca^LN||2.21|mmol/L|2.11-2.52||||C|||20240315101500",
        "NTE|1|L|复核后更正：原结果 2.12 \\T\\ 标本号 \\F\\A\\F\\",
        f"OBR|2|{CONSULT}|F202403150089^LIS|CARD^心肌标志物^99LAB|||20240315091500"
        "|||||||||||||||20240315103000|||F",
        "OBX|1|NM|10839-9^肌钙蛋白 I^LN||2.35|ng/mL|0-0.04|HH|||F|||20240315102000",
        "OBX|2|SN|33762-6^N端脑钠肽前体 NT-proBNP^LN||>^35000|pg/mL|<125|H|||F|||20240315102000",
        "OBX|3|ST|CKMB^肌酸激酶同工酶 CK-MB^99LAB||3.1|ng/mL|0-5||||P|||20240315102000",
        "OBX|4|SN|ANA^抗核抗体^99LAB||^1^:^320||<1:100|A|||F",
    ]
)

# A complete blood count from a township centre: GB18030 bytes. The facility and the patient's
# name hold characters whose second byte is '|' (東, 億) or '\' (籠) in GB18030.
ORU_GB18030_TEXT = "\r".join(
    [
        "MSH|^~\\&|LIS|東城醫院|HUIZHEN|远程检验中心|20240316080500||ORU^R01|LAB20240316000007"
        "|P|2.4|||AL|NE||GB 18030-2000",
        "PID|1|A1001|A1001^^^東城醫院^PI~" + NATIONAL_ID + "^^^^NNCHN||李^億||19800101|F",
        f"OBR|1|{CONSULT_CBC}|F0316007|CBC^血常规^99LAB|||20240316073000"
        "|||||||||||||||20240316080000|||F",
        "NTE|1||标本轻度溶血（籠）",
        "OBX|1|NM|718-7^血红蛋白 HGB^LN||85|g/L|130-175|L|||F",
        "OBX|2|NM|6690-2^白细胞 WBC^LN||12.6|10^9/L|3.5-9.5|H|||F",  # unescaped, as LIS do
        "OBX|3|NM|777-3^血小板 PLT^LN||18|10\\S\\9/L|125-350|LL|||F",
        "OBX|4|CE|882-1^血型^LN||A^A型^99ABO||||||F",
        "OBX|5|TX|MORPH^外周血细胞形态^99LAB||可见少量靶形红细胞~\\XCEB4BCFB\\原始细胞||||||P",
    ]
)
ORU_GB18030 = ORU_GB18030_TEXT.encode("gb18030")


def with_charset(text: str, charset: str) -> str:
    """The same message declaring another MSH-18."""
    first, _, rest = text.partition("\r")
    fields = first.split("|")
    fields += [""] * (18 - len(fields))
    fields[17] = charset
    return "|".join(fields) + "\r" + rest


def with_delimiters(text: str, delimiters: str) -> str:
    """The same message written with other separators: field, component, repetition, escape,
    subcomponent (the message must hold none of the new characters)."""
    assert not set(delimiters) & set(text)
    return text.translate(str.maketrans("|^~\\&", delimiters))


def oru(*segments: str, charset: str = "UNICODE UTF-8", kind: str = "ORU^R01") -> str:
    """A small message around the given segments."""
    msh = f"MSH|^~\\&|LIS|LAB|HUIZHEN|HZ|20240315103000||{kind}|C1|P|2.5.1||||||{charset}"
    return "\r".join([msh, *segments])


# -- FHIR R4 -----------------------------------------------------------------------------------

V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PLACER = {"coding": [{"system": V2_0203, "code": "PLAC"}]}
CONSULT_SYSTEM = "urn:huizhen:consult"
NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"


def _interpretation(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": V3, "code": code}]}]


def _quantity(value: Any, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def observation(
    ident: str,
    loinc: str,
    name: str,
    value: Any,
    unit: str,
    low: Any,
    high: Any,
    interpretation: str | None,
    status: str = "final",
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ident,
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": name}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-15T10:15:00+08:00",
        "valueQuantity": _quantity(value, unit),
        "referenceRange": [{"low": _quantity(low, unit), "high": _quantity(high, unit)}],
    }
    if interpretation:
        obs["interpretation"] = _interpretation(interpretation)
    return obs


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {
            "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
            "system": "urn:huizhen:county-hospital:mr",
            "value": "0001234567",
        },
        {
            "type": {"coding": [{"system": V2_0203, "code": "NNCHN"}]},
            "system": NATIONAL_ID_SYSTEM,
            "value": NATIONAL_ID,
        },
    ],
    "name": [{"text": "张三", "family": "张", "given": ["三"]}],
    "gender": "male",
    "birthDate": "1949-12-31",
}

POTASSIUM = observation("k", "2823-3", "血钾 K", 6.8, "mmol/L", 3.5, 5.3, "HH")
SODIUM = observation("na", "2951-2", "血钠 Na", 138, "mmol/L", 137, 147, "N")
TROPONIN = observation("ctni", "10839-9", "肌钙蛋白 I", 2.35, "ng/mL", 0, 0.04, "HH")
HEMOGLOBIN = observation("hgb", "718-7", "血红蛋白 HGB", 85, "g/L", 130, 175, "L")

# A DiagnosticReport with its Observations contained, referenced as "#id".
REPORT_CONTAINED: dict[str, Any] = {
    "resourceType": "DiagnosticReport",
    "id": "dr1",
    "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport"]},
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">电解质</div>',
    },
    "contained": [PATIENT, POTASSIUM, SODIUM],
    "identifier": [
        {"type": {"coding": [{"system": V2_0203, "code": "FILL"}]}, "value": "F202403150088"}
    ],
    "basedOn": [
        {
            "type": "ServiceRequest",
            "identifier": {"type": PLACER, "system": CONSULT_SYSTEM, "value": CONSULT},
        }
    ],
    "status": "final",
    "code": {
        "coding": [{"system": "urn:huizhen:lab", "code": "ELEC", "display": "电解质四项"}],
        "text": "电解质四项",
    },
    "subject": {"reference": "#p1"},
    "effectiveDateTime": "2024-03-15T09:15:00+08:00",
    "issued": "2024-03-15T10:28:00+08:00",
    "result": [{"reference": "#k"}, {"reference": "#na"}],
    "conclusion": "血钾危急值，已电话通知",
}


def transaction_bundle() -> dict[str, Any]:
    """A transaction: Patient, ServiceRequest, DiagnosticReport and Observations as entries with
    urn:uuid full URLs; the report points at the ServiceRequest and at its results by fullUrl or
    by type/id."""
    troponin = copy.deepcopy(TROPONIN)
    troponin["subject"] = {"reference": "urn:uuid:9d0f3b2e-0000-4000-8000-000000000001"}
    troponin["basedOn"] = [{"reference": "urn:uuid:9d0f3b2e-0000-4000-8000-000000000002"}]
    troponin["note"] = [{"text": "复查确认"}]
    hgb = copy.deepcopy(HEMOGLOBIN)
    hgb["subject"] = {"reference": "Patient/p1"}
    patient = copy.deepcopy(PATIENT)
    service = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "identifier": [{"type": PLACER, "system": CONSULT_SYSTEM, "value": CONSULT}],
        "status": "completed",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr2",
        "basedOn": [{"reference": "ServiceRequest/sr1"}],
        "status": "final",
        "code": {
            "coding": [{"system": "urn:huizhen:lab", "code": "CARD", "display": "心肌标志物"}]
        },
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-03-15T09:15:00+08:00"},
        "result": [
            {"reference": "urn:uuid:9d0f3b2e-0000-4000-8000-000000000003"},
            {"reference": "Observation/hgb"},
        ],
    }

    def entry(url: str, resource: dict[str, Any]) -> dict[str, Any]:
        kind = resource["resourceType"]
        return {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": kind}}

    return {
        "resourceType": "Bundle",
        "id": "b1",
        "identifier": {"system": "urn:huizhen:lis", "value": "LAB20240315000123"},
        "type": "transaction",
        "entry": [
            entry("urn:uuid:9d0f3b2e-0000-4000-8000-000000000001", patient),
            entry("urn:uuid:9d0f3b2e-0000-4000-8000-000000000002", service),
            entry("urn:uuid:9d0f3b2e-0000-4000-8000-000000000004", report),
            entry("urn:uuid:9d0f3b2e-0000-4000-8000-000000000003", troponin),
            entry("http://lis.example.cn/fhir/Observation/hgb", hgb),
        ],
    }


def as_json(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False).encode("utf-8")
