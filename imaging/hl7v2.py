"""HL7 v2.x lab results (ORU^R01) in, ACK^R01 out.

:func:`parse_oru` turns one message into a :class:`~imaging.lab.LabMessage`, or raises
:class:`Hl7Error` naming the segment and field at fault (never a value: messages carry patient
data). :func:`ack` writes the acknowledgement, :func:`encode` turns it into bytes. Separators,
escapes and character sets are read as :mod:`imaging.er7` says.

* Structure (ORU^R01): MSH, [PID], then orders: [ORC] OBR {OBX [NTE]} with NTE after OBR for
  the order. One patient per message (a second PID is refused), OBX needs an OBR before it.
  Segments this module does not read (PV1, SPM, TQ1, Z-segments...) are skipped; OBX after SPM
  are kept as results of the order.
* OBX-5 by OBX-2: NM must be a plain decimal; SN is comparator^num^separator^num ("<0.01",
  "1:128"); CE/CWE give the text (else the code); ST/TX/FT are text, numeric when they are a
  plain number. ``10^9/L`` written unescaped in OBX-6 is read back as one unit.
* A result without its own time (OBX-14) takes the order's (OBR-7).
* Times (DTM) without an offset are local times in ``tz`` (China by default).
"""

from __future__ import annotations

import codecs
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Literal

from imaging.er7 import (
    HL7_CODES,
    AckCode,
    Delimiters,
    Hl7Error,
    Hl7ErrorCode,
    Segment,
    codec_for,
    escape,
    first_line,
    first_text_line,
    msh18,
    prepare,
    split_lines,
    timestamp,
)
from imaging.lab import (
    CHINA,
    Coded,
    LabMessage,
    LabOrder,
    LabResult,
    PatientId,
    parse_decimal,
    report_flag,
    split_range,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SEGMENTS",
    "AckCode",
    "Hl7Error",
    "Hl7ErrorCode",
    "ack",
    "encode",
    "parse_oru",
]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_SEGMENTS = 5000
_SN_COMPARATORS = frozenset({"", "=", "<", ">", "<=", ">=", "<>"})
_TEXT_TYPES = frozenset({"ST", "TX", "FT", ""})
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})


def _number(seg: Segment, text: str) -> float:
    value = parse_decimal(text)
    if value is None:
        raise seg.error("bad-numeric", 5)
    return value


def _value(seg: Segment, value_type: str) -> tuple[str, float | None]:
    """OBX-5 as text, and as a number when it is one."""
    reps = seg.reps(5)
    if not reps or not "".join(reps).strip():
        return "", None
    if value_type == "NM":
        if len(reps) > 1:
            raise seg.error("bad-numeric", 5)
        text = seg.text(5).strip()
        return text, _number(seg, text)
    if value_type == "SN":
        comparator, num1, sep, num2 = (seg.comp(5, i).strip() for i in range(1, 5))
        if comparator not in _SN_COMPARATORS or not (num1 or num2):
            raise seg.error("bad-numeric", 5)
        first = _number(seg, num1) if num1 else None
        if num2:
            _number(seg, num2)
        exact = comparator in ("", "=") and not sep and not num2
        return (
            f"{comparator if comparator != '=' else ''}{num1}{sep}{num2}",
            first if exact else None,
        )
    if value_type in _CODED_TYPES:
        texts = [seg.comp(5, 2, rep) or seg.comp(5, 1, rep) for rep in reps]
        return "; ".join(t for t in texts if t), None
    text = "\n".join(seg.text(5, rep) for rep in reps)
    if value_type in _TEXT_TYPES:
        return text, parse_decimal(text)
    return text, None


def _unit(seg: Segment) -> str:
    code, text, system = seg.comp(6, 1), seg.comp(6, 2), seg.comp(6, 3)
    raw = seg.raw(6)
    if code.isdigit() and text[:1].isdigit() and not system and raw.count(seg.d.component) == 1:
        return f"{code}^{text}"  # "10^9/L" sent unescaped
    return code or text


def _result(seg: Segment, tz: dt.tzinfo, order_time: dt.datetime | None) -> _ResultDraft:
    value_type = seg.comp(2).strip().upper()
    code = seg.comp(3, 1) or seg.comp(3, 4)
    name = seg.comp(3, 2) or seg.comp(3, 5)
    if not code and not name:
        raise seg.error("missing-field", 3)
    value, numeric = _value(seg, value_type)
    reference = seg.text(7).strip()
    low, high = split_range(reference)
    flags = tuple(f for f in (seg.comp(8, 1, rep).strip() for rep in seg.reps(8)) if f)
    flag, critical = report_flag(flags)
    return _ResultDraft(
        code=code,
        name=name,
        system=seg.comp(3, 3) if seg.comp(3, 1) else seg.comp(3, 6),
        value=value,
        numeric=numeric,
        unit=_unit(seg),
        reference_range=reference,
        low=low,
        high=high,
        flag=flag,
        critical=critical,
        status=seg.comp(11).strip(),
        observed_at=timestamp(seg, 14, tz) or order_time,
        value_type=value_type,
        flags=flags,
    )


