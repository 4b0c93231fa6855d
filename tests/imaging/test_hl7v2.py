"""HL7 v2 ORU^R01: lab results as the lab centre sends them, typed errors for everything else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging.hl7v2 import Hl7Error, ack, encode, parse_oru
from imaging.lab import CHINA, LabMessage, report_flag, split_range
from server.reports import LabReport, LabValue, ReportBody, _is_critical
from tests.imaging.labmessages import (
    CONSULT,
    CONSULT_CBC,
    NATIONAL_ID,
    ORU_GB18030,
    ORU_GB18030_TEXT,
    ORU_UTF8,
    oru,
    with_charset,
    with_delimiters,
)

OBR = "OBR|1|C-1|F-1|CBC^血常规^99LAB"


def _segments(message: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in message.split("\r"):
        out.setdefault(line[:3], []).append(line)
    return out


def test_utf8_message_to_records() -> None:
    m = parse_oru(ORU_UTF8.encode("utf-8"))
    assert (m.control_id, m.sending_app, m.sending_facility) == (
        "LAB20240315000123",
        "LIS",
        "县人民医院检验科",
    )
    assert (m.message_type, m.version, m.charset, m.processing_id) == (
        "ORU^R01",
        "2.5.1",
        "UNICODE UTF-8",
        "P",
    )
    assert m.sent_at == dt.datetime(2024, 3, 15, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert [(p.value, p.type, p.authority) for p in m.patient_ids] == [
        ("0001234567", "MR", "县人民医院"),
        (NATIONAL_ID, "NNCHN", "中华人民共和国公安部"),
    ]
    assert m.national_id == NATIONAL_ID
    assert (m.patient_name, m.birth_date, m.sex) == ("张三", dt.date(1949, 12, 31), "M")

    electrolytes, cardiac = m.orders
    assert (electrolytes.placer, electrolytes.filler, electrolytes.status) == (
        CONSULT,
        "F202403150088",
        "F",
    )
    assert (electrolytes.service.code, electrolytes.service.name) == ("ELEC", "电解质四项")
    assert electrolytes.observed_at == dt.datetime(2024, 3, 15, 9, 15, tzinfo=CHINA)
    assert electrolytes.reported_at == dt.datetime(2024, 3, 15, 10, 28, tzinfo=CHINA)
    assert electrolytes.observed_at.utcoffset() == dt.timedelta(hours=8)

    k, na, cl, ca = electrolytes.results
    assert (k.code, k.name, k.system) == ("2823-3", "血钾 K", "LN")
    assert (k.value, k.numeric, k.unit, k.reference_range) == ("6.8", 6.8, "mmol/L", "3.5-5.3")
    assert (k.low, k.high, k.flags, k.flag, k.critical) == (
        3.5,
        5.3,
        ("HH",),
        "critical_high",
        True,
    )
    assert (k.status, k.value_type) == ("F", "NM")
    assert k.observed_at == dt.datetime(2024, 3, 15, 10, 15, tzinfo=CHINA)
    assert k.notes == ("危急值已电话通知临床\n接听人：李护士",)
    assert (na.flag, na.critical, cl.flag, cl.numeric) == ("normal", False, "low", 96.0)
    assert (ca.status, ca.flags, ca.flag) == ("C", (), "normal")
    assert ca.notes == ("复核后更正：原结果 2.12 & 标本号 |A|",)  # \T\ and \F\

    ctni, ntprobnp, ckmb, ana = cardiac.results
    assert (ctni.name, ctni.numeric, ctni.flag, ctni.critical) == (
        "肌钙蛋白 I",
        2.35,
        "critical_high",
        True,
    )
    assert (ntprobnp.value, ntprobnp.numeric, ntprobnp.high, ntprobnp.flag) == (
        ">35000",
        None,
        125.0,
        "high",
    )
    assert (ckmb.value_type, ckmb.numeric, ckmb.status) == ("ST", 3.1, "P")
    assert (ana.value, ana.numeric, ana.flag) == ("1:320", None, "abnormal")
    assert ana.observed_at == cardiac.observed_at  # no OBX-14: the order's time
    assert m.critical and electrolytes.critical and cardiac.critical


def test_gb18030_bytes_decode_names_and_units() -> None:
    m = parse_oru(ORU_GB18030)
    assert m.charset == "GB 18030-2000"
    # 東 and 億 end with the byte of '|', 籠 with that of '\': decoded before splitting.
    assert m.sending_facility == "東城醫院"
    assert m.patient_name == "李億"
    assert [(p.value, p.type) for p in m.patient_ids] == [("A1001", "PI"), (NATIONAL_ID, "NNCHN")]
    (cbc,) = m.orders
    assert cbc.placer == CONSULT_CBC
    assert cbc.notes == ("标本轻度溶血（籠）",)
    hgb, wbc, plt, abo, morph = cbc.results
    assert (hgb.name, hgb.value, hgb.unit, hgb.flag) == ("血红蛋白 HGB", "85", "g/L", "low")
    assert (wbc.unit, wbc.flag) == ("10^9/L", "high")  # written unescaped
    assert (plt.unit, plt.flag, plt.critical) == ("10^9/L", "critical_low", True)  # escaped \S\
    assert (abo.value_type, abo.value, abo.numeric) == ("CE", "A型", None)
    # two repetitions; \XCEB4BCFB\ is 未见 in GB18030
    assert morph.value == "可见少量靶形红细胞\n未见原始细胞"
    assert morph.status == "P"


def test_same_records_whatever_the_bytes() -> None:
    reference = parse_oru(ORU_GB18030)
    utf8_hex = "\\X" + "未见".encode().hex().upper() + "\\"  # \X..\ holds bytes in MSH-18
    utf8_text = ORU_GB18030_TEXT.replace("\\XCEB4BCFB\\", utf8_hex)
    as_utf8 = parse_oru(with_charset(utf8_text, "UNICODE UTF-8").encode("utf-8"))
    undeclared = parse_oru(with_charset(ORU_GB18030_TEXT, "").encode("gb18030"))
    as_text = parse_oru(ORU_GB18030_TEXT)
    gbk_spelling = parse_oru(with_charset(ORU_GB18030_TEXT, "GBK").encode("gb18030"))
    for other in (as_utf8, undeclared, as_text, gbk_spelling):
        assert other.orders == reference.orders
        assert other.patient_name == reference.patient_name


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_line_endings_are_tolerated(ending: str) -> None:
    reference = parse_oru(ORU_UTF8)
    assert parse_oru(ORU_UTF8.replace("\r", ending) + ending).orders == reference.orders


def test_separators_come_from_msh() -> None:
    custom = with_delimiters(ORU_UTF8, "#!@$%")
    assert custom.startswith("MSH#!@$%#LIS#")
    m, reference = parse_oru(custom.encode("utf-8")), parse_oru(ORU_UTF8)
    assert m.patient_ids == reference.patient_ids
    # \T\ and \F\ stand for this message's own separators
    assert m.orders[0].results[3].notes == ("复核后更正：原结果 2.12 % 标本号 #A#",)
    no_notes = [dataclasses.replace(r, notes=()) for r in m.results]
    assert no_notes == [dataclasses.replace(r, notes=()) for r in reference.results]
    assert m.results[0].notes == reference.results[0].notes


def test_escape_sequences() -> None:
    text = (
        r"a\F\b\S\c\T\d\R\e\E\f\.br\g\X41C3A9\h\H\bold\N\ \Zvendor\i\.sp2\j\Q\k"
        "\\.br"  # not closed: kept as written
    )
    m = parse_oru(oru(OBR, f"OBX|1|ST|X^x||{text}"))
    assert m.results[0].value == "a|b^c&d~e\\f\ng" + "Aé" + "h" + "bold i\n\nj\\Q\\k\\.br"


def test_hex_escape_in_the_message_charset() -> None:
    m = parse_oru(oru(OBR, r"OBX|1|ST|X^x||\XD1AABCD8\ 偏高", charset="GB18030").encode("gb18030"))
    assert m.results[0].value == "血钾 偏高"


@pytest.mark.parametrize(
    ("obx", "value", "numeric"),
    [
        ("OBX|1|NM|K^钾||-2.5", "-2.5", -2.5),
        ("OBX|1|NM|K^钾|| +.5 ", "+.5", 0.5),
        ("OBX|1|NM|K^钾||", "", None),
        ("OBX|1|SN|K^钾||<=^0.01", "<=0.01", None),
        ("OBX|1|SN|K^钾||=^7", "7", 7.0),
        ("OBX|1|SN|K^钾||^10^-^20", "10-20", None),
        ("OBX|1|ST|K^钾||<0.01", "<0.01", None),
        ("OBX|1|CWE|K^钾||NEG^阴性^99", "阴性", None),
        ("OBX|1|CWE|K^钾||POS", "POS", None),
        ("OBX|1|TX|K^钾||5", "5", 5.0),
        ("OBX|1|DT|K^钾||20240315", "20240315", None),
    ],
)
def test_values_by_type(obx: str, value: str, numeric: float | None) -> None:
    (result,) = parse_oru(oru(OBR, obx)).results
    assert (result.value, result.numeric) == (value, numeric)


def test_order_and_result_notes_and_orc_placer() -> None:
    m = parse_oru(
        oru(
            "PID|1||P1^^^^MR",
            "ORC|RE|ORC-PLACER|ORC-FILLER",
            "OBR|1|||GLU^血糖^99LAB|||202403150915",
            "NTE|1||空腹",
            "OBX|1|NM|GLU^血糖^99LAB||2.1|mmol/L|3.9-6.1|LL",
            "NTE|1||已复查",
            "NTE|2||低血糖",
            "ZLS|vendor data",
        )
    )
    (order,) = m.orders
    assert (order.placer, order.filler) == ("ORC-PLACER", "ORC-FILLER")  # OBR-2/3 empty
    assert order.notes == ("空腹",)
    assert order.observed_at == dt.datetime(2024, 3, 15, 9, 15, tzinfo=CHINA)
    assert order.results[0].notes == ("已复查", "低血糖")
    assert order.results[0].flag == "critical_low"


def test_times_with_offsets_and_precision() -> None:
    m = parse_oru(oru(OBR, "OBX|1|NM|K^钾||4||||||F|||20240315101500.25-0500"))
    assert m.results[0].observed_at == dt.datetime(
        2024, 3, 15, 10, 15, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=-5))
    )
    utc = parse_oru(oru(OBR, "OBX|1|NM|K^钾||4"), tz=dt.UTC)
    assert utc.sent_at == dt.datetime(2024, 3, 15, 10, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("codes", "flag", "critical"),
    [
        ((), "normal", False),
        (("N",), "normal", False),
        (("L",), "low", False),
        (("H",), "high", False),
        (("LL",), "critical_low", True),
        (("HH",), "critical_high", True),
        (("A",), "abnormal", False),
        (("AA",), "abnormal", True),
        (("H", "AA"), "critical_high", True),
        (("↑",), "high", False),
        (("W",), "abnormal", False),
    ],
)
def test_flags(codes: tuple[str, ...], flag: str, critical: bool) -> None:
    assert report_flag(codes) == (flag, critical)


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("3.5-5.3", (3.5, 5.3)),
        ("3.5～5.3", (3.5, 5.3)),
        ("-3--1", (-3.0, -1.0)),
        ("0 - 0.04", (0.0, 0.04)),
        ("<125", (None, 125.0)),
        ("≤0.04", (None, 0.04)),
        (">60", (60.0, None)),
        ("阴性", (None, None)),
        ("", (None, None)),
    ],
)
def test_reference_ranges(text: str, bounds: tuple[float | None, float | None]) -> None:
    assert split_range(text) == bounds


def test_results_fit_the_lab_report() -> None:
    """Every result is a value of the server's lab report, and a critical one makes it critical."""
    for message in (parse_oru(ORU_UTF8), parse_oru(ORU_GB18030)):
        values = [LabValue.model_validate(r.as_lab_value()) for r in message.results]
        assert [v.flag for v in values] == [r.flag for r in message.results]
        body = ReportBody(content=LabReport(results=values))
        assert _is_critical(body) == any(r.flag.startswith("critical") for r in message.results)


