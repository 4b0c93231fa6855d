"""HL7 aECG test documents, written from an :class:`~imaging.ecg.Ecg` (pydicom's waveform_ecg.dcm).

No aECG sample is available offline, so :func:`build_aecg` writes one the way ECG carts export them
(structure of the HL7 aECG implementation guide): ``AnnotatedECG`` → ``component/series`` (RHYTHM)
→ ``component/sequenceSet`` holding a ``TIME_ABSOLUTE`` ``GLIST_TS`` and one ``SLIST_PQ`` per
lead (origin, scale, digits), and ``subjectOf/annotationSet`` with the machine's global
measurements (``PQ``) and its interpretation statements (``ST``) nested under
``MDC_ECG_INTERPRETATION``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from imaging.ecg import Ecg

NS = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MDC = "2.16.840.1.113883.6.24"
ACT_CODE = "2.16.840.1.113883.5.4"

# DICOM code meaning → MDC code, for the global measurements of waveform_ecg.dcm
MDC_CODES = {
    "RR Interval": ("MDC_ECG_TIME_PD_RR", "ms"),
    "PR Interval": ("MDC_ECG_TIME_PD_PR", "ms"),
    "QRS Duration": ("MDC_ECG_TIME_PD_QRS", "ms"),
    "QT Interval": ("MDC_ECG_TIME_PD_QT", "ms"),
    "QTc Interval": ("MDC_ECG_TIME_PD_QTc", "ms"),
    "P Axis": ("MDC_ECG_ANGLE_P_FRONT", "deg"),
    "QRS Axis": ("MDC_ECG_ANGLE_QRS_FRONT", "deg"),
    "T Axis": ("MDC_ECG_ANGLE_T_FRONT", "deg"),
}


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NS}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def _code(parent: ET.Element, code: str, system: str = MDC) -> ET.Element:
    return _el(parent, "code", code=code, codeSystem=system)


def build_aecg(
    ecg: Ecg,
    *,
    scale_uv: float = 2.5,
    origin_uv: float = 0.0,
    leads: Sequence[str] | None = None,
    heart_rate_bpm: float | None = None,
    patient_name: str = "Zhang^San",
) -> bytes:
    """An aECG document of ``ecg``'s leads (all, or those named), quantised to ``scale_uv``.

    ``heart_rate_bpm`` defaults to 60 000 / the machine's RR interval. The subject's name is in
    the demographics, as carts write it (the reader ignores it).
    """
    ET.register_namespace("", NS)
    ET.register_namespace("xsi", XSI)
    root = ET.Element(f"{{{NS}}}AnnotatedECG")
    _el(root, "id", root="1.2.826.0.1.3680043.8.498.77")
    _el(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12", codeSystemName="CPT-4")
    times = _el(root, "effectiveTime")
    _el(times, "low", value="20261122101500")
    _el(times, "high", value="20261122101510")
    subject = _el(
        _el(
            _el(_el(_el(root, "componentOf"), "timepointEvent"), "componentOf"),
            "subjectAssignment",
        ),
        "subject",
    )
    trial_subject = _el(subject, "trialSubject")
    _el(trial_subject, "id", extension="S-0001")
    person = _el(trial_subject, "subjectDemographicPerson")
    _el(person, "name", patient_name)

    series = _el(_el(root, "component"), "series")
    _el(series, "id", root="1.2.826.0.1.3680043.8.498.78")
    _code(series, "RHYTHM", ACT_CODE)
    sequence_set = _el(_el(series, "component"), "sequenceSet")
    time_sequence = _el(_el(sequence_set, "component"), "sequence")
    _code(time_sequence, "TIME_ABSOLUTE", ACT_CODE)
    time_value = _el(time_sequence, "value", **{f"{{{XSI}}}type": "GLIST_TS"})
    _el(time_value, "head", value="20261122101500.000", unit="s")
    _el(time_value, "increment", value=f"{1 / ecg.sampling_hz:.6g}", unit="s")
    for lead in ecg.leads:
        if leads is not None and lead.label not in leads:
            continue
        sequence = _el(_el(sequence_set, "component"), "sequence")
        _code(sequence, f"MDC_ECG_LEAD_{lead.label.upper()}")
        value = _el(sequence, "value", **{f"{{{XSI}}}type": "SLIST_PQ"})
        _el(value, "origin", value=f"{origin_uv:g}", unit="uV")
        _el(value, "scale", value=f"{scale_uv:g}", unit="uV")
        digits = (round((mv * 1000 - origin_uv) / scale_uv) for mv in lead.millivolts)
        _el(value, "digits", " ".join(str(d) for d in digits))

    annotation_set = _el(_el(series, "subjectOf"), "annotationSet")
    rr = ecg.machine_measurement("RR Interval")
    if heart_rate_bpm is None and rr:
        heart_rate_bpm = round(60_000 / rr)
    if heart_rate_bpm is not None:
        _pq(annotation_set, "MDC_ECG_HEART_RATE", heart_rate_bpm, "bpm")
    for concept, (code, unit) in MDC_CODES.items():
        number = ecg.machine_measurement(concept)
        if number is not None:
            _pq(annotation_set, code, number, unit)
    interpretation = _el(_el(annotation_set, "component"), "annotation")
    _code(interpretation, "MDC_ECG_INTERPRETATION")
    for statement in ecg.statements:
        item = _el(_el(interpretation, "component"), "annotation")
        _code(item, "MDC_ECG_INTERPRETATION_STATEMENT")
        _el(item, "value", statement, **{f"{{{XSI}}}type": "ST"})
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _pq(annotation_set: ET.Element, code: str, number: float, unit: str) -> None:
    annotation = _el(_el(annotation_set, "component"), "annotation")
    _code(annotation, code)
    _el(annotation, "value", **{f"{{{XSI}}}type": "PQ", "value": f"{number:g}", "unit": unit})


def snippet(sequence_set: str, *, increment: str = '<increment value="0.001" unit="s"/>') -> bytes:
    """A small hand-written document around the given lead sequences (for the error cases)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <component><series>
    <code code="RHYTHM" codeSystem="{ACT_CODE}"/>
    <component><sequenceSet>
      <component><sequence>
        <code code="TIME_RELATIVE" codeSystem="{ACT_CODE}"/>
        <value xsi:type="GLIST_PQ"><head value="0" unit="s"/>{increment}</value>
      </sequence></component>
      {sequence_set}
    </sequenceSet></component>
  </series></component>
</AnnotatedECG>""".encode()


def lead_xml(
    code: str, digits: str, *, origin: str = "0", scale: str = "5", unit: str = "uV"
) -> str:
    """One SLIST_PQ lead sequence for :func:`snippet`."""
    return f"""<component><sequence>
        <code code="{code}" codeSystem="{MDC}"/>
        <value xsi:type="SLIST_PQ">
          <origin value="{origin}" unit="{unit}"/><scale value="{scale}" unit="{unit}"/>
          <digits>{digits}</digits>
        </value>
      </sequence></component>"""
