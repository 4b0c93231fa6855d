"""FHIR R4 lab results: Observation, DiagnosticReport, Bundle -> :class:`~imaging.lab.LabMessage`.

:func:`parse_fhir` takes JSON (bytes, text, or already-parsed) and returns the same records as
:func:`imaging.hl7v2.parse_oru`, or raises :class:`FhirError` with a JSON pointer to the bad
element and a reason, never the value.

Validation is strict and closed (pydantic models in :mod:`imaging.fhirmodels`): typed where read,
other R4 elements by name only, unknown elements refused, extensions where FHIR allows them, an
unknown ``modifierExtension`` refused. JSON with duplicate keys, NaN or over ``max_bytes`` is
refused too.

Mapping:

* A DiagnosticReport is a :class:`~imaging.lab.LabOrder`; its ``result`` references (``#id``
  to contained, ``Type/id``, a Bundle ``fullUrl`` such as ``urn:uuid:...``) are its results; a
  panel Observation (``hasMember``) stands for its members, and ``component`` values are
  results of their own. Observations of a Bundle that no report claims are grouped into one
  order per placer.
* Placer order (our consult): ``basedOn`` -> ServiceRequest identifier typed ``PLAC`` (v2-0203),
  or the first, given inline (``Reference.identifier``) or by reference. Filler: the report's
  identifier typed ``FILL``, else its first.
* Values: valueQuantity (comparator + value; unit, else UCUM code), valueString,
  valueCodeableConcept (text, display, code), valueInteger, valueBoolean, valueRange,
  valueRatio, valueDateTime, valueTime, valuePeriod. Reference range: the first, its ``text``
  or "low-high". Interpretation: v3 ObservationInterpretation or v2-0078 codes (N, L, H, LL, HH,
  A, AA...) as in HL7 v2; LL/HH/AA are critical.
* Statuses become HL7 letters: final F; amended, corrected, appended C; preliminary, partial P;
  registered I; cancelled X; entered-in-error W; unknown "".
* The subject (Patient by reference, else ``Reference.identifier``) gives the patient ids; one
  patient per message (different subjects are refused).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from imaging.fhirmodels import (
    VALUES,
    Bundle,
    DiagnosticReport,
    HumanName,
    Identifier,
    Observation,
    OtherResource,
    Patient,
    Period,
    Quantity,
    Reference,
    ReferenceRange,
    ServiceRequest,
    Valued,
    fhir_datetime,
)
from imaging.lab import (
    CHINA,
    Coded,
    LabMessage,
    LabOrder,
    LabResult,
    PatientId,
    parse_decimal,
    report_flag,
    split_range,
)

__all__ = ["DEFAULT_MAX_BYTES", "FhirError", "parse_fhir"]

DEFAULT_MAX_BYTES = 4 << 20
_INTERPRETATION_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "http://terminology.hl7.org/CodeSystem/v2-0078",
        "http://hl7.org/fhir/v2/0078",
    }
)
_STATUS = {
    "final": "F",
    "amended": "C",
    "corrected": "C",
    "appended": "C",
    "preliminary": "P",
    "partial": "P",
    "registered": "I",
    "cancelled": "X",
    "entered-in-error": "W",
    "unknown": "",
}
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


class FhirError(Exception):
    """A resource refused: ``pointer`` (RFC 6901) to the element, ``reason`` a short code."""

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(f"{reason} at {pointer or '/'}")
        self.pointer = pointer
        self.reason = reason


# -- reading -------------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def _no_constants(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _load(data: bytes | str | Mapping[str, Any], max_bytes: int) -> Any:
    if isinstance(data, Mapping):
        return data
    if len(data) > max_bytes:
        raise FhirError("", "too-large")
    try:
        return json.loads(
            data,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except _DuplicateKey:
        raise FhirError("", "duplicate-key") from None
    except RecursionError:
        raise FhirError("", "too-deep") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise FhirError("", "not-json") from None


def _pointer(loc: tuple[int | str, ...], doc: Any, missing: bool) -> str:
    """The JSON pointer of a pydantic error location (union tags skipped)."""
    parts: list[str] = []
    node = doc
    for i, key in enumerate(loc):
        in_object = isinstance(node, Mapping) and isinstance(key, str) and key in node
        in_array = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if in_object or in_array:
            node = node[key]
        elif missing and i == len(loc) - 1 and isinstance(key, str):
            node = None  # a missing element: point at where it belongs
        else:
            continue  # a union tag such as "Observation"
        parts.append(str(key).replace("~", "~0").replace("/", "~1"))
    return "".join(f"/{p}" for p in parts)


_TOP: dict[str, type[Observation | DiagnosticReport | Bundle]] = {
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "Bundle": Bundle,
}


def parse_fhir(
    data: bytes | str | Mapping[str, Any],
    *,
    tz: dt.tzinfo = CHINA,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LabMessage:
    """An Observation, a DiagnosticReport or a Bundle of them as a :class:`LabMessage`."""
    doc = _load(data, max_bytes)
    if not isinstance(doc, Mapping):
        raise FhirError("", "not-a-resource")
    kind = doc.get("resourceType")
    model = _TOP.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise FhirError("/resourceType", "missing" if kind is None else "unsupported-resource")
    try:
        resource = model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        # not chained: pydantic's message quotes the input, and the input is patient data
        reason = first["type"].replace("_", "-")
        raise FhirError(_pointer(first["loc"], doc, reason == "missing"), reason) from None
    except RecursionError:
        raise FhirError("", "too-deep") from None
    return _Reader(tz).read(resource)


@dataclass(eq=False, slots=True)
class _Located:
    resource: Observation | DiagnosticReport | Patient | ServiceRequest | OtherResource | Bundle
    pointer: str
    container: _Located | None = None


@dataclass(slots=True)
class _Subject:
    ids: tuple[PatientId, ...] = ()
    patient: Patient | None = None


@dataclass(slots=True)
class _Reader:
    tz: dt.tzinfo
    index: dict[str, _Located] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)
    subject: _Subject | None = None

    def read(self, top: Observation | DiagnosticReport | Bundle) -> LabMessage:
        here = _Located(top, "")
        orders: list[LabOrder] = []
        loose: list[_Located] = []
        if isinstance(top, Bundle):
            located = self._index(top)
            for loc in located:
                if isinstance(loc.resource, DiagnosticReport):
                    orders.append(self._report(loc))
            loose = [
                loc
                for loc in located
                if isinstance(loc.resource, Observation) and id(loc.resource) not in self.claimed
            ]
            control = (top.identifier.value if top.identifier else None) or top.id or ""
            message_type = f"Bundle/{top.type}"
        elif isinstance(top, DiagnosticReport):
            orders.append(self._report(here))
            control, message_type = top.id or "", "DiagnosticReport"
        else:
            loose = [here]
            control, message_type = top.id or "", "Observation"
        orders += self._loose_orders(loose)
        if not orders:
            raise FhirError("/entry" if isinstance(top, Bundle) else "", "no-results")
        subject = self.subject or _Subject()
        patient = subject.patient
        name = patient.name[0] if patient and patient.name else None
        birth = patient.birthDate if patient else None
        return LabMessage(
            control_id=control,
            sending_app=str((top.meta or {}).get("source", "")),
            sending_facility="",
            message_type=message_type,
            patient_ids=subject.ids,
            orders=tuple(orders),
            patient_name=_person_name(name) if name else "",
            birth_date=fhir_datetime(birth, self.tz).date() if birth else None,
            sex=_GENDER.get(patient.gender or "", "") if patient else "",
            version="R4",
        )

    # references

    def _index(self, bundle: Bundle) -> list[_Located]:
        located: list[_Located] = []
        for i, entry in enumerate(bundle.entry or ()):
            if entry.resource is None:
                continue
            loc = _Located(entry.resource, f"/entry/{i}/resource")
            located.append(loc)
            keys = [entry.fullUrl] if entry.fullUrl else []
            if entry.resource.id:
                keys.append(f"{entry.resource.resourceType}/{entry.resource.id}")
            for key in keys:
                self.index.setdefault(key, loc)
        return located

    def _resolve(self, ref: Reference, frm: _Located) -> _Located | None:
        target = ref.reference
        if target is None:
            return None
        if target.startswith("#"):
            container = frm.container or frm
            if target == "#":
                return container
            contained = getattr(container.resource, "contained", None) or []
            for j, res in enumerate(contained):
                if res.id == target[1:]:
                    return _Located(res, f"{container.pointer}/contained/{j}", container)
            return None
        if found := self.index.get(target):
            return found
        if m := re.search(r"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})$", target):
            return self.index.get(m.group(1))
        return None

    def _observation(self, ref: Reference, frm: _Located, pointer: str) -> _Located:
        loc = self._resolve(ref, frm)
        if loc is None:
            raise FhirError(f"{pointer}/reference", "unresolved-reference")
        if not isinstance(loc.resource, Observation):
            raise FhirError(f"{pointer}/reference", "not-an-observation")
        return loc

    # orders

    def _report(self, loc: _Located) -> LabOrder:
        report = loc.resource
        assert isinstance(report, DiagnosticReport)
        self._subject(report.subject, loc)
        observed = _effective(report.effectiveDateTime, report.effectivePeriod, None, self.tz)
        results: list[LabResult] = []
        placer = self._placer(report.basedOn, loc)
        for i, ref in enumerate(report.result or ()):
            obs = self._observation(ref, loc, f"{loc.pointer}/result/{i}")
            results += self._results(obs, observed, set())
            if not placer:
                assert isinstance(obs.resource, Observation)
                placer = self._placer(obs.resource.basedOn, obs)
        fill = [i for i in report.identifier or () if i.value and i.type_code() == "FILL"]
        first = [i for i in report.identifier or () if i.value]
        coding = report.code.first()
        return LabOrder(
            placer=placer,
            filler=(fill or first or [Identifier()])[0].value or "",
            service=Coded(
                coding.code or "", report.code.text or coding.display or "", coding.system or ""
            ),
            observed_at=observed,
            status=_STATUS[report.status],
            results=tuple(results),
            reported_at=fhir_datetime(report.issued, self.tz) if report.issued else None,
            notes=(report.conclusion,) if report.conclusion else (),
        )

    def _loose_orders(self, observations: list[_Located]) -> list[LabOrder]:
        groups: dict[str, list[_Located]] = {}
        for loc in observations:
            assert isinstance(loc.resource, Observation)
            groups.setdefault(self._placer(loc.resource.basedOn, loc), []).append(loc)
        orders = []
        for placer, members in groups.items():
            results: list[LabResult] = []
            for loc in members:
                if id(loc.resource) not in self.claimed:
                    results += self._results(loc, None, set())
            statuses = {r.status for r in results}
            orders.append(
                LabOrder(
                    placer=placer,
                    filler="",
                    service=Coded(),
                    observed_at=results[0].observed_at if results else None,
                    status=statuses.pop() if len(statuses) == 1 else "",
                    results=tuple(results),
                )
            )
        return orders

    def _placer(self, based_on: list[Reference] | None, frm: _Located) -> str:
        for ref in based_on or ():
            ident = ref.identifier
            if ident and ident.value and ident.type_code() in ("PLAC", ""):
                return ident.value
            loc = self._resolve(ref, frm)
            if loc and isinstance(loc.resource, ServiceRequest):
                ids = [i for i in loc.resource.identifier or () if i.value]
                plac = [i for i in ids if i.type_code() == "PLAC"]
                if plac or ids:
                    return (plac or ids)[0].value or ""
        return ""

    def _subject(self, ref: Reference | None, frm: _Located) -> None:
        if ref is None:
            return
        found = _Subject()
        loc = self._resolve(ref, frm)
        if loc and isinstance(loc.resource, Patient):
            found = _Subject(_ids(loc.resource.identifier), loc.resource)
        elif ref.identifier and ref.identifier.value:
            found = _Subject(_ids([ref.identifier]))
        if not found.ids:
            return
        if self.subject is None:
            self.subject = found
            return
        mine = {(p.authority, p.value) for p in self.subject.ids}
        if mine.isdisjoint((p.authority, p.value) for p in found.ids):
            raise FhirError(f"{frm.pointer}/subject", "different-subjects")

    # results

    def _results(
        self, loc: _Located, default_time: dt.datetime | None, seen: set[int]
    ) -> list[LabResult]:
        obs = loc.resource
        assert isinstance(obs, Observation)
        if id(obs) in seen:
            raise FhirError(loc.pointer, "reference-cycle")
        seen.add(id(obs))
        self.claimed.add(id(obs))
        self._subject(obs.subject, loc)
        observed = _effective(
            obs.effectiveDateTime, obs.effectivePeriod, obs.effectiveInstant, self.tz
        )
        when = observed or default_time
        out: list[LabResult] = []
        for i, ref in enumerate(obs.hasMember or ()):
            member = self._observation(ref, loc, f"{loc.pointer}/hasMember/{i}")
            out += self._results(member, when, seen)
        has_value = any(getattr(obs, name) is not None for name in VALUES)
        if has_value or obs.dataAbsentReason or not (obs.hasMember or obs.component):
            notes = tuple(n.text for n in obs.note or ())
            out.append(self._result(obs, obs, when, notes))
        for component in obs.component or ():
            out.append(self._result(component, obs, when, ()))
        return out

    def _result(
        self,
        v: Valued,
        obs: Observation,
        when: dt.datetime | None,
        notes: tuple[str, ...],
    ) -> LabResult:
        value, numeric, unit, value_type = _value(v)
        if v.dataAbsentReason is not None:
            reason = v.dataAbsentReason
            notes += (f"no value: {reason.text or reason.first().display or reason.first().code}",)
        reference, low, high = _reference_range(v.referenceRange)
        flags = tuple(
            c.code
            for concept in v.interpretation or ()
            for c in concept.codes()
            if c.code and (c.system is None or c.system in _INTERPRETATION_SYSTEMS)
        )
        flag, critical = report_flag(flags)
        coding = v.code.first()
        return LabResult(
            code=coding.code or "",
            name=v.code.text or coding.display or "",
            system=coding.system or "",
            value=value,
            numeric=numeric,
            unit=unit,
            reference_range=reference,
            low=low,
            high=high,
            flag=flag,
            critical=critical,
            status=_STATUS[obs.status],
            observed_at=when,
            value_type=value_type,
            flags=flags,
            notes=notes,
        )


def _effective(
    when: str | None, period: Period | None, instant: str | None, tz: dt.tzinfo
) -> dt.datetime | None:
    text = when or (period.start if period else None) or instant
    return fhir_datetime(text, tz) if text else None


def _ids(identifiers: list[Identifier] | None) -> tuple[PatientId, ...]:
    return tuple(
        PatientId(i.value, i.type_code() or (i.type.text or "" if i.type else ""), i.system or "")
        for i in identifiers or ()
        if i.value
    )


def _person_name(name: HumanName) -> str:
    if name.text:
        return name.text
    family, given = name.family or "", "".join(name.given or ())
    cjk = any("\u3400" <= ch <= "\u9fff" for ch in family + given)
    return family + given if cjk else " ".join(p for p in (" ".join(name.given or ()), family) if p)


def _number(d: Decimal | None) -> tuple[str, float | None]:
    if d is None:
        return "", None
    number = float(d)
    return format(d, "f"), number if abs(number) != float("inf") else None


def _quantity(q: Quantity) -> tuple[str, float | None, str]:
    text, number = _number(q.value)
    unit = q.unit or q.code or ""
    if q.comparator:
        return q.comparator + text, None, unit
    return text, number, unit


def _value(v: Valued) -> tuple[str, float | None, str, str]:
    """Text, number, unit and value[x] type."""
    if v.valueQuantity is not None:
        text, number, unit = _quantity(v.valueQuantity)
        return text, number, unit, "Quantity"
    if v.valueString is not None:
        return v.valueString, parse_decimal(v.valueString), "", "string"
    if v.valueCodeableConcept is not None:
        cc = v.valueCodeableConcept
        return cc.text or cc.first().display or cc.first().code or "", None, "", "CodeableConcept"
    if v.valueInteger is not None:
        return str(v.valueInteger), float(v.valueInteger), "", "integer"
    if v.valueBoolean is not None:
        return "true" if v.valueBoolean else "false", None, "", "boolean"
    if v.valueRange is not None:
        low, high = v.valueRange.low or Quantity(), v.valueRange.high or Quantity()
        unit = low.unit or high.unit or low.code or high.code or ""
        return f"{_quantity(low)[0]}-{_quantity(high)[0]}", None, unit, "Range"
    if v.valueRatio is not None:
        num, den = v.valueRatio.numerator or Quantity(), v.valueRatio.denominator or Quantity()
        return f"{_quantity(num)[0]}:{_quantity(den)[0]}", None, "", "Ratio"
    if v.valueDateTime is not None:
        return v.valueDateTime, None, "", "dateTime"
    if v.valueTime is not None:
        return v.valueTime, None, "", "time"
    if v.valuePeriod is not None:
        return f"{v.valuePeriod.start or ''}/{v.valuePeriod.end or ''}", None, "", "Period"
    if v.valueSampledData is not None:
        return "", None, "", "SampledData"
    return "", None, "", ""


def _reference_range(ranges: list[ReferenceRange] | None) -> tuple[str, float | None, float | None]:
    if not ranges:
        return "", None, None
    rr = ranges[0]
    low = _number(rr.low.value)[1] if rr.low else None
    high = _number(rr.high.value)[1] if rr.high else None
    if rr.text:
        if low is None and high is None:
            low, high = split_range(rr.text)
        return rr.text, low, high
    lo = _number(rr.low.value)[0] if rr.low else ""
    hi = _number(rr.high.value)[0] if rr.high else ""
    text = f"{lo}-{hi}" if lo and hi else f">={lo}" if lo else f"<={hi}" if hi else ""
    return text, low, high