ERRORS = [
    ("not-hl7", b"\x00\x01\x02 binary", None, None),
    ("not-hl7", b'{"resourceType": "Observation"}', None, None),
    ("not-hl7", b"", None, None),
    ("missing-msh", b"PID|1||P1\rOBR|1", None, None),
    ("batch-unsupported", b"FHS|^~\\&|LIS\rBHS|^~\\&", "FHS", None),
    ("bad-delimiters", b"MSHA^~\\&|LIS", "MSH", 2),
    ("bad-delimiters", b"MSH|^^\\&|LIS", "MSH", 2),
    ("wrong-message-type", oru(OBR, kind="ADT^A01").encode(), "MSH", 9),
    ("wrong-message-type", oru(OBR, kind="ORU^R30").encode(), "MSH", 9),
    ("missing-field", oru(OBR).replace("|C1|", "||").encode(), "MSH", 10),
    ("missing-field", oru(OBR, "OBX|1|NM|||5").encode(), "OBX", 3),
    ("unsupported-charset", oru(OBR, charset="EBCDIC").encode(), "MSH", 18),
    ("bad-charset", oru(OBR, "NTE|1||血钾", charset="UTF-8").encode("gb18030"), "MSH", 18),
    ("bad-charset", oru(OBR, "NTE|1||血钾", charset="").encode("utf-16"), "MSH", 18),
    ("obx-without-obr", oru("PID|1||P1", "OBX|1|NM|K^钾||6.8").encode(), "OBX", None),
    ("obx-without-obr", oru("ORC|RE|C1", "OBX|1|NM|K^钾||6.8").encode(), "OBX", None),
    ("bad-numeric", oru(OBR, "OBX|1|NM|K^钾||6,8").encode(), "OBX", 5),
    ("bad-numeric", oru(OBR, "OBX|1|NM|K^钾||1e5").encode(), "OBX", 5),
    ("bad-numeric", oru(OBR, "OBX|1|NM|K^钾||" + "9" * 400).encode(), "OBX", 5),  # inf
    ("bad-numeric", oru(OBR, "OBX|1|NM|K^钾||6.8~7").encode(), "OBX", 5),
    ("bad-numeric", oru(OBR, "OBX|1|SN|K^钾||~^5").encode(), "OBX", 5),
    ("bad-numeric", oru(OBR, "OBX|1|SN|K^钾||<^abc").encode(), "OBX", 5),
    ("bad-timestamp", oru(OBR, "OBX|1|NM|K^钾||5||||||F|||20241315").encode(), "OBX", 14),
    ("bad-timestamp", oru(OBR, "OBX|1|NM|K^钾||5||||||F|||2024-03-15").encode(), "OBX", 14),
    ("bad-timestamp", oru(OBR, "OBX|1|NM|K^钾||5||||||F|||20240315+9900").encode(), "OBX", 14),
    ("bad-escape", oru(OBR, r"OBX|1|ST|K^钾||\XZZ\ ").encode(), "OBX", 5),
    ("bad-segment", oru(OBR, "obx|1").encode(), None, None),
    ("segment-sequence", oru("PID|1||P1", OBR, "PID|1||P2").encode(), "PID", None),
    ("segment-sequence", (oru(OBR) + "\r" + oru(OBR)).encode(), "MSH", None),
    ("segment-sequence", oru("ORC|RE|C1", "PV1|1").encode(), "ORC", None),
    ("missing-segment", oru("PID|1||P1").encode(), "OBR", None),
]


