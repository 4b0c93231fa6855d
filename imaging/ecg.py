"""12-lead ECGs from DICOM waveforms: leads in millivolts, the machine's own annotations, and ours.

:func:`read_ecg` decodes the rhythm multiplex group of a DICOM waveform (12-lead, general ECG) into
leads in mV with the sampling rate. The machine's statements and measurements
(WaveformAnnotationSequence) are kept as :class:`MachineAnnotation` records, untouched.

:func:`measure` adds our own values, always labelled as computed, never replacing the machine's:

* R peaks: a Pan–Tompkins-like detector on lead II (else the lead with the largest QRS energy).
  The signal is band-passed 5–25 Hz as a difference of centred moving averages (40 ms low-pass,
  minus a 200 ms moving average that removes baseline wander and T waves), differentiated
  (central difference), squared and integrated over a 150 ms window. Local maxima of that
  envelope above 30% of its 99th percentile, at least 250 ms apart, are QRS complexes; each R
  peak is the largest band-passed deflection within 80 ms of the envelope maximum. There is no
  search-back for missed beats nor T-wave discrimination beyond the refractory period.
* RR intervals between successive R peaks; heart rate = 60 000 / mean RR (ms).
* QRS duration: for each beat, the summed absolute slope of all leads (each smoothed over 20 ms,
  the sum over 10 ms) is examined from 120 ms before to 120 ms after R; the QRS is the span
  around its maximum that stays above the window's 10th percentile (the isoelectric segments)
  plus 5% of the rise. The median over beats is reported. These constants were chosen on one
  recording (pydicom's waveform_ecg.dcm); the value is a cross-check of the machine's, not a
  diagnosis.
* QT: from each beat's QRS onset (above) to the end of its T wave on the R-peak lead, smoothed over
  20 ms. The T wave is the largest deflection (at least 0.05 mV) from the isoelectric line between
  100 ms after R (and 60 ms after the QRS end) and 600 ms after R, bounded by the next beat (its
  QRS onset less 120 ms, the shortest normal PR); an inverted T is mirrored. Its end is found by
  the tangent method: the steepest descending slope between the T peak and the point where the
  wave stops falling, extended to the isoelectric line. That line joins the PR levels (40 to 20 ms
  before QRS onset) of this beat and the next, so slow baseline wander is followed; strong wander
  at slow rates still biases it. Beats without a T end are skipped; the median over beats is
  reported, None under 3 beats. QTc: Bazett QT/√RR and Fridericia QT/∛RR, RR the mean in seconds.

Pure Python (no numpy): a 10 s, 12-lead, 1 kHz recording is 120 000 samples. Blocking; from
asyncio call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import array
import io
import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

__all__ = [
    "Ecg",
    "EcgError",
    "Lead",
    "MachineAnnotation",
    "Measurements",
    "detect_r_peaks",
    "measure",
    "read_ecg",
]

# Standard order of the 12 leads; anything else keeps its own label after these.
LEAD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
_TO_MV = {"uV": 0.001, "mV": 1.0, "V": 1000.0}
_FORMATS = {
    (8, "SB"): "b",
    (8, "UB"): "B",
    (16, "SS"): "h",
    (16, "US"): "H",
    (32, "SL"): "i",
    (32, "UL"): "I",
}


class EcgError(Exception):
    """The data set holds no waveform this module can read."""


@dataclass(frozen=True, slots=True)
class Lead:
    label: str  # "I", "II", ..., "V6", or the channel's own label
    millivolts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class MachineAnnotation:
    """One WaveformAnnotationSequence item, as the machine wrote it."""

    group: int | None  # Annotation Group Number
    concept: str  # Concept Name code meaning ("RR Interval"), empty for free text
    text: str  # Unformatted Text Value ("SINUS RHYTHM"), empty for measurements
    value: float | None  # Numeric Value
    unit: str  # Measurement Units code value ("ms", "deg")
    sample_positions: tuple[int, ...]  # Referenced Sample Positions (1-based, per DICOM)


@dataclass(frozen=True, slots=True)
class Ecg:
    sampling_hz: float
    leads: tuple[Lead, ...]
    annotations: tuple[MachineAnnotation, ...]
    group_label: str  # Multiplex Group Label of the decoded group, e.g. "RHYTHM"

    def lead(self, label: str) -> Lead | None:
        return next((lead for lead in self.leads if lead.label == label), None)

    @property
    def duration_s(self) -> float:
        return len(self.leads[0].millivolts) / self.sampling_hz if self.leads else 0.0

    @property
    def statements(self) -> tuple[str, ...]:
        """The machine's free-text interpretation, in order."""
        return tuple(a.text for a in self.annotations if a.text)

    def machine_measurement(self, concept: str) -> float | None:
        """The machine's numeric value for a concept such as ``"RR Interval"``, if given."""
        for a in self.annotations:
            if a.concept == concept and a.value is not None:
                return a.value
        return None


