"""Signed reports as printable PDFs: A4, laid out the way a county hospital prints a report.

``GET /api/v1/reports/{id}/pdf`` gathers what the printout shows (the hospital and centre, the
patient with the national ID masked, the request, the centre's structured content, the signer,
the signing time in Beijing time and the SHA-256 of the signed canonical form) and renders it with
ReportLab in a worker thread. Only a signed report exports; drafts stay inside the centre.

Chinese text is drawn with a CJK TrueType font from the system, embedded as a subset so that the
file shows the same on any viewer and its text can be copied and searched. ReportLab reads
TrueType outlines only: Noto Sans CJK (Debian's ``fonts-noto-cjk``) has PostScript (CFF) outlines
and is refused today, so WenQuanYi Micro Hei (``fonts-wqy-microhei``) is what a Debian machine
uses. Without any of them the PDF falls back to the built-in CID font ``STSong-Light``, which is
not embedded (the viewer supplies a Song face). Nothing is fetched at run time.
"""

from __future__ import annotations

import asyncio
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

from aiohttp import web
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
from sqlalchemy import select

from server.audit import Entry
from server.consultflow import Priority
from server.consults import load_consult
from server.directory import CENTRE_NAMES
from server.identity import mask_national_id
from server.models import (
    Centre,
    CentreSite,
    Consult,
    Institution,
    Patient,
    Report,
    ReportState,
    Sex,
    User,
)
from server.policy import Action, can_work_on
from server.problems import Conflict, NotFound
from server.routing import Call, Router

log = logging.getLogger(__name__)

router = Router()

# -- fonts ----------------------------------------------------------------------------------

#: CJK fonts tried in order: (file, face index in a collection). Noto Sans CJK SC is face 2 of
#: the collection (JP, KR, SC, TC, HK, then the Mono faces); ReportLab refuses its CFF outlines
#: today, and would use it the day it reads them.
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

INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#616e7c")
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

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _markup(s: _Styles, text: str) -> str:
    """User text as Paragraph markup: escaped, control characters dropped, newlines kept."""
    clean = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\t", "    "))
    return escape(clean.translate(s.substitutes)).replace("\n", "<br/>")


def _str(content: Mapping[str, Any], key: str) -> str:
    value = content.get(key)
    return value.strip() if isinstance(value, str) else ""


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
    return Paragraph(f'{zh}　<font size="8" color="#616e7c">{escape(en)}</font>', s.heading)


def _prose(s: _Styles, zh: str, en: str, text: str) -> list[Flowable]:
    if not text:
        return []
    return [_heading(s, zh, en), Paragraph(_markup(s, text), s.body)]


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


def _info_table(s: _Styles, rows: list[list[Any]], widths: Sequence[float]) -> Table:
    """Label/value pairs in a boxed grid, labels shaded."""
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
    def val(text: str) -> Paragraph:
        return Paragraph(_markup(s, text) or "—", s.cell)

    signed_on = p.signed_at.astimezone(CHINA).date()
    rows = [
        [
            _label(s, "姓名", "Name"),
            val(p.patient_name),
            _label(s, "性别", "Sex"),
            val(SEX.get(p.patient_sex, str(p.patient_sex))),
            _label(s, "年龄", "Age"),
            val(age_on(p.birth_date, signed_on)),
        ],
        [
            _label(s, "身份证号", "ID No."),
            val(p.national_id_masked),
            _label(s, "会诊号", "Consult"),
            val(p.short_id),
            _label(s, "紧急程度", "Priority"),
            val(f"{PRIORITY.get(p.priority, '')} {p.priority.value}"),
        ],
        [
            _label(s, "申请机构", "Station"),
            val(p.requester_institution),
            _label(s, "申请医生", "Doctor"),
            val(p.requester_doctor),
            _label(s, "上级医院", "Escalated to"),
            val(p.escalated_to),
        ],
        [
            _label(s, "申请时间", "Submitted"),
            val(local_time(p.submitted_at)),
            _label(s, "报告时间", "Reported"),
            val(local_time(p.signed_at)),
            _label(s, "报告版本", "Version"),
            val(f"第 {p.version} 版" + ("（更正）" if p.version > 1 else "")),
        ],
    ]
    label_w, value_w = 22 * mm, FRAME_W / 3 - 22 * mm
    out: list[Flowable] = [_info_table(s, rows, [label_w, value_w] * 3)]
    out += _prose(s, "申请目的", "Question", p.question.strip())
    out += _prose(s, "病情摘要", "Clinical summary", p.clinical_summary.strip())
    return out