@pytest.mark.parametrize(("code", "data", "segment", "field"), ERRORS)
def test_typed_errors(code: str, data: bytes, segment: str | None, field: int | None) -> None:
    with pytest.raises(Hl7Error) as caught:
        parse_oru(data)
    assert (caught.value.code, caught.value.segment, caught.value.field) == (code, segment, field)


def test_size_and_segment_caps() -> None:
    message = ORU_UTF8.encode()
    assert parse_oru(message, max_bytes=len(message)).orders
    with pytest.raises(Hl7Error) as caught:
        parse_oru(message, max_bytes=len(message) - 1)
    assert (caught.value.code, caught.value.ack_code) == ("too-large", "AR")
    segments = ORU_UTF8.count("\r") + 1
    assert parse_oru(message, max_segments=segments).orders
    with pytest.raises(Hl7Error) as caught:
        parse_oru(message, max_segments=segments - 1)
    assert caught.value.code == "too-many-segments"


def test_errors_never_echo_values() -> None:
    message = ORU_UTF8.replace("|6.8|", "|6,8 张三 " + NATIONAL_ID + "|")
    with pytest.raises(Hl7Error) as caught:
        parse_oru(message)
    assert str(caught.value) == "bad-numeric at OBX-5"
    assert caught.value.sequence == 6
    assert "张三" not in repr(parse_oru(ORU_UTF8))  # records do not show the patient
    assert NATIONAL_ID not in repr(parse_oru(ORU_UTF8))