@dataclass(frozen=True, slots=True)
class Measurements:
    """Values we computed (source: this module), shown beside the machine's."""

    lead: str
    r_peaks: tuple[int, ...]  # sample indices (0-based)
    rr_ms: tuple[float, ...]
    heart_rate_bpm: float | None
    qrs_ms: float | None
    qt_ms: float | None = None  # median over beats, QRS onset to T end (tangent method)
    qtc_bazett_ms: float | None = None  # QT / √RR, RR the mean in seconds
    qtc_fridericia_ms: float | None = None  # QT / ∛RR
    source: str = "computed"


def read_ecg(source: Dataset | bytes | Path) -> Ecg:
    """Decode the rhythm waveform of a DICOM ECG. Blocking."""
    ds = _dataset(source)
    groups = ds.get("WaveformSequence")
    if not groups:
        raise EcgError("the data set has no WaveformSequence")
    group = _rhythm_group(list(groups))
    fs = float(group.SamplingFrequency)
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    bits = int(group.WaveformBitsAllocated)
    interpretation = str(group.WaveformSampleInterpretation)
    fmt = _FORMATS.get((bits, interpretation))
    if fmt is None:
        raise EcgError(f"unsupported waveform samples: {bits} bits {interpretation}")
    if fs <= 0 or n_channels <= 0 or n_samples <= 0:
        raise EcgError("the waveform has no samples")
    raw = array.array(fmt)
    data = bytes(group.WaveformData)
    if len(data) < n_channels * n_samples * raw.itemsize:
        raise EcgError("the waveform data is shorter than its channels and samples")
    raw.frombytes(data[: n_channels * n_samples * raw.itemsize])
    if (sys.byteorder == "little") != _little_endian(ds):
        raw.byteswap()
    channels = list(group.ChannelDefinitionSequence)
    if len(channels) != n_channels:
        raise EcgError("the channel definitions do not match the number of channels")
    leads = []
    for index, channel in enumerate(channels):
        scale = _scale(channel)
        baseline = float(channel.get("ChannelBaseline", 0) or 0)
        values = raw[index::n_channels]
        leads.append(Lead(_label(channel, index), tuple((v + baseline) * scale for v in values)))
    order = {label: i for i, label in enumerate(LEAD_ORDER)}
    leads.sort(key=lambda lead: order.get(lead.label, len(order)))
    return Ecg(
        sampling_hz=fs,
        leads=tuple(leads),
        annotations=_annotations(ds),
        group_label=str(group.get("MultiplexGroupLabel", "")),
    )


def _dataset(source: Dataset | bytes | Path) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, Path):
        return dcmread(source)
    return dcmread(io.BytesIO(source))


