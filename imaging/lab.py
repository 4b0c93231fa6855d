"""Lab results as they arrive from the lab centre, whatever the wire: HL7 v2 or FHIR R4.

:mod:`imaging.hl7v2` (ORU^R01) and :mod:`imaging.fhirlab` (Observation, DiagnosticReport, Bundle)
both produce a :class:`LabMessage` of :class:`LabOrder` records, each with its
:class:`LabResult` values. A result maps 1:1 onto a value of the ``lab`` report
(:meth:`LabResult.as_lab_value`): code, name, value, unit, reference range and one flag of
``normal | low | high | critical_low | critical_high | abnormal``, plus ``critical`` for the
critical-value flow (an ``AA`` "critically abnormal" result has no direction, so its flag is
``abnormal`` and ``critical`` is true).

Statuses use the HL7 letters for both wires (table 0085 for results, 0123 for orders):
``F`` final, ``C`` corrected, ``P`` preliminary, ``I`` pending, ``X`` cannot be done,
``W`` entered in error; FHIR statuses are translated to them.

Patient data lives in these records (identifiers, name, birth date) but never in their ``repr``,
so logging a record does not log a patient.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CHINA",
    "CRITICAL_FLAGS",
    "NATIONAL_ID_TYPES",
    "Coded",
    "Flag",
    "LabMessage",
    "LabOrder",
    "LabResult",
    "PatientId",
    "parse_decimal",
    "report_flag",
    "split_range",
]


def _china() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database: China keeps UTC+8, no DST
        return dt.timezone(dt.timedelta(hours=8), "CST")


#: Times sent without an offset (HL7 local times, FHIR dates) are taken in this zone by default.
CHINA = _china()

Flag = Literal["normal", "low", "high", "critical_low", "critical_high", "abnormal"]

#: Interpretation codes meaning "critical" (HL7 v2 table 0078 and v3 ObservationInterpretation
#: share them), plus the arrows Chinese analysers print.
CRITICAL_FLAGS = frozenset({"LL", "HH", "AA", "↑↑", "↓↓"})

# Interpretation code -> report flag. Codes not listed (U, D, B, W, IND, ...) are "abnormal";
# an empty list of codes is "normal", as in the report model.
_FLAGS: dict[str, Flag] = {
    "N": "normal",
    "S": "normal",  # susceptible
    "NEG": "normal",
    "NR": "normal",  # non-reactive
    "L": "low",
    "<": "low",  # below the analyser's scale
    "LU": "low",  # significantly low
    "↓": "low",
    "H": "high",
    ">": "high",
    "HU": "high",
    "↑": "high",
    "LL": "critical_low",
    "↓↓": "critical_low",
    "HH": "critical_high",
    "↑↑": "critical_high",
    "A": "abnormal",
    "AA": "abnormal",
}
_SEVERITY: dict[Flag, int] = {
    "normal": 0,
    "abnormal": 1,
    "low": 2,
    "high": 2,
    "critical_low": 3,
    "critical_high": 3,
}

#: Identifier type codes (HL7 table 0203) of a national identity number (身份证号): NI national
#: unique individual identifier, NN + ISO country (NNCHN), CZ citizenship card.
NATIONAL_ID_TYPES = ("NNCHN", "NI", "NN", "CZ")

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_NUMBER = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))"
_RANGE = re.compile(_NUMBER + r"\s*(?:-|–|—|~|～|〜|to)\s*" + _NUMBER)
_BOUND = re.compile(r"(<=|>=|≤|≥|<|>)\s*" + _NUMBER)


@dataclass(frozen=True, slots=True)
class Coded:
    """A coded concept (HL7 CE/CWE, FHIR CodeableConcept): code, display name, coding system."""

    code: str = ""
    name: str = ""
    system: str = ""


@dataclass(frozen=True, slots=True)
class PatientId:
    """One patient identifier: the value, its type code (table 0203: MR, PI, NNCHN...) and the
    assigning authority (HL7 CX-4, FHIR Identifier.system)."""

    value: str = field(repr=False)
    type: str = ""
    authority: str = ""


@dataclass(frozen=True, slots=True)
class LabResult:
    code: str  # observation identifier (LOINC or the lab's own code)
    name: str  # its text, e.g. "血钾"
    system: str  # coding system: "LN", "http://loinc.org", "99LAB" ...
    value: str  # as sent, unescaped: "6.8", "<0.01", "阴性", "1:128"
    numeric: float | None  # the value when it is a plain number, else None
    unit: str
    reference_range: str  # as sent, e.g. "3.5-5.3"
    low: float | None  # parsed from the reference range where it can be
    high: float | None
    flag: Flag
    critical: bool
    status: str  # HL7 table 0085: F, C, P, ...
    observed_at: dt.datetime | None  # timezone-aware
    value_type: str = ""  # HL7 OBX-2 (NM, ST, SN, CE...) or the FHIR value[x] type
    flags: tuple[str, ...] = ()  # interpretation codes as sent (HL7 OBX-8, FHIR interpretation)
    notes: tuple[str, ...] = ()

    def as_lab_value(self) -> dict[str, str]:
        """The fields of the ``lab`` report's value, by name."""
        return {
            "code": self.code,
            "name": self.name or self.code,
            "value": self.value,
            "unit": self.unit,
            "reference_range": self.reference_range,
            "flag": self.flag,
        }