@dataclass(slots=True)
class _ResultDraft:
    code: str
    name: str
    system: str
    value: str
    numeric: float | None
    unit: str
    reference_range: str
    low: float | None
    high: float | None
    flag: Literal["normal", "low", "high", "critical_low", "critical_high", "abnormal"]
    critical: bool
    status: str
    observed_at: dt.datetime | None
    value_type: str
    flags: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    def build(self) -> LabResult:
        return LabResult(
            code=self.code,
            name=self.name,
            system=self.system,
            value=self.value,
            numeric=self.numeric,
            unit=self.unit,
            reference_range=self.reference_range,
            low=self.low,
            high=self.high,
            flag=self.flag,
            critical=self.critical,
            status=self.status,
            observed_at=self.observed_at,
            value_type=self.value_type,
            flags=self.flags,
            notes=tuple(self.notes),
        )


@dataclass(slots=True)
class _OrderDraft:
    obr: Segment
    orc: Segment | None
    tz: dt.tzinfo
    results: list[_ResultDraft] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    observed_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        self.observed_at = timestamp(self.obr, 7, self.tz)

    def build(self) -> LabOrder:
        obr, orc = self.obr, self.orc
        return LabOrder(
            placer=obr.comp(2) or (orc.comp(2) if orc else ""),
            filler=obr.comp(3) or (orc.comp(3) if orc else ""),
            service=Coded(obr.comp(4, 1), obr.comp(4, 2), obr.comp(4, 3)),
            observed_at=self.observed_at,
            status=obr.comp(25).strip(),
            results=tuple(r.build() for r in self.results),
            reported_at=timestamp(obr, 22, self.tz),
            notes=tuple(self.notes),
        )


def _note(seg: Segment) -> str:
    return "\n".join(seg.text(3, rep) for rep in seg.reps(3))


def _person_name(seg: Segment) -> str:
    family, given = seg.comp(5, 1), seg.comp(5, 2)
    cjk = any("\u3400" <= ch <= "\u9fff" for ch in family + given)
    return (family + given) if cjk else " ".join(p for p in (given, family) if p)


def _patient_ids(seg: Segment) -> tuple[PatientId, ...]:
    ids: list[PatientId] = []
    for n in (3, 2, 4):  # PID-2 and PID-4 are the v2.3 external and alternate ids
        for rep in seg.reps(n):
            value = seg.comp(n, 1, rep).strip()
            if not value:
                continue
            authority = seg.comp(n, 4, rep) or seg.comp(n, 4, rep, sub=2)
            if n == 3 or all(known.value != value for known in ids):
                ids.append(PatientId(value, seg.comp(n, 5, rep).strip(), authority))
    return tuple(ids)


def _check_type(msh: Segment) -> str:
    kind, event = msh.comp(9, 1).strip(), msh.comp(9, 2).strip()
    if kind != "ORU" or event not in ("R01", ""):
        raise msh.error("wrong-message-type", 9)
    return "ORU^R01"


