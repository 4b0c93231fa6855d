"""The standard 12-lead ECG page as SVG: 25 mm/s, 10 mm/mV, 3×4 leads and a lead II rhythm strip.

The page is drawn in millimetres (the SVG user unit is 1 mm, so a printer at 100% keeps the
calibration): a 1 mm minor and 5 mm major grid (one ``<path>`` each, ids ``grid-minor`` and
``grid-major``), a 1 mV × 200 ms calibration pulse at the start of each row, and one ``<path
class="lead" data-lead="…">`` per trace: the 12 leads in four columns of 2.5 s (I, II, III |
aVR, aVL, aVF | V1–V3 | V4–V6, each column showing its own 2.5 s of the recording), then the full
10 s of the rhythm lead. Traces are clipped to the page, not to their row, as on paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from imaging.ecg import Ecg, Measurements

__all__ = ["render_svg"]

SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0
COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
COLUMN_S = 2.5
ROW_MM = 40.0
MARGIN_MM = 10.0
CAL_MM = 10.0  # room for the calibration pulse before the traces
HEADER_MM = 10.0
MAX_POINTS_PER_S = 500  # traces are decimated to at most this rate (0.05 mm per point)


def _grid(width: float, height: float, step: float) -> str:
    parts = []
    x = 0.0
    while x <= width + 1e-9:
        parts.append(f"M{x:.0f} 0V{height:.0f}")
        x += step
    y = 0.0
    while y <= height + 1e-9:
        parts.append(f"M0 {y:.0f}H{width:.0f}")
        y += step
    return "".join(parts)


def _trace(samples: Sequence[float], fs: float, x0: float, y0: float) -> str:
    step = max(1, round(fs / MAX_POINTS_PER_S))
    points = []
    for i in range(0, len(samples), step):
        x = x0 + i / fs * SPEED_MM_PER_S
        y = y0 - samples[i] * GAIN_MM_PER_MV
        points.append(f"{x:.2f} {y:.2f}")
    return "M" + "L".join(points) if points else ""


def _calibration(x0: float, y0: float) -> str:
    w = 0.2 * SPEED_MM_PER_S  # 200 ms
    h = GAIN_MM_PER_MV  # 1 mV
    return f"M{x0:.1f} {y0:.1f}h2v{-h:.1f}h{w:.1f}v{h:.1f}h2"


def render_svg(
    ecg: Ecg, measurements: Measurements | None = None, *, rhythm_lead: str = "II"
) -> str:
    """The page as an SVG document (a string). Leads the ECG lacks are left blank."""
    fs = ecg.sampling_hz
    strip_s = min(ecg.duration_s, 4 * COLUMN_S)
    grid_w = CAL_MM + 4 * COLUMN_S * SPEED_MM_PER_S
    grid_h = 4 * ROW_MM
    width = grid_w + 2 * MARGIN_MM
    height = grid_h + 2 * MARGIN_MM + HEADER_MM
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
        f'width="{width:.0f}mm" height="{height:.0f}mm" viewBox="0 0 {width:.0f} {height:.0f}">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#fff"/>',
        f'<g transform="translate({MARGIN_MM:.0f} {MARGIN_MM + HEADER_MM:.0f})">',
        f'<path id="grid-minor" d="{_grid(grid_w, grid_h, 1)}" stroke="#f6c6c6" '
        'stroke-width="0.1" fill="none"/>',
        f'<path id="grid-major" d="{_grid(grid_w, grid_h, 5)}" stroke="#e88" '
        'stroke-width="0.25" fill="none"/>',
        '<clipPath id="page"><rect x="0" y="0" '
        f'width="{grid_w:.0f}" height="{grid_h:.0f}"/></clipPath>',
        '<g clip-path="url(#page)" stroke="#000" stroke-width="0.3" fill="none" '
        'stroke-linejoin="round">',
    ]
    labels = []
    per_column = round(COLUMN_S * fs)
    for row in range(3):
        y0 = ROW_MM * (row + 0.5)
        out.append(f'<path class="calibration" d="{_calibration(0, y0)}"/>')
        for col, names in enumerate(COLUMNS):
            label = names[row]
            x0 = CAL_MM + col * COLUMN_S * SPEED_MM_PER_S
            labels.append((x0 + 1, y0 - 12, label))
            lead = ecg.lead(label)
            if lead is None:
                continue
            start = col * per_column
            segment = lead.millivolts[start : start + per_column]
            d = _trace(segment, fs, x0, y0)
            out.append(f'<path class="lead" data-lead={quoteattr(label)} d="{d}"/>')
    y0 = ROW_MM * 3.5
    out.append(f'<path class="calibration" d="{_calibration(0, y0)}"/>')
    strip = ecg.lead(rhythm_lead)
    labels.append((CAL_MM + 1, y0 - 12, rhythm_lead))
    if strip is not None:
        samples = strip.millivolts[: round(strip_s * fs)]
        d = _trace(samples, fs, CAL_MM, y0)
        out.append(f'<path class="lead rhythm" data-lead={quoteattr(rhythm_lead)} d="{d}"/>')
    out.append("</g>")
    out.append('<g font-family="sans-serif" font-size="3" fill="#000">')
    out.extend(f'<text x="{x:.1f}" y="{y:.1f}">{escape(text)}</text>' for x, y, text in labels)
    out.append("</g></g>")
    out.append(_header(ecg, measurements, MARGIN_MM))
    out.append("</svg>")
    return "\n".join(out)


def _header(ecg: Ecg, m: Measurements | None, margin: float) -> str:
    left = f"{SPEED_MM_PER_S:g} mm/s  {GAIN_MM_PER_MV:g} mm/mV  {ecg.sampling_hz:g} Hz"
    machine = []
    for concept, short in (
        ("RR Interval", "RR"),
        ("PR Interval", "PR"),
        ("QRS Duration", "QRS"),
        ("QT Interval", "QT"),
        ("QTc Interval", "QTc"),
    ):
        value = ecg.machine_measurement(concept)
        if value is not None:
            machine.append(f"{short} {value:g}")
    lines = [left]
    if machine or ecg.statements:
        lines.append(
            "Machine: "
            + ", ".join(machine)
            + ("; " if machine else "")
            + " / ".join(ecg.statements)
        )
    if m is not None:
        # Ours, on a line of their own under the machine's: never in their place.
        computed = ", ".join(
            f"{name} {value:.0f}{unit}" if value is not None else f"{name} —"
            for name, value, unit in (
                ("HR", m.heart_rate_bpm, " bpm"),
                ("QRS", m.qrs_ms, " ms"),
                ("QT", m.qt_ms, " ms"),
                ("QTc (Bazett)", m.qtc_bazett_ms, " ms"),
            )
        )
        lines.append(f"Computed (lead {m.lead}): {computed}, {len(m.r_peaks)} beats")
    texts = "".join(
        f'<text x="{margin:.0f}" y="{margin * 0.5 + 3.5 * i:.1f}">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    return f'<g id="header" font-family="sans-serif" font-size="3" fill="#000">{texts}</g>'