def test_ack_accepts() -> None:
    m = parse_oru(ORU_UTF8)
    now = dt.datetime(2024, 3, 15, 10, 30, 5, tzinfo=CHINA)
    text = ack(m, "AA", "收到 | 已入库", control_id="ACK1", now=now)
    segs = _segments(text)
    msh = segs["MSH"][0].split("|")
    assert msh[:12] == [
        "MSH",
        "^~\\&",
        "HUIZHEN",
        "",
        "LIS",
        "县人民医院检验科",
        "20240315103005+0800",
        "",
        "ACK^R01^ACK",
        "ACK1",
        "P",
        "2.5.1",
    ]
    assert msh[17] == "UNICODE UTF-8"
    assert segs["MSA"] == ["MSA|AA|LAB20240315000123|收到 \\F\\ 已入库"]
    assert "ERR" not in segs
    assert not text.endswith("\r")
    assert encode(text) == text.encode("utf-8")


def test_ack_in_the_message_charset() -> None:
    text = ack(parse_oru(ORU_GB18030), text="收到")
    assert text.split("\r")[0].split("|")[17] == "GB 18030-2000"
    assert encode(text) == text.encode("gb18030")
    assert "收到".encode("gb18030") in encode(text)


def test_nak_for_a_message_that_could_not_be_parsed() -> None:
    bad = oru("OBX|1|NM|K^钾||6.8").replace("|C1|", "|CTRL-9|").encode()
    with pytest.raises(Hl7Error) as caught:
        parse_oru(bad)
    error = caught.value
    text = ack(bad, error.ack_code, "OBX before OBR", error=error)
    segs = _segments(text)
    assert segs["MSA"] == ["MSA|AE|CTRL-9|OBX before OBR"]
    assert segs["ERR"] == ["ERR||OBX^2|100^Segment sequence error^HL70357|E"]
    # Not HL7 at all: still an answer, with no control id to echo.
    garbage = ack(b"\xff\xfe garbage", "AR", error=Hl7Error("not-hl7"))
    assert _segments(garbage)["MSA"] == ["MSA|AR"]
    assert garbage.split("\r")[0].split("|")[11] == "2.5.1"


