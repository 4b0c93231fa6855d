"""ECG: leads in mV, the machine's annotations kept, our measurements beside them, the SVG page."""

from __future__ import annotations

import array
import io
import math
import re
import xml.etree.ElementTree as ET

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from imaging.ecg import LEAD_ORDER, Ecg, EcgError, Lead, detect_r_peaks, measure, read_ecg
from imaging.ecgplot import render_svg
from tests.imaging.dicomfiles import bundled

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def ecg() -> Ecg:
    return read_ecg(bundled("waveform_ecg.dcm"))


def test_leads_in_millivolts(ecg: Ecg) -> None:
    assert [lead.label for lead in ecg.leads] == list(LEAD_ORDER)
    assert ecg.sampling_hz == 1000
    assert ecg.duration_s == 10
    assert ecg.group_label == "RHYTHM"
    lead_ii = ecg.lead("II")
    assert lead_ii is not None
    assert 0.5 < max(lead_ii.millivolts) - min(lead_ii.millivolts) < 5  # an R wave, in mV
    # Einthoven: I + III = II, within rounding of the stored samples (1.25 µV each)
    lead_i, lead_iii = ecg.lead("I"), ecg.lead("III")
    assert lead_i is not None and lead_iii is not None
    worst = max(
        abs(a + c - b)
        for a, b, c in zip(lead_i.millivolts, lead_ii.millivolts, lead_iii.millivolts, strict=True)
    )
    assert worst < 0.02


def test_same_ecg_from_bytes_and_dataset(ecg: Ecg) -> None:
    data = bundled("waveform_ecg.dcm").read_bytes()
    assert read_ecg(data) == ecg
    assert read_ecg(dcmread(io.BytesIO(data))) == ecg


def test_machine_annotations_are_kept(ecg: Ecg) -> None:
    ds = dcmread(bundled("waveform_ecg.dcm"))
    assert len(ecg.annotations) == len(ds.WaveformAnnotationSequence)
    assert ecg.statements == ("RITMO SINUSALE", "ECG NORMALE")
    assert ecg.machine_measurement("RR Interval") == 982
    assert ecg.machine_measurement("QRS Duration") == 75
    assert ecg.machine_measurement("QT Interval") == 368
    rr = next(a for a in ecg.annotations if a.concept == "RR Interval")
    assert rr.unit == "ms"
    qrs_onset = next(a for a in ecg.annotations if a.concept == "QRS Onset")
    assert qrs_onset.sample_positions == (460,)


def test_measurements_are_computed_beside_the_machine(ecg: Ecg) -> None:
    m = measure(ecg)
    assert m.source == "computed"
    assert m.lead == "II"
    assert len(m.r_peaks) == 10  # 10 s at about 61 bpm
    assert m.heart_rate_bpm is not None
    assert 40 < m.heart_rate_bpm < 150
    assert abs(m.heart_rate_bpm - 60_000 / (sum(m.rr_ms) / len(m.rr_ms))) <= 5
    machine_rr = ecg.machine_measurement("RR Interval")
    assert machine_rr is not None
    assert abs(m.heart_rate_bpm - 60_000 / machine_rr) <= 5
    assert m.qrs_ms is not None
    assert 60 <= m.qrs_ms <= 110
    # the machine's value is still there, unchanged
    assert ecg.machine_measurement("QRS Duration") == 75


def test_qt_beside_the_machine(ecg: Ecg) -> None:
    m = measure(ecg)
    machine_qt = ecg.machine_measurement("QT Interval")
    assert machine_qt == 368
    assert m.qt_ms is not None
    # ±40 ms: the machine ends T on all 12 leads together, we on lead II alone; QT differs between
    # leads by 30–50 ms in normal ECGs (here 336–382 ms on the leads other than aVL), and methods
    # that end T differently (tangent, threshold, a cardiologist's eye) disagree by 10–20 ms more.
    assert abs(m.qt_ms - machine_qt) <= 40
    rr_s = sum(m.rr_ms) / len(m.rr_ms) / 1000
    assert m.qtc_bazett_ms == pytest.approx(m.qt_ms / math.sqrt(rr_s))
    assert m.qtc_fridericia_ms == pytest.approx(m.qt_ms / rr_s ** (1 / 3))
    machine_qtc = ecg.machine_measurement("QTc Interval")
    assert machine_qtc is not None and m.qtc_bazett_ms is not None
    assert abs(m.qtc_bazett_ms - machine_qtc) <= 40