def _little_endian(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return ts != "1.2.840.10008.1.2.2"  # Explicit VR Big Endian (retired) is the only other


def _rhythm_group(groups: list[Dataset]) -> Dataset:
    """The group labelled RHYTHM, else the longest one (a median beat is short)."""
    for group in groups:
        if str(group.get("MultiplexGroupLabel", "")).upper() == "RHYTHM":
            return group
    return max(groups, key=lambda g: int(g.get("NumberOfWaveformSamples", 0) or 0))


def _scale(channel: Dataset) -> float:
    """mV per stored unit: sensitivity × correction, in the channel's units."""
    sensitivity = float(channel.get("ChannelSensitivity", 1) or 1)
    correction = float(channel.get("ChannelSensitivityCorrectionFactor", 1) or 1)
    units = channel.get("ChannelSensitivityUnitsSequence")
    unit = str(units[0].CodeValue) if units else "uV"
    if unit not in _TO_MV:
        raise EcgError(f"unsupported channel unit {unit!r}")
    return sensitivity * correction * _TO_MV[unit]


def _label(channel: Dataset, index: int) -> str:
    sources = channel.get("ChannelSourceSequence")
    meaning = str(sources[0].get("CodeMeaning", "")) if sources else ""
    text = meaning.split("(")[0].strip()
    if text.lower().startswith("lead "):
        text = text[5:].strip()
    for standard in LEAD_ORDER:
        if text.lower() == standard.lower():
            return standard
    return text or str(channel.get("ChannelLabel", "")) or f"channel {index + 1}"


def _annotations(ds: Dataset) -> tuple[MachineAnnotation, ...]:
    out = []
    for item in ds.get("WaveformAnnotationSequence", []):
        concept = item.get("ConceptNameCodeSequence")
        units = item.get("MeasurementUnitsCodeSequence")
        numeric = item.get("NumericValue")
        positions = item.get("ReferencedSamplePositions")
        if positions is None:
            sample_positions: tuple[int, ...] = ()
        elif isinstance(positions, int):
            sample_positions = (positions,)
        else:
            sample_positions = tuple(int(p) for p in positions)
        value: float | None = None
        if numeric is not None and numeric != "":
            value = float(numeric[0] if isinstance(numeric, Sequence) else numeric)
        group = item.get("AnnotationGroupNumber")
        out.append(
            MachineAnnotation(
                group=int(group) if group is not None else None,
                concept=str(concept[0].get("CodeMeaning", "")) if concept else "",
                text=str(item.get("UnformattedTextValue", "")),
                value=value,
                unit=str(units[0].get("CodeValue", "")) if units else "",
                sample_positions=sample_positions,
            )
        )
    return tuple(out)


# --- measurement ------------------------------------------------------------------------------


def _moving_average(x: Sequence[float], width: int) -> list[float]:
    """Centred moving average; the window shrinks at the edges."""
    n = len(x)
    half = max(width // 2, 0)
    prefix = [0.0]
    for v in x:
        prefix.append(prefix[-1] + v)
    out = []
    for i in range(n):
        lo = max(0, i - half)
        hi = min(n, i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def _band_pass(x: Sequence[float], fs: float) -> list[float]:
    low = _moving_average(x, max(1, round(0.04 * fs)))
    baseline = _moving_average(low, max(1, round(0.2 * fs)))
    return [a - b for a, b in zip(low, baseline, strict=True)]


def _envelope(filtered: Sequence[float], fs: float) -> list[float]:
    n = len(filtered)
    squared = [0.0] * n
    for i in range(1, n - 1):
        d = (filtered[i + 1] - filtered[i - 1]) * fs / 2
        squared[i] = d * d
    return _moving_average(squared, max(1, round(0.15 * fs)))


def _percentile(x: Sequence[float], q: float) -> float:
    ordered = sorted(x)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def detect_r_peaks(millivolts: Sequence[float], fs: float) -> tuple[int, ...]:
    """R-peak sample indices of one lead (see the module docstring for the method)."""
    if len(millivolts) < fs:  # less than a second
        return ()
    filtered = _band_pass(millivolts, fs)
    envelope = _envelope(filtered, fs)
    threshold = 0.3 * _percentile(envelope, 0.99)
    if threshold <= 0:
        return ()
    refractory = round(0.25 * fs)
    search = round(0.08 * fs)
    peaks: list[int] = []
    i = 1
    n = len(envelope)
    while i < n - 1:
        if envelope[i] < threshold:
            i += 1
            continue
        # the maximum of this above-threshold run
        j = i
        best = i
        while j < n and envelope[j] >= threshold:
            if envelope[j] > envelope[best]:
                best = j
            j += 1
        lo, hi = max(0, best - search), min(n, best + search + 1)
        r = max(range(lo, hi), key=lambda k: abs(filtered[k]))
        if peaks and r - peaks[-1] < refractory:
            if abs(filtered[r]) > abs(filtered[peaks[-1]]):
                peaks[-1] = r
        else:
            peaks.append(r)
        i = j + 1
    return tuple(peaks)


def _best_lead(ecg: Ecg) -> Lead:
    lead_ii = ecg.lead("II")
    if lead_ii is not None:
        return lead_ii
    return max(ecg.leads, key=lambda lead: _percentile(_envelope(lead.millivolts, 1.0), 0.99))


def _qrs_spans(ecg: Ecg, peaks: Sequence[int]) -> dict[int, tuple[int, int]]:
    """QRS onset and end (sample indices, inclusive) of each beat whose complex was found."""
    fs = ecg.sampling_hz
    n = len(ecg.leads[0].millivolts)
    smooth = max(1, round(0.02 * fs))
    slope = [0.0] * n
    for lead in ecg.leads:
        filtered = _moving_average(lead.millivolts, smooth)
        for i in range(1, n):
            slope[i] += abs(filtered[i] - filtered[i - 1])
    slope = _moving_average(slope, max(1, round(0.01 * fs)))
    half = round(0.12 * fs)
    spans = {}
    for r in peaks:
        if r - half < 1 or r + half >= n:
            continue
        window = slope[r - half : r + half + 1]
        top = max(window)
        floor = _percentile(window, 0.1)  # the isoelectric PR and ST segments
        if top <= floor:
            continue
        peak_at = window.index(top)
        limit = floor + 0.05 * (top - floor)
        start = peak_at
        while start > 0 and window[start - 1] >= limit:
            start -= 1
        end = peak_at
        while end < len(window) - 1 and window[end + 1] >= limit:
            end += 1
        spans[r] = (r - half + start, r - half + end)
    return spans


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _qrs_duration(spans: dict[int, tuple[int, int]], fs: float) -> float | None:
    durations = [(end - onset + 1) * 1000 / fs for onset, end in spans.values()]
    return _median(durations) if durations else None


def _level(x: Sequence[float], lo: int, hi: int) -> float:
    """Median of ``x[lo:hi]``, clipped to the signal."""
    lo, hi = max(0, lo), min(len(x), hi)
    return _median(x[lo:hi]) if hi > lo else x[max(0, min(len(x) - 1, lo))]


_MIN_T_MV = 0.05  # a flatter T wave (or none) has no end to find


def _t_end(
    x: Sequence[float],
    fs: float,
    r: int,
    onset: int,
    end: int,
    bound: int,
    base: tuple[float, float],
) -> float | None:
    """T-wave end (fractional sample index) by the tangent method, or None.

    ``x`` is the smoothed lead, ``end`` the QRS end, ``bound`` the last sample that may still belong
    to this beat, ``base`` the isoelectric line as (level at ``onset``, slope per sample).
    """
    level, drift = base

    def baseline(i: float) -> float:
        return level + drift * (i - onset)

    lo = max(end + round(0.06 * fs), r + round(0.1 * fs))
    hi = min(bound, r + round(0.6 * fs))
    if hi - lo < round(0.05 * fs):
        return None
    # the T peak: the largest deflection from the baseline; an inverted T is mirrored
    peak = max(range(lo, hi), key=lambda i: abs(x[i] - baseline(i)))
    sign = 1.0 if x[peak] >= baseline(peak) else -1.0
    height = sign * (x[peak] - baseline(peak))
    if height < _MIN_T_MV or peak >= hi - 1:
        return None
    # the descending limb: from the peak until the (smoothed) wave stops falling
    step = max(1, round(0.004 * fs))
    stop = peak + step
    while stop + step <= bound and sign * (x[stop + step] - x[stop - step]) < 0:
        stop += 1
    best, steepest = peak, 0.0
    for i in range(peak + step, stop - step + 1):
        slope = sign * (x[i + step] - x[i - step]) / (2 * step)
        if slope < steepest:
            best, steepest = i, slope
    if steepest >= sign * drift:  # no descending limb steeper than the baseline itself
        return None
    # tangent at best: sign·(x[best] − baseline(best)) + (steepest − sign·drift)·(t − best) = 0
    offset = sign * (x[best] - baseline(best))
    t_end = best + offset / (sign * drift - steepest)
    return t_end if t_end <= bound else None


def _qt_interval(
    lead: Lead, fs: float, peaks: Sequence[int], spans: dict[int, tuple[int, int]]
) -> float | None:
    """Median QT (ms) over beats: QRS onset to the T end found on ``lead``; None under 3 beats."""
    x = _moving_average(lead.millivolts, max(1, round(0.02 * fs)))
    n = len(x)
    gap = round(0.04 * fs)  # the PR segment: 40 to 20 ms before QRS onset
    pr = {r: _level(x, onset - gap, onset - gap // 2) for r, (onset, _) in spans.items()}
    qts = []
    for k, r in enumerate(peaks):
        if r not in spans:
            continue
        onset, end = spans[r]
        following = peaks[k + 1] if k + 1 < len(peaks) else None
        if following is not None:
            # bounded by the next beat: its QRS onset less the shortest normal PR (120 ms)
            next_onset = spans[following][0] if following in spans else following - gap
            bound = min(n - 1, next_onset - round(0.12 * fs), r + round(0.8 * fs))
        else:
            bound = min(n - 1, r + round(0.7 * fs))
        if following in spans:
            drift = (pr[following] - pr[r]) / (spans[following][0] - onset)
        else:
            drift = 0.0
        t_end = _t_end(x, fs, r, onset, end, bound, (pr[r], drift))
        if t_end is not None:
            qts.append((t_end - onset) * 1000 / fs)
    return _median(qts) if len(qts) >= 3 else None


def measure(ecg: Ecg) -> Measurements:
    """Our R peaks, RR, heart rate, QRS duration, QT and QTc. Blocking."""
    if not ecg.leads:
        raise EcgError("the ECG has no leads")
    lead = _best_lead(ecg)
    fs = ecg.sampling_hz
    peaks = detect_r_peaks(lead.millivolts, fs)
    rr = tuple((b - a) * 1000 / fs for a, b in itertools.pairwise(peaks))
    heart_rate = 60_000 / (sum(rr) / len(rr)) if rr else None
    spans = _qrs_spans(ecg, peaks)
    qt = _qt_interval(lead, fs, peaks, spans)
    rr_s = sum(rr) / len(rr) / 1000 if rr else None
    return Measurements(
        lead=lead.label,
        r_peaks=peaks,
        rr_ms=rr,
        heart_rate_bpm=heart_rate,
        qrs_ms=_qrs_duration(spans, fs),
        qt_ms=qt,
        qtc_bazett_ms=qt / math.sqrt(rr_s) if qt is not None and rr_s else None,
        qtc_fridericia_ms=qt / rr_s ** (1 / 3) if qt is not None and rr_s else None,
    )
