"""A signed report laid out as a printout: an A4 PDF the way a county hospital prints a report.

:func:`render` takes a :class:`Printable` (everything the page shows, already read from the
database, the national ID already masked) and returns the PDF's bytes. Nothing here knows about
HTTP or the database: ``server.reportpdf`` gathers the data and serves the file.

Chinese text is drawn with a CJK TrueType font from the system, embedded as a subset so that the
file shows the same on any viewer and its text can be copied and searched. ReportLab reads
TrueType outlines only: Noto Sans CJK (Debian's ``fonts-noto-cjk``) has PostScript (CFF) outlines
and is refused today, so WenQuanYi Micro Hei (``fonts-wqy-microhei``) is what a Debian machine
uses. Without any of them the PDF falls back to the built-in CID font ``STSong-Light``, which is
not embedded (the viewer supplies a Song face). Nothing is fetched at run time.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFError, TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from server.consultflow import Priority
from server.models import Centre, Sex

log = logging.getLogger(__name__)

# -- fonts ----------------------------------------------------------------------------------

#: CJK fonts tried in order: (file, face index in a collection). Noto Sans CJK SC is face 2 of
#: the collection (JP, KR, SC, TC, HK, then the Mono faces); ReportLab refuses its CFF outlines
#: today, and would use it the day it reads them. The paths are where Debian's packages put them
#: (``fonts-noto-cjk``, ``fonts-wqy-microhei``, ``fonts-wqy-zenhei``, ``fonts-arphic-uming``,
#: ``fonts-droid-fallback``).
FONT_CANDIDATES: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
    ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
    ("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", 0),
)
#: For the SHA-256: a fixed-width face (WenQuanYi Micro Hei Mono), else the standard Courier.
MONO_CANDIDATES: tuple[tuple[str, int], ...] = (
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 1),
)
FALLBACK_CID_FONT = "STSong-Light"
#: Plain equivalents of symbols that some CJK fonts map to an empty glyph.
SUBSTITUTES = {"℃": "°C", "℉": "°F", "⁺": "+", "⁻": "-"}


@dataclass(frozen=True, slots=True)
class Fonts:
    body: str  # registered ReportLab font names
    mono: str
    #: The body font is embedded in the PDF (a TrueType subset), not left to the viewer.
    embedded: bool
    source: str
    #: ``str.translate`` table for characters the body font draws blank (WenQuanYi has no ℃).
    substitutes: dict[int, str] = field(default_factory=dict)


_fonts_lock = threading.Lock()
_fonts_cache: dict[tuple[tuple[tuple[str, int], ...], ...], Fonts] = {}


def load_fonts(
    candidates: Sequence[tuple[str, int]] = FONT_CANDIDATES,
    mono: Sequence[tuple[str, int]] = MONO_CANDIDATES,
) -> Fonts:
    """Register the first usable CJK font (once per process) and say which it is."""
    key = (tuple(candidates), tuple(mono))
    with _fonts_lock:
        if key not in _fonts_cache:
            _fonts_cache[key] = _register(candidates, mono)
        return _fonts_cache[key]


def _register_ttf(prefix: str, candidates: Iterable[tuple[str, int]]) -> tuple[TTFont, str] | None:
    for path, index in candidates:
        if not Path(path).is_file():
            continue
        try:
            font = TTFont(f"{prefix}-{Path(path).stem}-{index}", path, subfontIndex=index)
        except (TTFError, OSError) as exc:
            log.debug("font %s#%d is not usable: %s", path, index, exc)
            continue
        pdfmetrics.registerFont(font)
        return font, f"{path}#{index}"
    return None


def _draws(font: TTFont, char: str) -> bool:
    """Whether the font has a glyph with an outline for ``char`` (not just a cmap entry)."""
    face = font.face
    glyph = face.charToGlyph.get(ord(char))
    if glyph is None:
        return False
    return bool(face.glyphPos[glyph + 1] > face.glyphPos[glyph])


def _register(candidates: Sequence[tuple[str, int]], mono: Sequence[tuple[str, int]]) -> Fonts:
    body = _register_ttf("HuizhenCJK", candidates)
    mono_font = _register_ttf("HuizhenMono", mono)
    mono_name = mono_font[0].fontName if mono_font else "Courier"
    if body is not None:
        font, source = body
        missing = {ord(k): v for k, v in SUBSTITUTES.items() if not _draws(font, k)}
        return Fonts(
            body=font.fontName, mono=mono_name, embedded=True, source=source, substitutes=missing
        )
    log.warning(
        "no CJK TrueType font found; report PDFs use %s, which is not embedded "
        "(install fonts-wqy-microhei)",
        FALLBACK_CID_FONT,
    )
    pdfmetrics.registerFont(UnicodeCIDFont(FALLBACK_CID_FONT))
    return Fonts(body=FALLBACK_CID_FONT, mono=mono_name, embedded=False, source=FALLBACK_CID_FONT)


# -- what a printout shows ------------------------------------------------------------------


def _china_tz() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database: China keeps UTC+8, no DST
        return dt.timezone(dt.timedelta(hours=8), "CST")


CHINA = _china_tz()


@dataclass(frozen=True, slots=True)
class Printable:
    """Everything the PDF shows, read from the database before rendering (no full national ID:
    the printout carries the masked form only)."""

    hospital: str
    centre: Centre
    centre_zh: str
    centre_en: str
    consult_id: uuid.UUID
    priority: Priority
    question: str
    clinical_summary: str
    requester_institution: str
    requester_doctor: str
    escalated_to: str
    submitted_at: dt.datetime | None
    patient_name: str
    patient_sex: Sex
    birth_date: dt.date
    national_id_masked: str
    version: int
    content: Mapping[str, Any]
    critical: bool
    signer: str
    signer_institution: str
    signed_at: dt.datetime
    sha256: str

    @property
    def short_id(self) -> str:
        return str(self.consult_id)[:8]

    @property
    def filename(self) -> str:
        return f"report-{self.short_id}-v{self.version}.pdf"


def age_on(birth: dt.date, on: dt.date) -> str:
    """Age as a Chinese report prints it: years, or months, or days for an infant."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return f"{years}岁"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months}个月"
    return f"{max((on - birth).days, 0)}天"