def _synthetic_qt(bpm: float, fs: float, t_at: float, t_mv: float) -> tuple[list[float], float]:
    """Gaussian QRS (1.2 mV, σ 12 ms) and T (``t_mv``, σ 40 ms, ``t_at`` s after R), mild wander
    (0.1 mV at 0.2 Hz) and hum; with the QT that the tangent method should find.

    The tangent at a Gaussian's steepest point (peak + σ) meets the baseline at peak + 2σ; the
    QRS starts where the Gaussian falls under 1% of its height, 3σ = 36 ms before R.
    """
    n = round(10 * fs)
    rr = 60 / bpm
    beats = [(0.4 + k * rr) for k in range(int(9.5 / rr))]
    out = []
    for i in range(n):
        t = i / fs
        v = 0.1 * math.sin(2 * math.pi * 0.2 * t) + 0.03 * math.sin(2 * math.pi * 50 * t)
        for b in beats:
            dt = t - b
            if -0.1 < dt < 0.7:
                v += 1.2 * math.exp(-((dt / 0.012) ** 2) / 2)
                v += t_mv * math.exp(-(((dt - t_at) / 0.04) ** 2) / 2)
        out.append(v)
    return out, (0.036 + t_at + 2 * 0.04) * 1000


@pytest.mark.parametrize(
    ("bpm", "fs", "t_at", "t_mv"),
    [(50, 500, 0.32, 0.3), (60, 1000, 0.3, -0.25), (75, 250, 0.28, 0.3), (120, 500, 0.2, 0.4)],
)
def test_qt_on_a_synthetic_ecg(bpm: float, fs: float, t_at: float, t_mv: float) -> None:
    signal, qt = _synthetic_qt(bpm, fs, t_at, t_mv)
    m = measure(Ecg(fs, (Lead("II", tuple(signal)),), (), "RHYTHM"))
    assert m.qt_ms is not None
    assert abs(m.qt_ms - qt) <= 20
    rr_s = 60 / bpm
    assert m.qtc_bazett_ms is not None and abs(m.qtc_bazett_ms - qt / math.sqrt(rr_s)) <= 25
    assert m.qtc_fridericia_ms is not None
    assert abs(m.qtc_fridericia_ms - qt / rr_s ** (1 / 3)) <= 25


def test_no_qt_without_t_waves() -> None:
    signal, _ = _synthetic_qt(60, 500, 0.3, 0.0)  # QRS complexes, no T waves
    m = measure(Ecg(500, (Lead("II", tuple(signal)),), (), "RHYTHM"))
    assert len(m.r_peaks) >= 9
    assert (m.qt_ms, m.qtc_bazett_ms, m.qtc_fridericia_ms) == (None, None, None)


def _synthetic(bpm: float, fs: float, seconds: float) -> tuple[list[float], list[int]]:
    """Gaussian QRS (1.2 mV, σ 12 ms) and T (0.3 mV, 300 ms later), baseline wander, hum."""
    n = round(seconds * fs)
    rr = 60 / bpm
    beats = [round((0.4 + k * rr) * fs) for k in range(int((seconds - 0.5) / rr))]
    out = []
    for i in range(n):
        t = i / fs
        v = 0.3 * math.sin(2 * math.pi * 0.3 * t) + 0.03 * math.sin(2 * math.pi * 50 * t)
        for b in beats:
            dt = t - b / fs
            if -0.1 < dt < 0.6:
                v += 1.2 * math.exp(-((dt / 0.012) ** 2) / 2)
                v += 0.3 * math.exp(-(((dt - 0.3) / 0.05) ** 2) / 2)
        out.append(v)
    return out, beats


@pytest.mark.parametrize(("bpm", "fs"), [(45, 500), (75, 500), (150, 250), (110, 1000)])
def test_detector_finds_synthetic_beats(bpm: float, fs: float) -> None:
    signal, beats = _synthetic(bpm, fs, 10)
    peaks = detect_r_peaks(signal, fs)
    assert len(peaks) == len(beats)
    assert all(abs(p - b) <= 0.01 * fs for p, b in zip(peaks, beats, strict=True))


def test_detector_on_a_flat_line() -> None:
    assert detect_r_peaks([0.0] * 5000, 500) == ()
    assert detect_r_peaks([0.1] * 100, 500) == ()  # under a second
    flat = Ecg(500, (Lead("II", (0.0,) * 5000),), (), "RHYTHM")
    m = measure(flat)
    assert (m.r_peaks, m.heart_rate_bpm, m.qrs_ms) == ((), None, None)
    assert (m.qt_ms, m.qtc_bazett_ms, m.qtc_fridericia_ms) == (None, None, None)


