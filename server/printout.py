"""A signed report laid out as a printout: an A4 PDF the way a county hospital prints a report.

:func:`render` takes a :class:`Printable` (everything the page shows, already read from the
database, the national ID already masked) and returns the PDF's bytes. Nothing here knows about
HTTP or the database: ``server.reportpdf`` gathers the data and serves the file.

The fonts and their fallback chain are in ``server.pdffonts``; the :class:`Printable`, its labels
and its times and ages are in ``server.printable``.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
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

from server.models import Centre
from server.pdffonts import Fonts, load_fonts
from server.printable import (
    CHINA,
    ECG_MEASUREMENTS,
    FLAGS,
    LAB_COLUMNS,
    PRIORITY,
    QTC_FORMULAS,
    REFERRAL,
    SECTIONS,
    SEX,
    TITLES,
    Printable,
    Section,
    age_on,
    local_time,
)

# -- look -------------------------------------------------------------------------------------

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
        *_sections(s, c, SECTIONS[p.centre]),
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
    return out + _sections(s, c, SECTIONS[p.centre])


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
    return out + _sections(s, c, SECTIONS[p.centre])


def _free_text(p: Printable, s: _Styles) -> list[Flowable]:
    """A report that is free text only (consultation, pathology): its sections."""
    return _sections(s, p.content, SECTIONS[p.centre])


BODIES: dict[Centre, Callable[[Printable, _Styles], list[Flowable]]] = {
    Centre.IMAGING: _imaging,
    Centre.ECG: _ecg,
    Centre.LAB: _lab,
    Centre.CONSULTATION: _free_text,
    Centre.PATHOLOGY: _free_text,
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
    with _BUILDING:  # reportlab's embedded TrueType faces are shared and subset unsafely
        doc.build(story, canvasmaker=maker)
    return buf.getvalue()


#: One PDF built at a time: concurrent builds corrupt the shared font subsets (IndexError in
#: reportlab's makeSubset, seen with four exports at once).
_BUILDING = threading.Lock()