def _banners(p: Printable, s: _Styles) -> list[Flowable]:
    out: list[Flowable] = []
    if p.critical:
        parts = [_markup(s, _str(p.content, "critical_note"))]
        results = p.content.get("results")
        if isinstance(results, list):
            items = [
                f"{r.get('name', '')} {r.get('value', '')} {r.get('unit', '')}".strip()
                for r in results
                if isinstance(r, dict) and str(r.get("flag", "")).startswith("critical")
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


def _imaging(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    rows = [
        [
            _label(s, "检查类型", "Modality"),
            Paragraph(_markup(s, _str(c, "modality")) or "—", s.cell),
            _label(s, "检查部位", "Body part"),
            Paragraph(_markup(s, _str(c, "body_part")) or "—", s.cell),
        ]
    ]
    return [
        Spacer(1, 3 * mm),
        _info_table(s, rows, [22 * mm, FRAME_W / 2 - 22 * mm] * 2),
        *_prose(s, "检查方法", "Technique", _str(c, "technique")),
        *_prose(s, "检查所见", "Findings", _str(c, "findings")),
        *_prose(s, "诊断意见", "Impression", _str(c, "impression")),
        *_prose(s, "建议", "Recommendation", _str(c, "recommendation")),
    ]


def _ecg(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    raw = c.get("measurements")
    m: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    out: list[Flowable] = []
    if any(m.get(key) is not None for key, _, _ in ECG_MEASUREMENTS):
        formula = QTC_FORMULAS.get(str(m.get("qtc_formula") or ""), "")
        head = [
            Paragraph(
                f"{zh}{f' ({formula})' if key == 'qtc_ms' and formula else ''}"
                f'<br/><font size="7" color="#616e7c">{unit}</font>',
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
    out += _prose(s, "检查所见", "Findings", _str(c, "findings"))
    out += _prose(s, "诊断意见", "Impression", _str(c, "impression"))
    out += _prose(s, "建议", "Recommendation", _str(c, "recommendation"))
    return out


def _lab(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    results = [r for r in c.get("results") or [] if isinstance(r, dict)]
    out: list[Flowable] = [_heading(s, "检验结果", "Results")]
    if not results:
        out.append(Paragraph("无检验结果 No results", s.small))
    else:
        red_cell = ParagraphStyle("red_cell", parent=s.cell, textColor=RED)
        red_center = ParagraphStyle("red_center", parent=s.cell_center, textColor=RED)
        head = [
            Paragraph(f'{zh}<br/><font size="7" color="#616e7c">{en}</font>', s.cell)
            for zh, en in (
                ("代码", "Code"),
                ("项目", "Test"),
                ("结果", "Result"),
                ("单位", "Unit"),
                ("参考范围", "Reference"),
                ("标志", "Flag"),
            )
        ]
        rows: list[list[Any]] = [head]
        extra: list[tuple[Any, ...]] = []
        for n, r in enumerate(results, start=1):
            flag = str(r.get("flag") or "normal")
            critical = flag.startswith("critical")
            cell, center = (red_cell, red_center) if critical else (s.cell, s.cell_center)
            rows.append(
                [
                    Paragraph(_markup(s, str(r.get("code") or "")), cell),
                    Paragraph(_markup(s, str(r.get("name") or "")), cell),
                    Paragraph(_markup(s, str(r.get("value") or "")), center),
                    Paragraph(_markup(s, str(r.get("unit") or "")), cell),
                    Paragraph(_markup(s, str(r.get("reference_range") or "")), cell),
                    Paragraph(escape(FLAGS.get(flag, flag)), cell),
                ]
            )
            if critical:
                extra.append(("BACKGROUND", (0, n), (-1, n), RED_SHADE))
            elif n % 2 == 0:
                extra.append(("BACKGROUND", (0, n), (-1, n), colors.HexColor("#f8fafc")))
        widths = [mm * w for w in (20, 48, 26, 22, 34, 24)]
        extra.append(("LINEBELOW", (0, 1), (-1, -2), 0.25, RULE))
        out.append(_grid(s, rows, widths, header=True, extra=extra))
    out += _prose(s, "检查所见", "Findings", _str(c, "findings"))
    out += _prose(s, "诊断意见", "Impression", _str(c, "impression"))
    out += _prose(s, "建议", "Recommendation", _str(c, "recommendation"))
    return out


def _consultation(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    return [
        *_prose(s, "会诊所见", "Findings", _str(c, "findings")),
        *_prose(s, "病情评估", "Assessment", _str(c, "assessment")),
        *_prose(s, "诊断意见", "Impression", _str(c, "impression")),
        *_prose(s, "处理方案", "Plan", _str(c, "plan")),
        *_prose(s, "建议", "Recommendation", _str(c, "recommendation")),
    ]


def _pathology(p: Printable, s: _Styles) -> list[Flowable]:
    c = p.content
    return [
        *_prose(s, "标本", "Specimen", _str(c, "specimen")),
        *_prose(s, "大体所见", "Gross", _str(c, "gross")),
        *_prose(s, "镜下所见", "Microscopic", _str(c, "microscopic")),
        *_prose(s, "病理诊断", "Diagnosis", _str(c, "diagnosis")),
        *_prose(s, "检查所见", "Findings", _str(c, "findings")),
        *_prose(s, "诊断意见", "Impression", _str(c, "impression")),
        *_prose(s, "建议", "Recommendation", _str(c, "recommendation")),
    ]


BODIES: dict[Centre, Callable[[Printable, _Styles], list[Flowable]]] = {
    Centre.IMAGING: _imaging,
    Centre.ECG: _ecg,
    Centre.LAB: _lab,
    Centre.CONSULTATION: _consultation,
    Centre.PATHOLOGY: _pathology,
}


def _referral(p: Printable, s: _Styles) -> list[Flowable]:
    raw = p.content.get("referral")
    r: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
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
                '<font size="7" color="#616e7c">北京时间 Asia/Shanghai (UTC+08:00)</font>'
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
    table = _info_table(s, rows, [22 * mm, FRAME_W / 2 - 22 * mm] * 2)
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
    zh, _ = TITLES[p.centre]
    left, right = MARGIN_X, PAGE_W - MARGIN_X
    c.saveState()
    c.setFillColor(MUTED)
    c.setStrokeColor(RULE)
    c.setLineWidth(0.5)
    if number > 1:
        top = PAGE_H - 12 * mm
        c.setFont(fonts.body, 8.5)
        c.drawString(left, top, f"{p.hospital} {p.centre_zh} {zh}（续）")
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
    zh, _ = TITLES[p.centre]
    buf = BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=20 * mm,
        bottomMargin=22 * mm,
        title=f"{p.hospital} {p.centre_zh} {zh}",
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


# -- the route --------------------------------------------------------------------------------


async def _printable(
    call: Call[Any, Any], report: Report, consult: Consult, patient: Patient
) -> Printable:
    assert report.signed_at is not None
    assert report.signed_by_user_id is not None
    assert report.sha256 is not None
    site = (
        await call.session.execute(
            select(CentreSite.name_zh, CentreSite.name_en, Institution.name_zh)
            .join(Institution, Institution.id == CentreSite.institution_id)
            .where(CentreSite.code == consult.centre)
        )
    ).first()
    centre_zh, centre_en = CENTRE_NAMES[consult.centre]
    hospital = ""
    if site is not None:
        centre_zh, centre_en, hospital = site[0], site[1], site[2]
    users = {
        row.id: row
        for row in await call.session.execute(
            select(User.id, User.display_name, User.institution_id).where(
                User.id.in_({consult.requester_user_id, report.signed_by_user_id})
            )
        )
    }
    signer = users.get(report.signed_by_user_id)
    requester = users.get(consult.requester_user_id)
    wanted = {consult.requester_institution_id, consult.escalated_to_institution_id}
    if signer is not None:
        wanted.add(signer.institution_id)
    names = {
        row.id: row.name_zh
        for row in await call.session.execute(
            select(Institution.id, Institution.name_zh).where(
                Institution.id.in_({i for i in wanted if i is not None})
            )
        )
    }
    escalated = consult.escalated_to_institution_id
    return Printable(
        hospital=hospital,
        centre=consult.centre,
        centre_zh=centre_zh,
        centre_en=centre_en,
        consult_id=consult.id,
        priority=consult.priority,
        question=consult.question,
        clinical_summary=consult.clinical_summary,
        requester_institution=names.get(consult.requester_institution_id, ""),
        requester_doctor=requester.display_name if requester else "",
        escalated_to=names.get(escalated, "") if escalated else "",
        submitted_at=consult.submitted_at,
        patient_name=patient.name,
        patient_sex=patient.sex,
        birth_date=patient.birth_date,
        national_id_masked=mask_national_id(patient.national_id),
        version=report.version,
        content=report.content,
        critical=report.critical,
        signer=signer.display_name if signer else str(report.signed_by_user_id)[:8],
        signer_institution=names.get(signer.institution_id, "") if signer else "",
        signed_at=report.signed_at,
        sha256=report.sha256,
    )


@router.route(
    "GET",
    "/api/v1/reports/{report_id}/pdf",
    action=Action.CONSULT_READ,
    summary="A signed report as a printable PDF (A4, Chinese text embedded)",
    tags=["reports"],
    errors=[409],
    produces="application/pdf",
)
async def report_pdf(call: Call[None, None]) -> web.Response:
    """Answers ``application/pdf`` (inline, named ``report-<consult>-v<version>.pdf``) with the
    patient's national ID masked, times in Beijing time, and the SHA-256 of the signed form on
    every page. Only a signed report exports: a draft is 409 (and 404 outside its centre)."""
    report = await call.session.get(Report, call.path["report_id"])
    if report is None:
        raise NotFound("no such report")
    consult, patient = await load_consult(call, report.consult_id)
    if report.state is ReportState.DRAFT:
        if not can_work_on(call.principal, consult):
            raise NotFound("no such report")  # drafts stay inside the centre
        raise Conflict(
            "only a signed report exports as PDF; sign this draft first",
            report_state=report.state.value,
        )
    printable = await _printable(call, report, consult, patient)
    await call.audit(
        Entry(
            action="report.pdf",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    pdf = await asyncio.to_thread(render, printable)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{printable.filename}"'},
    )