# -- never another exception --------------------------------------------------------------------

SAMPLES = [ORU_UTF8.encode("utf-8"), ORU_GB18030, with_delimiters(ORU_UTF8, "#!@$%").encode()]
PIECES = ["|", "^", "~", "\\", "&", "\r", "\n", "MSH|^~\\&|", "OBX|", "OBR|", "PID|", "NTE|",
          "ORC|", "\\X", "\\.br\\", "NM", "SN", "CE", "HH", "ORU^R01", "9" * 30, "2024", ".",
          "-", "+", "<", "张", "\x00", "\xff"]  # fmt: skip


def _outcome(data: bytes | str) -> None:
    """A message or a typed error, and an acknowledgement either way."""
    outcome: LabMessage | Hl7Error
    try:
        outcome = parse_oru(data, max_bytes=1 << 16)
    except Hl7Error as exc:
        outcome = exc
    if isinstance(outcome, Hl7Error):
        assert outcome.code in str(outcome)
        assert ack(data, outcome.ack_code, error=outcome)
        return
    assert ack(outcome)
    for r in outcome.results:
        assert r.numeric is None or math.isfinite(r.numeric)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    _outcome(data)
    _outcome(b"MSH|^~\\&|" + data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.binary(max_size=8)), max_size=6
    ),
)
def test_mutated_messages(sample: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(sample)
    for at, cut, insert in edits:
        at %= len(data) + 1
        data[at : at + cut] = insert
    _outcome(bytes(data))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=60), st.integers(0, 2**32))
def test_messages_built_from_pieces(pieces: list[str], seed: int) -> None:
    text = oru(OBR) + "\r" + "".join(pieces)
    _outcome(text)
    _outcome(text.encode("utf-8", "replace"))
    lines = text.split("\r")
    random.Random(seed).shuffle(lines)
    _outcome("\r".join(lines))