@dataclass(frozen=True, slots=True)
class LabOrder:
    placer: str  # placer order number: our consult number
    filler: str  # the lab's own order/specimen number
    service: Coded  # universal service identifier: the test or panel ordered
    observed_at: dt.datetime | None  # specimen collection / observation time
    status: str  # HL7 table 0123: F, C, P, I, X...
    results: tuple[LabResult, ...]
    reported_at: dt.datetime | None = None
    notes: tuple[str, ...] = ()

    @property
    def critical(self) -> bool:
        return any(r.critical for r in self.results)


@dataclass(frozen=True, slots=True)
class LabMessage:
    control_id: str  # HL7 MSH-10; FHIR Bundle identifier or resource id
    sending_app: str
    sending_facility: str
    message_type: str  # "ORU^R01", "Bundle/transaction", "DiagnosticReport", "Observation"
    patient_ids: tuple[PatientId, ...]
    orders: tuple[LabOrder, ...]
    patient_name: str = field(default="", repr=False)
    birth_date: dt.date | None = field(default=None, repr=False)
    sex: str = field(default="", repr=False)  # HL7 table 0001 letters: M, F, O, U
    version: str = ""  # HL7 MSH-12 (2.5.1) or "R4"
    charset: str = ""  # as declared in MSH-18
    processing_id: str = ""  # HL7 MSH-11: P production, T training, D debugging
    sent_at: dt.datetime | None = None

    @property
    def national_id(self) -> str | None:
        """The patient's national identity number, if an identifier is typed as one."""
        for kind in NATIONAL_ID_TYPES:
            for pid in self.patient_ids:
                if pid.type.upper() == kind:
                    return pid.value
        return None

    @property
    def critical(self) -> bool:
        return any(o.critical for o in self.orders)

    @property
    def results(self) -> tuple[LabResult, ...]:
        return tuple(r for o in self.orders for r in o.results)


def parse_decimal(text: str) -> float | None:
    """A plain decimal number ("6.8", "-2", ".5", "+1.") as a finite float, else None.

    No exponent, no thousands separators, no "nan"/"inf": HL7 NM and what labs write.
    """
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def split_range(text: str) -> tuple[float | None, float | None]:
    """Low and high bounds of a reference range as labs write it.

    ``"3.5-5.3"``, ``"3.5～5.3"``, ``"-3--1"``, ``"<5"``, ``"≤0.04"``, ``">60"``; anything else
    (``"阴性"``, ``"见报告"``) gives ``(None, None)``. Whether a bound is inclusive is not kept.
    """
    text = text.strip()
    if m := _RANGE.fullmatch(text):
        return parse_decimal(m.group(1)), parse_decimal(m.group(2))
    if m := _BOUND.fullmatch(text):
        bound = parse_decimal(m.group(2))
        return (None, bound) if m.group(1) in ("<", "<=", "≤") else (bound, None)
    return None, None


def report_flag(codes: tuple[str, ...]) -> tuple[Flag, bool]:
    """The report flag and the critical bit for a list of interpretation codes.

    The most severe code wins; unknown codes count as abnormal; no code at all is normal.
    """
    flag: Flag = "normal"
    critical = False
    for raw in codes:
        code = raw.strip().upper()
        if not code:
            continue
        mapped = _FLAGS.get(code, "abnormal")
        critical = critical or code in CRITICAL_FLAGS
        if _SEVERITY[mapped] > _SEVERITY[flag]:
            flag = mapped
    if critical and flag in ("low", "high"):  # e.g. "L" with "AA": critical, and low
        flag = "critical_low" if flag == "low" else "critical_high"
    return flag, critical