def _waveform_file(signal: list[float], fs: float, sensitivity_uv: float, baseline: int) -> bytes:
    """A 12-lead ECG Waveform Storage file; every lead carries the same signal."""
    stored = [round(v * 1000 / sensitivity_uv) - baseline for v in signal]
    samples = array.array("h", [s for s in stored for _ in range(12)])
    channels = []
    for label in LEAD_ORDER:
        source = Dataset()
        source.CodeValue = "x"
        source.CodingSchemeDesignator = "SCPECG"
        source.CodeMeaning = f"Lead {label}"
        unit = Dataset()
        unit.CodeValue = "uV"
        unit.CodingSchemeDesignator = "UCUM"
        unit.CodeMeaning = "microvolt"
        channel = Dataset()
        channel.ChannelSourceSequence = Sequence([source])
        channel.ChannelSensitivity = str(sensitivity_uv)
        channel.ChannelSensitivityUnitsSequence = Sequence([unit])
        channel.ChannelSensitivityCorrectionFactor = "1"
        channel.ChannelBaseline = str(baseline)
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.SamplingFrequency = str(fs)
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = len(signal)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = samples.tobytes()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.9"
    ds.Modality = "ECG"
    ds.WaveformSequence = Sequence([group])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_sensitivity_and_baseline_are_applied() -> None:
    signal, beats = _synthetic(90, 500, 10)
    ecg = read_ecg(_waveform_file(signal, 500, sensitivity_uv=2.5, baseline=-100))
    assert len(ecg.leads) == 12
    lead_v6 = ecg.lead("V6")
    assert lead_v6 is not None
    assert max(abs(a - b) for a, b in zip(lead_v6.millivolts, signal, strict=True)) <= 0.0013
    m = measure(ecg)
    assert m.heart_rate_bpm is not None and abs(m.heart_rate_bpm - 90) < 1
    assert len(m.r_peaks) == len(beats)
    assert ecg.annotations == () and ecg.statements == ()


def test_a_file_without_waveforms_is_refused() -> None:
    with pytest.raises(EcgError):
        read_ecg(bundled("CT_small.dcm"))


def _path_points(d: str) -> list[tuple[float, float]]:
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[0::2], numbers[1::2], strict=True))


def test_svg_page(ecg: Ecg) -> None:
    m = measure(ecg)
    svg = render_svg(ecg, m)
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    assert root.tag == f"{SVG}svg"
    paths = list(root.iter(f"{SVG}path"))
    leads = [p for p in paths if "lead" in p.get("class", "").split()]
    assert [p.get("data-lead") for p in leads] == [
        "I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6", "II",
    ]  # fmt: skip
    assert "rhythm" in leads[-1].get("class", "")
    by_id = {p.get("id"): p for p in paths if p.get("id")}
    # 1 mm and 5 mm grids over 260 × 160 mm: one move per vertical and horizontal line
    assert by_id["grid-minor"].get("d", "").count("M") == 261 + 161
    assert by_id["grid-major"].get("d", "").count("M") == 53 + 33
    assert len([p for p in paths if p.get("class") == "calibration"]) == 4
    # 25 mm/s: the rhythm strip spans 10 s = 250 mm; 10 mm/mV: its height is 10 × its mV range
    rhythm = _path_points(leads[-1].get("d", ""))
    xs, ys = [x for x, _ in rhythm], [y for _, y in rhythm]
    assert 249 <= max(xs) - min(xs) <= 250
    lead_ii = ecg.lead("II")
    assert lead_ii is not None
    mv_range = max(lead_ii.millivolts) - min(lead_ii.millivolts)
    assert abs((max(ys) - min(ys)) - 10 * mv_range) < 0.2
    # each 3×4 trace is 2.5 s = 62.5 mm wide
    first = _path_points(leads[0].get("d", ""))
    assert 62 <= max(x for x, _ in first) - min(x for x, _ in first) <= 62.5
    text = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "RITMO SINUSALE" in text and "Computed (lead II): HR 61 bpm" in text
    assert "QRS 75" in text  # the machine's value, shown beside ours


def _header_lines(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    (header,) = [g for g in root.iter(f"{SVG}g") if g.get("id") == "header"]
    return [t.text or "" for t in header.iter(f"{SVG}text")]


def test_svg_header_shows_our_qt_beside_the_machines(ecg: Ecg) -> None:
    m = measure(ecg)
    assert m.qt_ms is not None and m.qtc_bazett_ms is not None
    _, machine, computed = _header_lines(render_svg(ecg, m))
    # The machine's QT and QTc stay on its own line, as it measured them.
    assert machine.startswith("Machine: ") and "QT 368, QTc 370;" in machine
    # Ours beside them, labelled as computed, with the formula named.
    assert computed == (
        f"Computed (lead II): HR 61 bpm, QRS 76 ms, QT {m.qt_ms:.0f} ms, "
        f"QTc (Bazett) {m.qtc_bazett_ms:.0f} ms, {len(m.r_peaks)} beats"
    )
    assert round(m.qt_ms) != 368  # ours differ from the machine's: the test tells them apart
    # Without the measurements, only the machine speaks.
    assert [line.split(":")[0] for line in _header_lines(render_svg(ecg))] == [
        "25 mm/s  10 mm/mV  1000 Hz",
        "Machine",
    ]


def test_svg_header_without_t_waves_says_so() -> None:
    signal, _ = _synthetic_qt(60, 500, 0.3, 0.0)  # QRS complexes, no T waves: no QT
    ecg = Ecg(500, (Lead("II", tuple(signal)),), (), "RHYTHM")
    *_, computed = _header_lines(render_svg(ecg, measure(ecg)))
    assert "QT —, QTc (Bazett) —," in computed
