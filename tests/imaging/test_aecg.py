"""HL7 aECG: the Ecg of the DICOM waveform again, the machine's annotations, refused documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.aecg import AecgError, read_aecg
from imaging.ecg import LEAD_ORDER, Ecg, EcgError, measure, read_ecg
from tests.imaging.aecgfiles import build_aecg, lead_xml, snippet
from tests.imaging.dicomfiles import bundled

SCALE_UV = 2.5


@pytest.fixture(scope="module")
def dicom_ecg() -> Ecg:
    return read_ecg(bundled("waveform_ecg.dcm"))


@pytest.fixture(scope="module")
def document(dicom_ecg: Ecg) -> bytes:
    return build_aecg(dicom_ecg, scale_uv=SCALE_UV)


@pytest.fixture(scope="module")
def aecg(document: bytes) -> Ecg:
    return read_aecg(document)


def _worst(a: Ecg, b: Ecg, label: str) -> float:
    lead_a, lead_b = a.lead(label), b.lead(label)
    assert lead_a is not None and lead_b is not None
    assert len(lead_a.millivolts) == len(lead_b.millivolts)
    return max(abs(x - y) for x, y in zip(lead_a.millivolts, lead_b.millivolts, strict=True))


def test_same_leads_as_the_dicom_source(dicom_ecg: Ecg, aecg: Ecg) -> None:
    assert [lead.label for lead in aecg.leads] == list(LEAD_ORDER)
    assert aecg.sampling_hz == pytest.approx(1000)
    assert aecg.duration_s == pytest.approx(10)
    assert aecg.group_label == "RHYTHM"
    for label in LEAD_ORDER:
        # quantised to 2.5 µV: at most half a step away (plus float rounding)
        assert _worst(dicom_ecg, aecg, label) <= SCALE_UV / 2 / 1000 + 1e-9, label
    lead_ii = aecg.lead("II")
    assert lead_ii is not None
    assert 0.5 < max(lead_ii.millivolts) - min(lead_ii.millivolts) < 5


def test_same_heart_rate_as_the_dicom_source(dicom_ecg: Ecg, aecg: Ecg) -> None:
    ours, theirs = measure(aecg), measure(dicom_ecg)
    assert ours.heart_rate_bpm is not None and theirs.heart_rate_bpm is not None
    assert ours.r_peaks == theirs.r_peaks
    assert ours.heart_rate_bpm == pytest.approx(theirs.heart_rate_bpm)
    assert ours.qrs_ms == theirs.qrs_ms


def test_machine_measurements_and_statements_are_kept(dicom_ecg: Ecg, aecg: Ecg) -> None:
    assert aecg.machine_measurement("Heart Rate") == 61  # 60 000 / 982 ms, as the cart wrote it
    for concept in ("RR Interval", "PR Interval", "QRS Duration", "QT Interval", "QTc Interval"):
        assert aecg.machine_measurement(concept) == dicom_ecg.machine_measurement(concept), concept
    assert aecg.machine_measurement("QRS Axis") == 52
    assert aecg.statements == dicom_ecg.statements == ("RITMO SINUSALE", "ECG NORMALE")
    qt = next(a for a in aecg.annotations if a.concept == "QT Interval")
    assert qt.unit == "ms"
    heart_rate = next(a for a in aecg.annotations if a.concept == "Heart Rate")
    assert heart_rate.unit == "bpm"


def test_read_from_a_path(tmp_path: Path, document: bytes, aecg: Ecg) -> None:
    path = tmp_path / "ecg.xml"
    path.write_bytes(document)
    assert read_aecg(path) == aecg


def test_other_units_give_the_same_millivolts() -> None:
    in_uv = read_aecg(snippet(lead_xml("MDC_ECG_LEAD_II", "-2 0 40", origin="10", scale="5")))
    in_mv = read_aecg(
        snippet(
            lead_xml("MDC_ECG_LEAD_II", "-2 0 40", origin="0.01", scale="0.005", unit="mV"),
            increment='<increment value="1" unit="ms"/>',
        )
    )
    for ecg in (in_uv, in_mv):
        assert ecg.sampling_hz == pytest.approx(1000)
        lead = ecg.lead("II")
        assert lead is not None
        assert lead.millivolts == pytest.approx((0.0, 0.01, 0.21))  # origin + scale × digit


def test_missing_limb_leads_are_derived_from_i_and_ii(dicom_ecg: Ecg) -> None:
    eight = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    ecg = read_aecg(build_aecg(dicom_ecg, scale_uv=SCALE_UV, leads=eight))
    assert [lead.label for lead in ecg.leads] == list(LEAD_ORDER)
    for label in ("III", "aVR", "aVL", "aVF"):
        # the cart's own limb leads agree with Einthoven and Goldberger within its rounding
        assert _worst(dicom_ecg, ecg, label) < 0.02, label
    assert measure(ecg).heart_rate_bpm == pytest.approx(measure(dicom_ecg).heart_rate_bpm)


def test_other_leads_keep_their_label_after_the_twelve() -> None:
    ecg = read_aecg(
        snippet(lead_xml("MDC_ECG_LEAD_V4R", "1 2 3") + lead_xml("MDC_ECG_LEAD_AVR", "4 5 6"))
    )
    assert [lead.label for lead in ecg.leads] == ["aVR", "V4R"]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><component><series><code code="&d;"/></series></component>
</AnnotatedECG>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG [<!ENTITY leak SYSTEM "file:///etc/passwd">]>
<AnnotatedECG xmlns="urn:hl7-org:v3"><id root="&leak;"/></AnnotatedECG>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE AnnotatedECG SYSTEM "http://192.0.2.1/aecg.dtd">
<AnnotatedECG xmlns="urn:hl7-org:v3"/>"""

