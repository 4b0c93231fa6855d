"""HL7 aECG (annotated ECG, HL7 v3 XML) read into the :class:`~imaging.ecg.Ecg` of DICOM waveforms.

An aECG document (namespace ``urn:hl7-org:v3``, root ``AnnotatedECG``) holds one or more
``component/series``; :func:`read_aecg` takes the series coded ``RHYTHM`` (else the first) and, in
it, the first ``sequenceSet`` that has leads:

* the time sequence (code ``TIME_ABSOLUTE`` or ``TIME_RELATIVE``, a ``GLIST_TS`` or ``GLIST_PQ``)
  gives the sampling rate as 1 / ``increment`` (unit ``s``, ``ms`` or ``us``);
* each lead sequence (code ``MDC_ECG_LEAD_*``, an ``SLIST_PQ``) gives its samples as
  ``origin + scale × digit``, converted to mV (units ``nV``, ``uV``, ``mV``, ``V``). Leads are
  labelled I, II, III, aVR, aVL, aVF, V1–V6 in that order, any other lead after them with the
  MDC suffix as its label (``V3R``). Many machines store only I, II and V1–V6: missing III, aVR,
  aVL and aVF are then derived from I and II (Einthoven and Goldberger), as the machines
  themselves do.

The machine's measurements and statements are kept as :class:`~imaging.ecg.MachineAnnotation`
records, from the annotation sets of the series and of its derived series (representative beat),
nested annotations included:

* numeric (``PQ``) annotations of the global measurements named in :data:`CONCEPTS` (heart rate,
  RR, PP, PR, QRS, QT, QTc, P/QRS/T axes), under the same concept names as the DICOM code meanings
  (``"QRS Duration"``), intervals in ms and the rate in bpm. Other codes (per-lead amplitudes,
  beat boundaries) are not kept. A numeric value that does not parse is skipped: the leads are
  the record, the machine's numbers a cross-check.
* text (``ST``, or a coded value's ``displayName``) annotations, such as
  ``MDC_ECG_INTERPRETATION_STATEMENT``, are interpretation statements (``concept`` empty).

The XML is parsed with :mod:`defusedxml`: a DTD (and so any entity declaration, the billion
laughs and external entities) is refused. Documents over ``max_bytes`` and recordings over
``max_samples`` samples in all are refused before they can fill memory. Every failure is an
:class:`AecgError` (an :class:`~imaging.ecg.EcgError`) with a stable ``code``; messages never
quote the document's content.

Blocking (a 10 s, 12-lead, 1 kHz document of about 1 MB reads in some tens of ms); from asyncio
call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from imaging.ecg import LEAD_ORDER, Ecg, EcgError, Lead, MachineAnnotation

__all__ = ["CONCEPTS", "MAX_BYTES", "MAX_SAMPLES", "AecgError", "AecgErrorCode", "read_aecg"]

AecgErrorCode = Literal[
    "too-large",  # the document or its samples exceed the caps
    "not-xml",  # not well-formed XML
    "forbidden-xml",  # a DTD, entity declaration or external reference
    "not-aecg",  # the root is not urn:hl7-org:v3 AnnotatedECG
    "no-series",  # no component/series
    "no-leads",  # no sequenceSet with MDC_ECG_LEAD_* sequences
    "bad-timing",  # no time sequence, or an increment that is missing or absurd
    "bad-scale",  # a lead's origin or scale missing, non-finite, absurd or in an unknown unit
    "bad-digits",  # a digit that is not an integer, or a lead with none
    "length-mismatch",  # leads with different numbers of samples
    "duplicate-lead",  # the same lead twice in the sequence set
]

MAX_BYTES = 16 * 1024 * 1024
MAX_SAMPLES = 1_200_000  # all leads together: 12 leads × 100 s at 1 kHz

V3 = "{urn:hl7-org:v3}"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

# MDC code → (concept name as in DICOM code meanings, kind)
CONCEPTS: dict[str, tuple[str, Literal["time", "rate", "angle"]]] = {
    "MDC_ECG_HEART_RATE": ("Heart Rate", "rate"),
    "MDC_ECG_TIME_PD_RR": ("RR Interval", "time"),
    "MDC_ECG_TIME_PD_PP": ("PP Interval", "time"),
    "MDC_ECG_TIME_PD_PR": ("PR Interval", "time"),
    "MDC_ECG_TIME_PD_QRS": ("QRS Duration", "time"),
    "MDC_ECG_TIME_PD_QT": ("QT Interval", "time"),
    "MDC_ECG_TIME_PD_QTC": ("QTc Interval", "time"),
    "MDC_ECG_ANGLE_P_FRONT": ("P Axis", "angle"),
    "MDC_ECG_ANGLE_QRS_FRONT": ("QRS Axis", "angle"),
    "MDC_ECG_ANGLE_T_FRONT": ("T Axis", "angle"),
}
_TO_MV = {"nV": 1e-6, "uV": 1e-3, "mV": 1.0, "V": 1e3}
_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3}
_MAX_SCALE_MV = 1.0  # a digit worth more than 1 mV cannot draw an ECG
_MAX_ORIGIN_MV = 1e4
_MIN_HZ, _MAX_HZ = 50.0, 100_000.0
_TOKEN = re.compile(r"\S+")
_LABELS = {label.upper(): label for label in LEAD_ORDER}


class AecgError(EcgError):
    """The document is refused; ``code`` says why, ``message`` says it for a person."""

    def __init__(self, code: AecgErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: AecgErrorCode = code
        self.message = message


def read_aecg(
    source: bytes | Path, *, max_bytes: int = MAX_BYTES, max_samples: int = MAX_SAMPLES
) -> Ecg:
    """Read an HL7 aECG document, given as its bytes or its path. Blocking."""
    root = _parse(_load(source, max_bytes))
    if root.tag != f"{V3}AnnotatedECG":
        raise AecgError("not-aecg", "the root element is not an HL7 v3 AnnotatedECG")
    series_list = root.findall(f"{V3}component/{V3}series")
    if not series_list:
        raise AecgError("no-series", "the document has no component/series")
    series = next((s for s in series_list if _code(s) == "RHYTHM"), series_list[0])
    sequence_set = next(
        (
            s
            for s in series.findall(f"{V3}component/{V3}sequenceSet")
            if any(_code(q).startswith("MDC_ECG_LEAD_") for q in _sequences(s))
        ),
        None,
    )
    if sequence_set is None:
        raise AecgError("no-leads", "the series has no sequence set with leads")
    fs = _sampling_hz(sequence_set)
    leads = _leads(sequence_set, max_samples)
    order = {label: i for i, label in enumerate(LEAD_ORDER)}
    leads.sort(key=lambda lead: order.get(lead.label, len(order)))
    return Ecg(
        sampling_hz=fs,
        leads=tuple(leads),
        annotations=tuple(_annotations(series)),
        group_label=_code(series),
    )


def _load(source: bytes | Path, max_bytes: int) -> bytes:
    if isinstance(source, Path):
        try:
            with source.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise AecgError("not-xml", f"cannot read the file: {exc.strerror}") from None
    else:
        data = bytes(source)
    if len(data) > max_bytes:
        raise AecgError("too-large", f"the document is larger than {max_bytes} bytes")
    return data


def _parse(data: bytes) -> Element:
    try:
        return defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException:
        raise AecgError("forbidden-xml", "DTDs and entities are not accepted") from None
    except ParseError as exc:
        raise AecgError("not-xml", f"not well-formed XML (line {exc.position[0]})") from None
    except Exception as exc:  # untrusted bytes: whatever else breaks is the document's fault
        raise AecgError("not-xml", f"cannot parse: {type(exc).__name__}") from None


def _code(element: Element) -> str:
    code = element.find(f"{V3}code")
    return (code.get("code") or "") if code is not None else ""


def _sequences(sequence_set: Element) -> list[Element]:
    return sequence_set.findall(f"{V3}component/{V3}sequence")


def _number(element: Element | None, what: str, code: AecgErrorCode) -> tuple[float, str]:
    """The ``value`` and ``unit`` attributes of a PQ-like element."""
    if element is None:
        raise AecgError(code, f"{what} is missing")
    try:
        value = float(element.get("value") or "")
    except ValueError:
        raise AecgError(code, f"{what} is not a number") from None
    if not math.isfinite(value):
        raise AecgError(code, f"{what} is not finite")
    return value, element.get("unit") or ""


def _sampling_hz(sequence_set: Element) -> float:
    for sequence in _sequences(sequence_set):
        if _code(sequence).startswith("TIME_"):
            value = sequence.find(f"{V3}value")
            increment = value.find(f"{V3}increment") if value is not None else None
            step, unit = _number(increment, "the time increment", "bad-timing")
            if unit not in _TO_S:
                raise AecgError("bad-timing", f"unsupported time unit {unit[:16]!r}")
            if step <= 0:
                raise AecgError("bad-timing", "the time increment is not positive")
            hz = 1.0 / (step * _TO_S[unit])
            if not _MIN_HZ <= hz <= _MAX_HZ:
                raise AecgError("bad-timing", f"a sampling rate of {hz:.4g} Hz is absurd")
            return hz
    raise AecgError("bad-timing", "the sequence set has no time sequence")


def _millivolts(element: Element | None, what: str) -> float:
    value, unit = _number(element, what, "bad-scale")
    if unit not in _TO_MV:
        raise AecgError("bad-scale", f"unsupported unit {unit[:16]!r} for {what}")
    return value * _TO_MV[unit]


def _leads(sequence_set: Element, max_samples: int) -> list[Lead]:
    leads: list[Lead] = []
    budget = max_samples
    for sequence in _sequences(sequence_set):
        code = _code(sequence)
        if not code.startswith("MDC_ECG_LEAD_"):
            continue
        suffix = code.removeprefix("MDC_ECG_LEAD_")
        label = _LABELS.get(suffix.upper(), suffix)
        if any(lead.label == label for lead in leads):
            raise AecgError("duplicate-lead", f"lead {label[:16]} appears twice")
        value = sequence.find(f"{V3}value")
        if value is None:
            raise AecgError("bad-digits", f"lead {label[:16]} has no value")
        origin = _millivolts(value.find(f"{V3}origin"), f"the origin of lead {label[:16]}")
        scale = _millivolts(value.find(f"{V3}scale"), f"the scale of lead {label[:16]}")
        if not 0 < scale <= _MAX_SCALE_MV or abs(origin) > _MAX_ORIGIN_MV:
            raise AecgError("bad-scale", f"the scale or origin of lead {label[:16]} is absurd")
        digits = value.find(f"{V3}digits")
        samples = _digits(digits.text or "" if digits is not None else "", budget, label)
        budget -= len(samples)
        leads.append(Lead(label, tuple(origin + scale * d for d in samples)))
    lengths = {len(lead.millivolts) for lead in leads}
    if len(lengths) > 1:
        raise AecgError("length-mismatch", "the leads do not have the same number of samples")
    return _derive_limb_leads(leads)


def _digits(text: str, budget: int, label: str) -> list[int]:
    # Each digit takes at least two characters with its separator: when the text is short enough
    # for that bound to fit the budget, split it at once; otherwise stop as soon as it overflows.
    tokens: Iterator[str] | list[str]
    tokens = text.split() if len(text) // 2 < budget else (m.group() for m in _TOKEN.finditer(text))
    out: list[int] = []
    try:
        for token in tokens:
            out.append(int(token))
            if len(out) > budget:
                raise AecgError("too-large", "the recording has more samples than accepted")
    except ValueError:
        raise AecgError("bad-digits", f"lead {label[:16]} has a digit that is no integer") from None
    if not out:
        raise AecgError("bad-digits", f"lead {label[:16]} has no digits")
    return out


def _derive_limb_leads(leads: list[Lead]) -> list[Lead]:
    """III, aVR, aVL, aVF from I and II where the document does not have them."""
    by_label = {lead.label: lead.millivolts for lead in leads}
    if "I" not in by_label or "II" not in by_label:
        return leads
    i, ii = by_label["I"], by_label["II"]
    # each derived lead is x·I + y·II
    weights = {"III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}
    for label, (x, y) in weights.items():
        if label not in by_label:
            leads.append(Lead(label, tuple(x * a + y * b for a, b in zip(i, ii, strict=True))))
    return leads


def _annotations(series: Element) -> Iterator[MachineAnnotation]:
    holders = [series, *series.findall(f"{V3}derivation/{V3}derivedSeries")]
    for holder in holders:
        for annotation_set in holder.findall(f"{V3}subjectOf/{V3}annotationSet"):
            for annotation in annotation_set.findall(f"{V3}component/{V3}annotation"):
                yield from _annotation(annotation)


def _annotation(annotation: Element) -> Iterator[MachineAnnotation]:
    value = annotation.find(f"{V3}value")
    if value is not None:
        found = _measurement(_code(annotation), value)
        if found is not None:
            yield found
    for child in annotation.findall(f"{V3}component/{V3}annotation"):
        yield from _annotation(child)


def _measurement(code: str, value: Element) -> MachineAnnotation | None:
    kind = value.get(_XSI_TYPE, "").split(":")[-1]
    text = (value.text or "").strip()
    if kind == "CD":
        text = (value.get("displayName") or "").strip()
    if kind in {"ST", "CD"} or (text and value.get("value") is None):
        if not text:
            return None
        return MachineAnnotation(None, "", text, None, "", ())
    known = CONCEPTS.get(code.upper())
    if known is None or value.get("value") is None:
        return None
    concept, unit_kind = known
    try:
        number = float(value.get("value") or "")
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    unit = value.get("unit") or ""
    if unit_kind == "time":
        if unit not in _TO_MS:
            return None
        number, unit = number * _TO_MS[unit], "ms"
    elif unit_kind == "rate":
        unit = "bpm" if unit in {"bpm", "/min", "{beats}/min", "1/min"} else unit
    return MachineAnnotation(None, concept, "", number, unit, ())