def parse_oru(
    data: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    tz: dt.tzinfo = CHINA,
) -> LabMessage:
    """One ORU^R01 message (bytes as received, or text) as a :class:`LabMessage`.

    ``max_bytes`` caps the input (characters for text), ``max_segments`` its segments.
    """
    text, codec, declared = prepare(data, max_bytes)
    d = Delimiters.read(text)
    lines = split_lines(text)
    if len(lines) > max_segments:
        raise Hl7Error("too-many-segments")
    msh = Segment.parse(lines[0], 1, d, codec)
    message_type = _check_type(msh)
    control_id = msh.comp(10).strip()
    if not control_id:
        raise msh.error("missing-field", 10)

    pid: Segment | None = None
    orders: list[_OrderDraft] = []
    orc: Segment | None = None
    context = "patient"
    for sequence, line in enumerate(lines[1:], start=2):
        seg = Segment.parse(line, sequence, d, codec)
        if seg.name == "MSH" or (seg.name == "PID" and (pid is not None or orders)):
            raise seg.error("segment-sequence")
        if seg.name == "OBX" and (orc is not None or not orders):
            raise seg.error("obx-without-obr")
        if orc is not None and seg.name not in ("OBR", "NTE"):
            raise orc.error("segment-sequence")  # ORC must be followed by its OBR
        if seg.name == "PID":
            pid = seg
        elif seg.name == "ORC":
            orc, context = seg, "orc"
        elif seg.name == "OBR":
            orders.append(_OrderDraft(seg, orc, tz))
            orc, context = None, "order"
        elif seg.name == "OBX":
            order = orders[-1]
            order.results.append(_result(seg, tz, order.observed_at))
            context = "result"
        elif seg.name == "NTE":
            if context == "result":
                orders[-1].results[-1].notes.append(_note(seg))
            elif context == "order":
                orders[-1].notes.append(_note(seg))
    if orc is not None:
        raise orc.error("segment-sequence")
    if not orders:
        raise Hl7Error("missing-segment", "OBR")

    birth = timestamp(pid, 7, tz) if pid else None
    return LabMessage(
        control_id=control_id,
        sending_app=msh.comp(3, 1) or msh.comp(3, 2),
        sending_facility=msh.comp(4, 1) or msh.comp(4, 2),
        message_type=message_type,
        patient_ids=_patient_ids(pid) if pid else (),
        orders=tuple(o.build() for o in orders),
        patient_name=_person_name(pid) if pid else "",
        birth_date=birth.date() if birth else None,
        sex=pid.comp(8).strip() if pid else "",
        version=msh.comp(12).strip(),
        charset=declared,
        sent_at=timestamp(msh, 7, tz),
        processing_id=msh.comp(11).strip(),
    )


# -- acknowledgements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Header:
    control_id: str = ""
    sending_app: str = ""
    sending_facility: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    charset: str = ""


def _header(message: LabMessage | bytes | str) -> _Header:
    if isinstance(message, LabMessage):
        return _Header(
            message.control_id,
            message.sending_app,
            message.sending_facility,
            message.processing_id or "P",
            message.version if message.version.startswith("2.") else "2.5.1",
            message.charset,
        )
    try:  # best effort: the message may be cut short (too large) or not HL7 at all
        if isinstance(message, bytes):
            message = first_line(message.lstrip(b"\xef\xbb\xbf \t\r\n")[:65536])
        else:
            message = first_text_line(message)[:65536]
        text, codec, declared = prepare(message, 65536)
        d = Delimiters.read(text)
        msh = Segment.parse(split_lines(text)[0], 1, d, codec)
    except Hl7Error:
        return _Header()
    version = msh.comp(12).strip()
    return _Header(
        msh.comp(10).strip(),
        msh.comp(3, 1) or msh.comp(3, 2),
        msh.comp(4, 1) or msh.comp(4, 2),
        msh.comp(11).strip() or "P",
        version if version.startswith("2.") else "2.5.1",
        declared if codec_for(declared) else "",
    )


def ack(
    message: LabMessage | bytes | str,
    code: AckCode = "AA",
    text: str = "",
    *,
    error: Hl7Error | None = None,
    app: str = "HUIZHEN",
    facility: str = "",
    control_id: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """An ACK^R01 for ``message`` (parsed, or as received when it could not be parsed).

    MSA-2 echoes the message's control id; ``error`` adds an ERR segment (v2.5 layout: location,
    table 0357 code, severity). MSH-18 repeats the message's character set, so :func:`encode`
    writes the ACK in it. Segments end with ``\\r``, there is none after the last.
    """
    h = _header(message)
    moment = (now or dt.datetime.now(CHINA)).strftime("%Y%m%d%H%M%S%z")
    ours = control_id or uuid.uuid4().hex[:20]
    msh = [
        "MSH",
        "^~\\&",
        escape(app),
        escape(facility),
        escape(h.sending_app),
        escape(h.sending_facility),
        moment,
        "",
        "ACK^R01^ACK",
        escape(ours),
        escape(h.processing_id),
        escape(h.version),
        *[""] * 5,
        escape(h.charset),
    ]
    segments = [
        "|".join(msh).rstrip("|"),
        "|".join(["MSA", code, escape(h.control_id), escape(text)]),
    ]
    if error is not None:
        location = "^".join(
            [error.segment or "", str(error.sequence or ""), str(error.field or "")]
        ).rstrip("^")
        _, label, _ = HL7_CODES[error.code]
        segments.append(f"ERR||{location}|{error.hl7_code}^{label}^HL70357|E")
    return "\r".join(s.rstrip("|") for s in segments)


def encode(message: str) -> bytes:
    """A message's bytes in the character set its MSH-18 declares (UTF-8 when none).

    Characters the set cannot hold become ``?``.
    """
    declared = msh18(first_text_line(message))
    codec = codec_for(declared) if declared else None
    return codecs.encode(message, codec or "utf-8", "replace")
