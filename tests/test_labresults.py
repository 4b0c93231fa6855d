"""Lab results from the LIS: HL7 v2 over HTTP and MLLP, FHIR; filed onto lab consults; critical
values start the critical-value flow before anyone signs."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from imaging.mllp import send_mllp
from server.app import create_app
from server.settings import Settings
from tests.helpers import Api
from tests.imaging import labmessages as lab
from tests.test_consults import _open

HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


async def _lab_consult(api: Api) -> tuple[str, str]:
    consult = await _open(api, centre="lab")
    status, patient = await api.get(f"/api/v1/patients/{consult['patient']['id']}", "chengguan")
    assert status == 200
    return str(consult["id"]), str(patient["national_id"])


def _oru(consult_id: str, national_id: str, text: str = lab.ORU_UTF8) -> bytes:
    return text.replace(lab.CONSULT, consult_id).replace(lab.NATIONAL_ID, national_id).encode()


async def _reports(api: Api, consult_id: str, user: str = "lab") -> list[dict[str, Any]]:
    """The consult's reports in full, oldest version first."""
    status, detail = await api.get(f"/api/v1/consults/{consult_id}", user)
    assert status == 200
    full = []
    for brief in detail["reports"]:
        status, report = await api.get(f"/api/v1/reports/{brief['id']}", user)
        assert status == 200
        full.append(report)
    return sorted(full, key=lambda r: int(r["version"]))


async def test_hl7_results_are_filed_and_a_critical_value_is_raised_at_once(api: Api) -> None:
    consult_id, national_id = await _lab_consult(api)
    status, answer = await api.post(
        "/api/v1/lab/hl7v2", "lis", data=_oru(consult_id, national_id), headers=HL7
    )
    assert status == 200, answer
    assert answer.startswith(b"MSH|") and b"MSA|AA|LAB20240315000123" in answer

    (report,) = await _reports(api, consult_id)
    assert report["state"] == "draft" and report["critical"] is True
    results = {r["code"]: r for r in report["content"]["results"]}
    assert len(results) == 8
    assert results["2823-3"] == {
        "code": "2823-3",
        "name": "血钾 K",
        "value": "6.8",
        "unit": "mmol/L",
        "reference_range": "3.5-5.3",
        "flag": "critical_high",
    }
    # The station hears of the critical value before anyone signs.
    status, feed = await api.get("/api/v1/events", "chengguan")
    critical = [e for e in feed["items"] if e["type"] == "report.critical"]
    assert critical and critical[0]["payload"]["source"] == "lab"
    assert "6.8" not in str(feed)  # events carry ids, never values
    status, feed = await api.get("/api/v1/events", "lab")
    assert "lab.results" in [e["type"] for e in feed["items"]]

    # A correction replaces the value of the same code in the same draft.
    corrected = lab.ORU_UTF8.replace("||6.8|mmol/L", "||6.9|mmol/L").replace(
        "LAB20240315000123", "LAB20240315000124"
    )
    status, _ = await api.post(
        "/api/v1/lab/hl7v2", "lis", data=_oru(consult_id, national_id, corrected), headers=HL7
    )
    assert status == 200
    (report,) = await _reports(api, consult_id)
    values = [r for r in report["content"]["results"] if r["code"] == "2823-3"]
    assert [v["value"] for v in values] == ["6.9"]

    # The station's inbox finds it though no report is signed yet.
    status, waiting = await api.get("/api/v1/consults?critical_pending=true", "chengguan")
    assert [c["id"] for c in waiting["items"]] == [consult_id]
    assert waiting["items"][0]["state"] == "submitted"

    # The station acknowledges the critical value; the lab specialist signs the report.
    status, body = await api.post(
        f"/api/v1/consults/{consult_id}/critical/acknowledge", "chengguan", json={"note": "已处理"}
    )
    assert status == 200, body
    status, body = await api.post(
        f"/api/v1/consults/{consult_id}/critical/acknowledge", "chengguan", json={}
    )
    assert status == 409
    status, waiting = await api.get("/api/v1/consults?critical_pending=true", "chengguan")
    assert waiting["items"] == []
    status, feed = await api.get("/api/v1/events", "lab")
    assert "critical.acknowledged" in [e["type"] for e in feed["items"]]
    assert (await api.post(f"/api/v1/consults/{consult_id}/claim", "lab", json={}))[0] == 200
    status, signed = await api.post(f"/api/v1/reports/{report['id']}/sign", "lab")
    assert status == 200, signed
    assert signed["state"] == "signed"

    # Results after signing start an amendment that carries the signed values forward.
    status, _ = await api.post(
        "/api/v1/lab/hl7v2", "lis", data=_oru(consult_id, national_id, corrected), headers=HL7
    )
    assert status == 200
    reports = await _reports(api, consult_id)
    assert [(r["version"], r["state"]) for r in reports][-1] == (2, "draft")


