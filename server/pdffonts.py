"""The fonts of a report printout (``server.printout``): which to draw Chinese text with.

Chinese text is drawn with a CJK TrueType font from the system, embedded as a subset so that the
file shows the same on any viewer and its text can be copied and searched. ReportLab reads
TrueType outlines only: Noto Sans CJK (Debian's ``fonts-noto-cjk``) has PostScript (CFF) outlines
and is refused today, so WenQuanYi Micro Hei (``fonts-wqy-microhei``) is what a Debian machine
uses. Without any of them the PDF falls back to the built-in CID font ``STSong-Light``, which is
not embedded (the viewer supplies a Song face). Nothing is fetched at run time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFError, TTFont

log = logging.getLogger(__name__)

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