def local_time(moment: dt.datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


# -- labels -----------------------------------------------------------------------------------

TITLES = {
    Centre.ECG: ("诊断报告", "report"),
    Centre.IMAGING: ("诊断报告", "report"),
    Centre.CONSULTATION: ("会诊报告", "consultation report"),
    Centre.LAB: ("检验报告", "report"),
    Centre.PATHOLOGY: ("诊断报告", "report"),
}
SEX = {Sex.MALE: "男", Sex.FEMALE: "女"}
PRIORITY = {Priority.ROUTINE: "常规", Priority.URGENT: "加急", Priority.STAT: "紧急"}
FLAGS = {
    "normal": "",
    "low": "↓ 偏低",
    "high": "↑ 偏高",
    "critical_low": "↓↓ 危急低值",
    "critical_high": "↑↑ 危急高值",
    "abnormal": "* 异常",
}
REFERRAL = {"none": "无需转诊", "up": "上转（转上级医院）", "down": "下转（转基层机构）"}
QTC_FORMULAS = {
    "bazett": "Bazett",
    "fridericia": "Fridericia",
    "framingham": "Framingham",
    "hodges": "Hodges",
}
#: The ECG measurements table: key, Chinese label, unit.
ECG_MEASUREMENTS = (
    ("hr_bpm", "心率 HR", "次/分"),
    ("pr_ms", "PR 间期", "ms"),
    ("qrs_ms", "QRS 时限", "ms"),
    ("qt_ms", "QT 间期", "ms"),
    ("qtc_ms", "QTc", "ms"),
    ("p_axis_deg", "P 电轴", "°"),
    ("qrs_axis_deg", "QRS 电轴", "°"),
    ("t_axis_deg", "T 电轴", "°"),
)
#: The lab results table: key, Chinese and English heading, width in mm. The flag comes last.
LAB_COLUMNS = (
    ("code", "代码", "Code", 20),
    ("name", "项目", "Test", 48),
    ("value", "结果", "Result", 26),
    ("unit", "单位", "Unit", 22),
    ("reference_range", "参考范围", "Reference", 34),
    ("flag", "标志", "Flag", 24),
)

#: A free-text section of the report content: key, Chinese and English heading.
Section = tuple[str, str, str]
#: The sections most centres close with.
CLOSING: tuple[Section, ...] = (
    ("findings", "检查所见", "Findings"),
    ("impression", "诊断意见", "Impression"),
    ("recommendation", "建议", "Recommendation"),
)

MUTED_HEX = "#616e7c"
INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor(MUTED_HEX)
ACCENT = colors.HexColor("#1f3a5f")
RULE = colors.HexColor("#9aa5b1")
SHADE = colors.HexColor("#eef2f6")
RED = colors.HexColor("#c62828")
RED_SHADE = colors.HexColor("#fdecea")
AMBER = colors.HexColor("#8a5a00")
AMBER_SHADE = colors.HexColor("#fff4e0")

PAGE_W, PAGE_H = A4
MARGIN_X = 18 * mm
FRAME_W = PAGE_W - 2 * MARGIN_X
#: The width of a label column in the boxed label/value grids.
LABEL_W = 22 * mm

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _markup(s: _Styles, text: str) -> str:
    """User text as Paragraph markup: escaped, control characters dropped, newlines kept."""
    clean = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\t", "    "))
    return escape(clean.translate(s.substitutes)).replace("\n", "<br/>")


def _aside(text: str, size: str) -> str:
    """Paragraph markup for a smaller, muted aside (an English heading, a unit)."""
    return f'<font size="{size}" color="{MUTED_HEX}">{text}</font>'


def _str(content: Mapping[str, Any], key: str) -> str:
    value = content.get(key)
    return value.strip() if isinstance(value, str) else ""


def _dict(content: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = content.get(key)
    return value if isinstance(value, dict) else {}


def _results(content: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The lab results of the content, the well-formed ones."""
    value = content.get("results")
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _is_critical(result: Mapping[str, Any]) -> bool:
    return str(result.get("flag") or "").startswith("critical")


def _document_title(p: Printable) -> str:
    return f"{p.hospital} {p.centre_zh} {TITLES[p.centre][0]}"


# -- rendering --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Styles:
    body: ParagraphStyle
    small: ParagraphStyle
    label: ParagraphStyle
    cell: ParagraphStyle
    cell_center: ParagraphStyle
    heading: ParagraphStyle
    english: ParagraphStyle
    banner: ParagraphStyle
    amended: ParagraphStyle
    mono: ParagraphStyle
    note: ParagraphStyle
    substitutes: dict[int, str]


def _styles(fonts: Fonts) -> _Styles:
    base = ParagraphStyle(
        "body",
        fontName=fonts.body,
        fontSize=10,
        leading=15,
        textColor=INK,
        wordWrap="CJK",
    )
    cell = ParagraphStyle("cell", parent=base, fontSize=9, leading=12.5)
    return _Styles(
        body=base,
        small=ParagraphStyle("small", parent=base, fontSize=8, leading=11, textColor=MUTED),
        label=ParagraphStyle("label", parent=cell, fontSize=8, leading=10, textColor=MUTED),
        cell=cell,
        cell_center=ParagraphStyle("cell_center", parent=cell, alignment=TA_CENTER),
        heading=ParagraphStyle(
            "heading",
            parent=base,
            fontSize=11,
            leading=15,
            textColor=ACCENT,
            spaceBefore=9,
            spaceAfter=3,
        ),
        english=ParagraphStyle(
            "english", parent=base, fontSize=9, leading=12, textColor=MUTED, alignment=TA_CENTER
        ),
        banner=ParagraphStyle(
            "banner",
            parent=base,
            fontSize=10.5,
            leading=15,
            textColor=colors.white,
            backColor=RED,
            borderPadding=6,
            leftIndent=6,
            rightIndent=6,
            spaceBefore=10,
            spaceAfter=12,
        ),
        amended=ParagraphStyle(
            "amended",
            parent=base,
            fontSize=9.5,
            leading=13,
            textColor=AMBER,
            backColor=AMBER_SHADE,
            borderColor=AMBER,
            borderWidth=0.8,
            borderPadding=5,
            leftIndent=5,
            rightIndent=5,
            spaceBefore=8,
            spaceAfter=11,
        ),
        mono=ParagraphStyle("mono", parent=cell, fontName=fonts.mono, fontSize=8.5),
        note=ParagraphStyle("note", parent=base, fontSize=8, leading=11, textColor=MUTED),
        substitutes=fonts.substitutes,
    )


class _BoldLine(Flowable):
    """One centred line drawn filled and stroked: a bold face from a font that has none."""

    def __init__(self, text: str, font: str, size: float, color: colors.Color = INK) -> None:
        super().__init__()
        self.text, self.font, self.size, self.color = text, font, size, color

    def wrap(self, aW: float, aH: float) -> tuple[float, float]:
        self.width = aW
        return aW, self.size * 1.45

    def draw(self) -> None:
        c = self.canv
        c.saveState()
        c.setFillColor(self.color)
        c.setStrokeColor(self.color)
        c.setLineWidth(self.size * 0.035)
        text = c.beginText()
        text.setTextRenderMode(2)
        text.setFont(self.font, self.size)
        width = pdfmetrics.stringWidth(self.text, self.font, self.size)
        text.setTextOrigin((self.width - width) / 2, self.size * 0.35)
        text.textOut(self.text)
        c.drawText(text)
        c.restoreState()


def _heading(s: _Styles, zh: str, en: str) -> Paragraph:
    return Paragraph(f"{zh}　{_aside(escape(en), '8')}", s.heading)


def _prose(s: _Styles, zh: str, en: str, text: str) -> list[Flowable]:
    if not text:
        return []
    return [_heading(s, zh, en), Paragraph(_markup(s, text), s.body)]


def _sections(
    s: _Styles, content: Mapping[str, Any], sections: Iterable[Section]
) -> list[Flowable]:
    """The free-text sections that have text, each under its heading."""
    return [f for key, zh, en in sections for f in _prose(s, zh, en, _str(content, key))]


def _grid(
    s: _Styles,
    rows: list[list[Any]],
    widths: Sequence[float],
    *,
    header: bool = False,
    extra: Sequence[tuple[Any, ...]] = (),
) -> Table:
    table = Table(rows, colWidths=list(widths), repeatRows=1 if header else 0, hAlign="LEFT")
    style: list[tuple[Any, ...]] = [
        ("FONTNAME", (0, 0), (-1, -1), s.body.fontName),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    if header:
        style += [
            ("BACKGROUND", (0, 0), (-1, 0), SHADE),
            ("LINEABOVE", (0, 0), (-1, 0), 0.8, ACCENT),
            ("LINEBELOW", (0, 0), (-1, 0), 0.5, RULE),
            ("LINEBELOW", (0, -1), (-1, -1), 0.8, ACCENT),
        ]
    table.setStyle(TableStyle([*style, *extra]))
    return table


def _title(p: Printable, fonts: Fonts, s: _Styles) -> list[Flowable]:
    zh, en = TITLES[p.centre]
    return [
        _BoldLine(p.hospital, fonts.body, 20),
        _BoldLine(f"{p.centre_zh}　{zh}", fonts.body, 14.5, ACCENT),
        Paragraph(escape(f"{p.centre_en} {en}"), s.english),
        Spacer(1, 2 * mm),
        HRFlowable(width="100%", thickness=1.4, color=ACCENT, spaceBefore=0, spaceAfter=1),
        HRFlowable(width="100%", thickness=0.4, color=ACCENT, spaceBefore=0, spaceAfter=5),
    ]


def _label(s: _Styles, zh: str, en: str) -> Paragraph:
    return Paragraph(f'{zh}<br/><font size="6.5">{escape(en)}</font>', s.label)


def _value(s: _Styles, text: str) -> Paragraph:
    """User text in a grid cell, a dash when there is none."""
    return Paragraph(_markup(s, text) or "—", s.cell)


def _info_table(s: _Styles, rows: list[list[Any]]) -> Table:
    """Label/value pairs in a boxed grid spanning the frame, labels shaded."""
    pairs = len(rows[0]) // 2
    widths = [LABEL_W, FRAME_W / pairs - LABEL_W] * pairs
    shaded = [("BACKGROUND", (col, 0), (col, -1), SHADE) for col in range(0, len(widths), 2)]
    return _grid(
        s,
        rows,
        widths,
        extra=[
            ("BOX", (0, 0), (-1, -1), 0.6, RULE),
            ("INNERGRID", (0, 0), (-1, -1), 0.25, RULE),
            *shaded,
        ],
    )


def _patient_block(p: Printable, s: _Styles) -> list[Flowable]:
    signed_on = p.signed_at.astimezone(CHINA).date()
    rows = [
        [
            _label(s, "姓名", "Name"),
            _value(s, p.patient_name),
            _label(s, "性别", "Sex"),
            _value(s, SEX.get(p.patient_sex, str(p.patient_sex))),
            _label(s, "年龄", "Age"),
            _value(s, age_on(p.birth_date, signed_on)),
        ],
        [
            _label(s, "身份证号", "ID No."),
            _value(s, p.national_id_masked),
            _label(s, "会诊号", "Consult"),
            _value(s, p.short_id),
            _label(s, "紧急程度", "Priority"),
            _value(s, f"{PRIORITY.get(p.priority, '')} {p.priority.value}"),
        ],
        [
            _label(s, "申请机构", "Station"),
            _value(s, p.requester_institution),
            _label(s, "申请医生", "Doctor"),
            _value(s, p.requester_doctor),
            _label(s, "上级医院", "Escalated to"),
            _value(s, p.escalated_to),
        ],
        [
            _label(s, "申请时间", "Submitted"),
            _value(s, local_time(p.submitted_at)),
            _label(s, "报告时间", "Reported"),
            _value(s, local_time(p.signed_at)),
            _label(s, "报告版本", "Version"),
            _value(s, f"第 {p.version} 版" + ("（更正）" if p.version > 1 else "")),
        ],
    ]
    out: list[Flowable] = [_info_table(s, rows)]
    out += _prose(s, "申请目的", "Question", p.question.strip())
    out += _prose(s, "病情摘要", "Clinical summary", p.clinical_summary.strip())
    return out


def _banners(p: Printable, s: _Styles) -> list[Flowable]:
    out: list[Flowable] = []
    if p.critical:
        parts = [_markup(s, _str(p.content, "critical_note"))]
        items = [
            f"{r.get('name', '')} {r.get('value', '')} {r.get('unit', '')}".strip()
            for r in _results(p.content)
            if _is_critical(r)
        ]
        if items:
            parts.append("危急值项目：" + _markup(s, "；".join(items)))
        detail = "<br/>".join(x for x in parts if x)
        text = '<font size="12.5">危急值　CRITICAL VALUE</font>'
        out.append(Paragraph(text + (f"<br/>{detail}" if detail else ""), s.banner))
    if p.version > 1:
        out.append(
            Paragraph(
                f"更正报告 / Amended report — 本报告为第 {p.version} 版，"
                "替代此前签发的版本，请以本版为准。",
                s.amended,
            )
        )
    return out


# -- the body of each centre's report -------------------------------------------------------


def _imaging(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    rows = [
        [
            _label(s, "检查类型", "Modality"),
            _value(s, _str(c, "modality")),
            _label(s, "检查部位", "Body part"),
            _value(s, _str(c, "body_part")),
        ]
    ]
    return [
        Spacer(1, 3 * mm),
        _info_table(s, rows),
        *_sections(s, c, [("technique", "检查方法", "Technique"), *CLOSING]),
    ]


def _ecg(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    m = _dict(c, "measurements")
    out: list[Flowable] = []
    if any(m.get(key) is not None for key, _, _ in ECG_MEASUREMENTS):
        formula = QTC_FORMULAS.get(str(m.get("qtc_formula") or ""), "")
        head = [
            Paragraph(
                f"{zh}{f' ({formula})' if key == 'qtc_ms' and formula else ''}"
                f"<br/>{_aside(unit, '7')}",
                s.cell_center,
            )
            for key, zh, unit in ECG_MEASUREMENTS
        ]
        values = [
            Paragraph(escape(str(m[key])) if m.get(key) is not None else "—", s.cell_center)
            for key, _, _ in ECG_MEASUREMENTS
        ]
        width = FRAME_W / len(ECG_MEASUREMENTS)
        out += [
            _heading(s, "测量值", "Measurements"),
            _grid(s, [head, values], [width] * len(ECG_MEASUREMENTS), header=True),
        ]
    statements = [x.strip() for x in c.get("rhythm_statements") or [] if isinstance(x, str)]
    statements = [x for x in statements if x]
    if statements:
        out.append(_heading(s, "心电图诊断", "Interpretation"))
        out += [
            Paragraph(f"{n}. {_markup(s, x)}", s.body) for n, x in enumerate(statements, start=1)
        ]
    return out + _sections(s, c, CLOSING)


def _lab(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    results = _results(c)
    out: list[Flowable] = [_heading(s, "检验结果", "Results")]
    if not results:
        out.append(Paragraph("无检验结果 No results", s.small))
    else:
        red_cell = ParagraphStyle("red_cell", parent=s.cell, textColor=RED)
        red_center = ParagraphStyle("red_center", parent=s.cell_center, textColor=RED)
        head = [Paragraph(f"{zh}<br/>{_aside(en, '7')}", s.cell) for _, zh, en, _ in LAB_COLUMNS]
        rows: list[list[Any]] = [head]
        extra: list[tuple[Any, ...]] = []
        for n, r in enumerate(results, start=1):
            flag = str(r.get("flag") or "normal")
            critical = _is_critical(r)
            cell, center = (red_cell, red_center) if critical else (s.cell, s.cell_center)
            row = [
                Paragraph(_markup(s, str(r.get(key) or "")), center if key == "value" else cell)
                for key, _, _, _ in LAB_COLUMNS[:-1]
            ]
            rows.append([*row, Paragraph(escape(FLAGS.get(flag, flag)), cell)])
            if critical:
                extra.append(("BACKGROUND", (0, n), (-1, n), RED_SHADE))
            elif n % 2 == 0:
                extra.append(("BACKGROUND", (0, n), (-1, n), colors.HexColor("#f8fafc")))
        widths = [mm * w for _, _, _, w in LAB_COLUMNS]
        extra.append(("LINEBELOW", (0, 1), (-1, -2), 0.25, RULE))
        out.append(_grid(s, rows, widths, header=True, extra=extra))
    return out + _sections(s, c, CLOSING)


def _consultation(p: Printable, s: _Styles) -> list[Flowable]:
    return _sections(
        s,
        p.content,
        (
            ("findings", "会诊所见", "Findings"),
            ("assessment", "病情评估", "Assessment"),
            ("impression", "诊断意见", "Impression"),
            ("plan", "处理方案", "Plan"),
            ("recommendation", "建议", "Recommendation"),
        ),
    )


def _pathology(p: Printable, s: _Styles) -> list[Flowable]:
    return _sections(
        s,
        p.content,
        (
            ("specimen", "标本", "Specimen"),
            ("gross", "大体所见", "Gross"),
            ("microscopic", "镜下所见", "Microscopic"),
            ("diagnosis", "病理诊断", "Diagnosis"),
            *CLOSING,
        ),
    )


BODIES: dict[Centre, Callable[[Printable, _Styles], list[Flowable]]] = {
    Centre.IMAGING: _imaging,
    Centre.ECG: _ecg,
    Centre.LAB: _lab,
    Centre.CONSULTATION: _consultation,
    Centre.PATHOLOGY: _pathology,
}


# -- referral, signature, pages ---------------------------------------------------------------


def _referral(p: Printable, s: _Styles) -> list[Flowable]:
    r = _dict(p.content, "referral")
    direction = str(r.get("direction") or "none")
    parts = [escape(REFERRAL.get(direction, direction))]
    if r.get("green_channel") is True:
        parts.append('<font color="#c62828">绿色通道 Green channel</font>')
    text = "；".join(parts)
    note = _str(r, "note")
    if note:
        text += "<br/>" + _markup(s, note)
    return [_heading(s, "转诊建议", "Referral"), Paragraph(text, s.body)]


def _signature(p: Printable, s: _Styles) -> list[Flowable]:
    def val(text: str) -> Paragraph:
        return Paragraph(text, s.cell)

    signer = _markup(s, p.signer) + (
        f"（{_markup(s, p.signer_institution)}）" if p.signer_institution else ""
    )
    version = f"第 {p.version} 版" + ("　更正报告 / amended" if p.version > 1 else "")
    rows: list[list[Any]] = [
        [
            _label(s, "签发医生", "Signed by"),
            val(signer),
            _label(s, "签发时间", "Signed at"),
            val(
                f"{local_time(p.signed_at, seconds=True)}<br/>"
                + _aside("北京时间 Asia/Shanghai (UTC+08:00)", "7")
            ),
        ],
        [
            _label(s, "报告版本", "Version"),
            val(version),
            _label(s, "报告状态", "State"),
            val("已签发 Signed"),
        ],
        [_label(s, "SHA-256", "digest"), Paragraph(p.sha256, s.mono), Spacer(0, 0), Spacer(0, 0)],
    ]
    table = _info_table(s, rows)
    table.setStyle(
        TableStyle([("SPAN", (1, 2), (3, 2)), ("BACKGROUND", (1, 2), (3, 2), colors.white)])
    )
    note = (
        "本报告经电子签发，仅供临床参考。SHA-256 为所签发内容（规范形式）的摘要，"
        "可在会诊系统中核对本打印件。This report was signed electronically; the SHA-256 "
        "identifies the signed content and can be checked against the system."
    )
    return [
        Spacer(1, 5 * mm),
        KeepTogether([table, Spacer(1, 2 * mm), Paragraph(note, s.note)]),
    ]


class _PagedCanvas(Canvas):
    """Holds every page back until the end, so each can say 第 N 页 / 共 M 页."""

    def __init__(
        self, *args: Any, decorate: Callable[[Canvas, int, int], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._decorate = decorate
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()  # type: ignore[attr-defined]  # ReportLab's, not in the stubs

    def save(self) -> None:
        total = len(self._pages)
        for number, state in enumerate(self._pages, start=1):
            self.__dict__.update(state)
            self._decorate(self, number, total)
            super().showPage()
        super().save()


def _clip(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decorate(c: Canvas, number: int, total: int, *, p: Printable, fonts: Fonts) -> None:
    """The running header (from page 2) and the footer of every page."""
    left, right = MARGIN_X, PAGE_W - MARGIN_X
    c.saveState()
    c.setFillColor(MUTED)
    c.setStrokeColor(RULE)
    c.setLineWidth(0.5)
    if number > 1:
        top = PAGE_H - 12 * mm
        c.setFont(fonts.body, 8.5)
        c.drawString(left, top, f"{_document_title(p)}（续）")
        c.drawRightString(
            right, top, f"{_clip(p.patient_name)} · 会诊号 {p.short_id} · 第 {p.version} 版"
        )
        c.line(left, top - 2.5 * mm, right, top - 2.5 * mm)
    c.line(left, 17 * mm, right, 17 * mm)
    c.setFont(fonts.body, 7.5)
    signed = f"签发医生 {_clip(p.signer)} · 签发时间 {local_time(p.signed_at)}（北京时间）"
    signed += f" · 第 {p.version} 版"
    if p.version > 1:
        signed += " · 更正报告 / amended"
    c.drawString(left, 12.5 * mm, signed)
    c.setFont(fonts.body, 8.5)
    c.setFillColor(INK)
    c.drawRightString(right, 12.5 * mm, f"第 {number} 页 / 共 {total} 页")
    c.setFillColor(MUTED)
    c.setFont(fonts.mono, 6.5)
    c.drawString(left, 8.5 * mm, f"SHA-256 {p.sha256}")
    c.setFont(fonts.body, 7.5)
    c.drawRightString(right, 8.5 * mm, f"会诊号 {p.short_id}")
    c.restoreState()


def render(p: Printable, fonts: Fonts | None = None) -> bytes:
    """The PDF of one signed report. Blocking (ReportLab): call it in a worker thread."""
    fonts = fonts or load_fonts()
    s = _styles(fonts)
    buf = BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=20 * mm,
        bottomMargin=22 * mm,
        title=_document_title(p),
        author=p.signer,
        subject=f"{p.filename} SHA-256 {p.sha256}",
        creator="Huizhen 会诊",
        lang="zh-CN",
        initialFontName=fonts.body,
    )
    story: list[Flowable] = [
        *_title(p, fonts, s),
        *_banners(p, s),
        *_patient_block(p, s),
        *BODIES[p.centre](p, s),
        *_referral(p, s),
        *_signature(p, s),
    ]
    maker = functools.partial(_PagedCanvas, decorate=functools.partial(_decorate, p=p, fonts=fonts))
    doc.build(story, canvasmaker=maker)
    return buf.getvalue()