ONE = lead_xml("MDC_ECG_LEAD_I", "1 2 3")
BAD_DOCUMENTS: list[tuple[str, bytes]] = [
    ("not-xml", b"MSH|^~\\&|ECG|not xml at all"),
    ("not-xml", b""),
    ("not-xml", snippet(ONE)[:-40]),  # cut short
    ("forbidden-xml", BILLION_LAUGHS),
    ("forbidden-xml", EXTERNAL_ENTITY),
    ("forbidden-xml", EXTERNAL_DTD),
    ("not-aecg", b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>'),
    ("not-aecg", b"<AnnotatedECG/>"),  # no namespace
    ("no-series", b'<AnnotatedECG xmlns="urn:hl7-org:v3"><component/></AnnotatedECG>'),
    ("no-leads", snippet("")),
    ("no-leads", snippet(ONE.replace("MDC_ECG_LEAD_I", "MDC_ECG_PRESSURE"))),
    ("bad-timing", snippet(ONE, increment="")),
    ("bad-timing", snippet(ONE, increment='<increment value="0" unit="s"/>')),
    ("bad-timing", snippet(ONE, increment='<increment value="-0.001" unit="s"/>')),
    ("bad-timing", snippet(ONE, increment='<increment value="abc" unit="s"/>')),
    ("bad-timing", snippet(ONE, increment='<increment value="0.001" unit="h"/>')),
    ("bad-timing", snippet(ONE, increment='<increment value="1" unit="s"/>')),  # 1 Hz
    ("bad-timing", snippet(ONE, increment='<increment value="1e-9" unit="s"/>')),  # 1 GHz
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="0"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="-5"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="NaN"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="inf"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="5", unit="mmHg"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", scale="5", unit="V"))),
    ("bad-scale", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2", origin="1e9"))),
    ("bad-scale", snippet(ONE.replace('<scale value="5" unit="uV"/>', ""))),
    ("bad-digits", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2 x"))),
    ("bad-digits", snippet(lead_xml("MDC_ECG_LEAD_I", "1 2.5 3"))),
    ("bad-digits", snippet(lead_xml("MDC_ECG_LEAD_I", ""))),
    ("length-mismatch", snippet(ONE + lead_xml("MDC_ECG_LEAD_II", "1 2 3 4"))),
    ("duplicate-lead", snippet(ONE + lead_xml("MDC_ECG_LEAD_I", "1 2 3"))),
]


@pytest.mark.parametrize(("code", "document"), BAD_DOCUMENTS)
def test_malformed_documents_are_refused_with_a_code(code: str, document: bytes) -> None:
    with pytest.raises(AecgError) as caught:
        read_aecg(document)
    assert caught.value.code == code
    assert isinstance(caught.value, EcgError)  # callers of read_ecg catch both


def test_the_sane_snippet_reads() -> None:
    """The error snippets differ from a readable document only by their fault."""
    ecg = read_aecg(snippet(ONE + lead_xml("MDC_ECG_LEAD_II", "4 5 6")))
    assert [lead.label for lead in ecg.leads] == ["I", "II", "III", "aVR", "aVL", "aVF"]


def test_size_caps(document: bytes, tmp_path: Path) -> None:
    with pytest.raises(AecgError) as caught:
        read_aecg(document, max_bytes=len(document) - 1)
    assert caught.value.code == "too-large"
    path = tmp_path / "big.xml"
    path.write_bytes(document)
    with pytest.raises(AecgError) as caught:
        read_aecg(path, max_bytes=1024)
    assert caught.value.code == "too-large"
    assert read_aecg(document, max_bytes=len(document)).sampling_hz == pytest.approx(1000)
    # 12 leads × 10 000 samples: one sample fewer is too many
    with pytest.raises(AecgError) as caught:
        read_aecg(document, max_samples=119_999)
    assert caught.value.code == "too-large"
    assert len(read_aecg(document, max_samples=120_000).leads) == 12


def test_errors_do_not_quote_the_document(dicom_ecg: Ecg) -> None:
    named = build_aecg(dicom_ecg, patient_name="Wang^Xiaoming")
    cut = named[: named.index(b"Wang") + 8]
    with pytest.raises(AecgError) as caught:
        read_aecg(cut)
    assert "Wang" not in str(caught.value)
