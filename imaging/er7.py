"""ER7, the pipe-and-hat encoding of HL7 v2: separators, segments, escapes, character sets.

The message-independent layer under :mod:`imaging.hl7v2`:

* Separators come from MSH-1 (field) and MSH-2 (component, repetition, escape, subcomponent),
  whatever they are. Segments end with ``\\r``; ``\\r\\n`` and ``\\n`` are tolerated (a message
  with any ``\\r`` is split on ``\\r`` only, so a stray newline inside a text field stays text).
* The character set is MSH-18 (table 0211: ``ASCII``, ``8859/1``, ``UNICODE UTF-8``,
  ``GB 18030-2000`` and the spellings Chinese systems use: ``UTF-8``, ``GB18030``, ``GBK``,
  ``GB2312``). Bytes are decoded as a whole before splitting, because a GB18030 character can
  hold the byte of ``|`` or ``\\``. Without MSH-18: UTF-8, else GB18030.
* Escapes: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, ``\\Xhh..\\`` (bytes in the message's character
  set), ``\\.br\\`` and ``\\.sp\\`` as newlines; other formatting and highlighting commands are
  dropped; an unknown escape stays as written.
* Times (DTM) without an offset are local times in the zone given.

Errors are :class:`Hl7Error`: a code and a place (segment, position, field), never a value.
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HL7_CODES",
    "AckCode",
    "Delimiters",
    "Hl7Error",
    "Hl7ErrorCode",
    "Segment",
    "codec_for",
    "escape",
    "first_line",
    "first_text_line",
    "msh18",
    "prepare",
    "split_lines",
    "timestamp",
]

AckCode = Literal["AA", "AE", "AR"]

Hl7ErrorCode = Literal[
    "not-hl7",  # not an ER7 message at all
    "missing-msh",  # segments, but the first one is not MSH
    "batch-unsupported",  # FHS/BHS batches
    "bad-delimiters",  # MSH-1/MSH-2 unusable
    "unsupported-charset",  # MSH-18 names a character set we do not know
    "bad-charset",  # the bytes do not decode in the declared character set
    "wrong-message-type",  # MSH-9 is not ORU^R01
    "missing-field",  # a required field is empty
    "bad-segment",  # a line that is not a segment
    "segment-sequence",  # a segment out of place (second MSH or PID, ORC without OBR)
    "obx-without-obr",
    "missing-segment",  # no OBR at all
    "bad-numeric",  # NM or SN value that is not a number
    "bad-timestamp",
    "bad-escape",
    "too-large",
    "too-many-segments",
]

# HL7 table 0357 (message error condition codes) and the acknowledgement code for each error:
# AR, "rejected", when the message as a whole cannot be taken; AE for errors in its content.
HL7_CODES: dict[str, tuple[str, str, AckCode]] = {
    "not-hl7": ("100", "Segment sequence error", "AR"),
    "missing-msh": ("100", "Segment sequence error", "AR"),
    "batch-unsupported": ("200", "Unsupported message type", "AR"),
    "bad-delimiters": ("102", "Data type error", "AR"),
    "unsupported-charset": ("103", "Table value not found", "AR"),
    "bad-charset": ("102", "Data type error", "AE"),
    "wrong-message-type": ("200", "Unsupported message type", "AR"),
    "missing-field": ("101", "Required field missing", "AE"),
    "bad-segment": ("100", "Segment sequence error", "AE"),
    "segment-sequence": ("100", "Segment sequence error", "AE"),
    "obx-without-obr": ("100", "Segment sequence error", "AE"),
    "missing-segment": ("100", "Segment sequence error", "AE"),
    "bad-numeric": ("102", "Data type error", "AE"),
    "bad-timestamp": ("102", "Data type error", "AE"),
    "bad-escape": ("102", "Data type error", "AE"),
    "too-large": ("207", "Application internal error", "AR"),
    "too-many-segments": ("207", "Application internal error", "AR"),
}


class Hl7Error(Exception):
    """A message refused: why (``code``), and where (segment name, its 1-based position in the
    message, field number), never what the value was."""

    def __init__(
        self,
        code: Hl7ErrorCode,
        segment: str | None = None,
        field: int | None = None,
        *,
        sequence: int | None = None,
    ) -> None:
        where = segment or ""
        if field is not None:
            where += f"-{field}"
        super().__init__(f"{code} at {where}" if where else code)
        self.code: Hl7ErrorCode = code
        self.segment = segment
        self.field = field
        self.sequence = sequence  # position of the segment in the message, MSH = 1

    @property
    def ack_code(self) -> AckCode:
        return HL7_CODES[self.code][2]

    @property
    def hl7_code(self) -> str:
        """HL7 table 0357 error condition code, for ERR-3."""
        return HL7_CODES[self.code][0]


# Table 0211 and what Chinese systems write instead, compared without spaces, '-', '_' or '/'.
_CHARSETS = {
    "ASCII": "ascii",
    "USASCII": "ascii",
    "88591": "latin-1",
    "ISO88591": "latin-1",
    "UNICODE": "utf-8",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "GB18030": "gb18030",
    "GB180302000": "gb18030",
    "GB180302005": "gb18030",
    "GB180302022": "gb18030",
    "GBK": "gb18030",  # GB18030 is a superset of GBK and GB2312
    "GB2312": "gb18030",
    "CP936": "gb18030",
    "BIG5": "big5",
}
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_LOOKS_LIKE_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}[^A-Za-z0-9\s]")
_DTM = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?"
)


def codec_for(name: str) -> str | None:
    key = re.sub(r"[\s\-_/]", "", name).upper()
    return _CHARSETS.get(key)


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str

    @classmethod
    def read(cls, text: str) -> Delimiters:
        """From the start of an MSH segment: ``MSH|^~\\&|...``."""
        if len(text) < 4:
            raise Hl7Error("bad-delimiters", "MSH", 1, sequence=1)
        fs = text[3]
        end = text.find(fs, 4)
        enc = text[4:] if end < 0 else text[4:end]
        # MSH-2 is component, repetition, escape, subcomponent (and in v2.7 truncation); a
        # shorter MSH-2 leaves the missing ones unused.
        chars = [fs, *enc[:5]]
        if (
            fs.isalnum()
            or fs.isspace()
            or not enc
            or any(c.isalnum() or c.isspace() for c in chars)
            or len(set(chars)) != len(chars)
        ):
            raise Hl7Error("bad-delimiters", "MSH", 2, sequence=1)
        padded = (enc + "\0\0\0\0")[:4]
        return cls(fs, *(c if c != "\0" else "" for c in padded))


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if sep else [text]


@dataclass(slots=True)
class Segment:
    name: str
    fields: list[str]  # index = HL7 field number; for MSH, fields[1] is MSH-1
    sequence: int
    d: Delimiters
    codec: str

    @classmethod
    def parse(cls, line: str, sequence: int, d: Delimiters, codec: str) -> Segment:
        name = line[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != d.field):
            raise Hl7Error("bad-segment", sequence=sequence)
        parts = line.split(d.field)
        if name == "MSH":
            parts = ["MSH", d.field, *parts[1:]]
        return cls(name, parts, sequence, d, codec)

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        raw = self.raw(n)
        return _split(raw, self.d.repetition) if raw else []

    def text(self, n: int, rep: str | None = None) -> str:
        """The whole field (or one repetition), unescaped, separators inside it kept as text."""
        return self.unescape(self.raw(n) if rep is None else rep, n)

    def comp(self, n: int, c: int = 1, rep: str | None = None, sub: int = 1) -> str:
        """Component ``c`` (1-based), subcomponent ``sub``, of the first repetition or ``rep``."""
        if rep is None:
            reps = self.reps(n)
            rep = reps[0] if reps else ""
        comps = _split(rep, self.d.component)
        if c > len(comps):
            return ""
        subs = _split(comps[c - 1], self.d.subcomponent)
        return self.unescape(subs[sub - 1], n) if sub <= len(subs) else ""

    def error(self, code: Hl7ErrorCode, n: int | None = None) -> Hl7Error:
        return Hl7Error(code, self.name, n, sequence=self.sequence)

    def unescape(self, text: str, n: int) -> str:
        esc = self.d.escape
        if not esc or esc not in text:
            return text
        out: list[str] = []
        i = 0
        while (start := text.find(esc, i)) >= 0:
            end = text.find(esc, start + 1)
            if end < 0:
                break
            out.append(text[i:start])
            out.append(self._sequence(text[start + 1 : end], n, text[start : end + 1]))
            i = end + 1
        out.append(text[i:])
        return "".join(out)

    def _sequence(self, body: str, n: int, literal: str) -> str:
        d = self.d
        simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition}
        if body in simple:
            return simple[body]
        if body == "E":
            return d.escape
        if body == ".br":
            return "\n"
        if body.startswith(".sp"):
            count = body[3:].strip().lstrip("+")
            return "\n" * (int(count) if count.isdigit() and len(count) <= 2 else 1)
        if body.startswith("X"):
            try:
                return binascii.unhexlify(body[1:]).decode(self.codec)
            except ValueError as exc:  # odd length, not hex, not in the character set
                raise self.error("bad-escape", n) from exc
        if body in ("H", "N") or body[:1] in ("C", "M", "Z") or body[:3] in _FORMATTING:
            return ""
        return literal


_FORMATTING = frozenset({".fi", ".nf", ".in", ".ti", ".sk", ".ce"})


# -- bytes to text ---------------------------------------------------------------------------


def first_line(data: bytes) -> bytes:
    ends = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    return data[: min(ends)] if ends else data


def first_text_line(text: str) -> str:
    return re.split(r"[\r\n]", text.lstrip("\ufeff \t\r\n"), maxsplit=1)[0]


def msh18(line: str) -> str:
    """MSH-18 (first repetition, first component) of an MSH line, best effort."""
    if len(line) < 8 or not line.startswith("MSH"):
        return ""
    fs = line[3]
    parts = line.split(fs)
    if len(parts) < 18:
        return ""
    value = parts[17]
    enc = parts[1]
    for sep in enc[:2]:  # component, repetition
        if sep:
            value = value.split(sep)[0]
    return value.strip()


def _detect_codec(data: bytes) -> tuple[str, str]:
    """The Python codec to read the message with, and MSH-18 as declared."""
    line = first_line(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    declared = msh18(line.decode("latin-1"))
    codec = codec_for(declared) if declared else None
    if codec is not None:
        return codec, declared
    # MSH-3..17 in GB18030 can hold a byte equal to the field separator; read MSH-18 again.
    try:
        again = msh18(line.decode("gb18030"))
    except UnicodeDecodeError:
        again = ""
    if again and codec_for(again) == "gb18030":
        return "gb18030", again
    if declared:
        raise Hl7Error("unsupported-charset", "MSH", 18, sequence=1)
    return "", ""


def _decode(data: bytes) -> tuple[str, str, str]:
    """Text, codec and declared charset of a message in bytes."""
    codec, declared = _detect_codec(data)
    tries = [codec] if codec else ["utf-8", "gb18030"]
    if codec == "ascii":
        tries.append("utf-8")  # declared ASCII, sent UTF-8: a common misconfiguration
    for name in tries:
        try:
            return data.decode(name), name, declared
        except UnicodeDecodeError:
            continue
    raise Hl7Error("bad-charset", "MSH", 18, sequence=1)


def prepare(data: bytes | str, max_bytes: int) -> tuple[str, str, str]:
    if len(data) > max_bytes:
        raise Hl7Error("too-large")
    if isinstance(data, bytes):
        text, codec, declared = _decode(data)
    else:
        text, declared = data, msh18(first_text_line(data))
        codec = codec_for(declared) or "utf-8"
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("MSH"):
        if _LOOKS_LIKE_SEGMENT.match(text):
            if text[:3] in ("FHS", "BHS"):
                raise Hl7Error("batch-unsupported", text[:3], sequence=1)
            raise Hl7Error("missing-msh", sequence=1)
        raise Hl7Error("not-hl7")
    return text, codec or "utf-8", declared


def split_lines(text: str) -> list[str]:
    if "\r" not in text:
        return [line for line in text.split("\n") if line.strip()]
    lines = [line.lstrip("\n") for line in text.split("\r")]
    return [line for line in lines if line.strip()]


# -- values ------------------------------------------------------------------------------------


def timestamp(seg: Segment, n: int, tz: dt.tzinfo, rep: str | None = None) -> dt.datetime | None:
    raw = seg.comp(n, 1, rep).strip()
    if not raw:
        return None
    m = _DTM.fullmatch(raw)
    if m is None:
        raise seg.error("bad-timestamp", n)
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    try:
        zone = tz
        if sign:
            offset = dt.timedelta(hours=int(oh), minutes=int(om))
            zone = dt.timezone(-offset if sign == "-" else offset)
        micro = int((frac or "0").ljust(6, "0")[:6])
        return dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=zone,
        )
    except ValueError as exc:
        raise seg.error("bad-timestamp", n) from exc


_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def escape(text: str) -> str:
    """Text for a field written with the standard separators ``|^~\\&``; newlines as ``\\.br\\``."""
    text = "".join(_ESCAPES.get(ch, ch) for ch in text)
    return text.replace("\r\n", "\\.br\\").replace("\r", "\\.br\\").replace("\n", "\\.br\\")