async def test_refused_messages_file_nothing(api: Api) -> None:
    consult_id, national_id = await _lab_consult(api)
    imaging = await _open(api, centre="imaging")
    cases = [
        (_oru("not-a-uuid", national_id), "lab-unknown-order"),
        (_oru(str(imaging["id"]), national_id), "lab-unknown-order"),
        (_oru(consult_id, "110105194912310029"), "lab-patient-mismatch"),
        (b"this is not HL7", "lab-hl7-not-hl7"),
        (
            _oru(consult_id, national_id).replace(b"ORU^R01", b"ADT^A01"),
            "lab-hl7-wrong-message-type",
        ),
    ]
    for body, code in cases:
        status, problem = await api.post("/api/v1/lab/hl7v2", "lis", data=body, headers=HL7)
        assert status == 422, code
        assert problem["code"] == code
        assert "MSA|A" in problem["ack"]
        assert national_id not in str(problem)
    assert await _reports(api, consult_id) == []
    status, _ = await api.post(
        "/api/v1/lab/hl7v2", "chengguan", data=_oru(consult_id, national_id), headers=HL7
    )
    assert status == 403
    status, _ = await api.post(
        "/api/v1/lab/hl7v2", "lab", data=_oru(consult_id, national_id), headers=HL7
    )
    assert status == 403  # people sign reports; only the interface account files results


async def test_fhir_bundle_is_filed(api: Api) -> None:
    consult_id, national_id = await _lab_consult(api)
    bundle = lab.as_json(lab.transaction_bundle())
    bundle = bundle.replace(lab.CONSULT.encode(), consult_id.encode())
    bundle = bundle.replace(lab.NATIONAL_ID.encode(), national_id.encode())
    status, filed = await api.post(
        "/api/v1/lab/fhir", "lis", data=bundle, headers={"Content-Type": "application/fhir+json"}
    )
    assert status == 200, filed
    assert filed["control_id"] == "LAB20240315000123"
    assert [(i["consult_id"], i["critical"]) for i in filed["items"]] == [(consult_id, True)]
    (report,) = await _reports(api, consult_id)
    assert {r["code"] for r in report["content"]["results"]} == {"10839-9", "718-7"}

    status, problem = await api.post(
        "/api/v1/lab/fhir",
        "lis",
        data=b'{"resourceType": "Observation", "status": 7}',
        headers={"Content-Type": "application/fhir+json"},
    )
    assert status == 422
    assert problem["code"].startswith("lab-fhir-") and problem["pointer"].startswith("/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_results_over_mllp(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    port = _free_port()
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(settings.replace(mllp_port=port, lab_senders=(("LIS", "lis"),)))
    )
    api = Api(client)
    consult_id, national_id = await _lab_consult(api)
    reply = await send_mllp("127.0.0.1", port, _oru(consult_id, national_id))
    assert b"MSA|AA" in reply
    (report,) = await _reports(api, consult_id)
    assert report["critical"] is True

    stranger = _oru(consult_id, national_id).replace(b"MSH|^~\\&|LIS|", b"MSH|^~\\&|OTHER|")
    assert b"MSA|AR" in await send_mllp("127.0.0.1", port, stranger)
    refused = _oru(consult_id, "110105194912310029")
    assert b"MSA|AE" in await send_mllp("127.0.0.1", port, refused)
    assert b"MSA|A" in await send_mllp("127.0.0.1", port, b"garbage")
    # The HTTP side keeps serving.
    status, _ = await api.get(f"/api/v1/consults/{consult_id}", "chengguan")
    assert status == 200
