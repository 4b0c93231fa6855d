"""The JSON writer's direct road (imaging.dicomjson) and ingest's reads around it.

The direct road writes an attribute from a raw element's bytes instead of pydicom's converted
value; ingest reads its checks and summary through it or from the model. Here: files crafted
element by element (every VR the road writes, values at the edges of pydicom's validation, the
character sets it decodes and those it leaves to pydicom, sequences) and hypothesis-made ones,
compared with pydicom's own ``Dataset.to_json_dict`` (value, warnings, errors) and with ingest as
it reads through pydicom only. And that the road is taken: a silent fallback to pydicom would
pass every equality test while losing the speed.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom.data
import pydicom.dataset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

import imaging.dicomjson
import imaging.ingest
from imaging.dicomjson import direct_attribute, to_json_dict
from imaging.ingest import BULK_THRESHOLD, IngestError, Instance, ingest
from tests.imaging.dicomfiles import build, bundled
from tests.imaging.test_dicomjson import _outcome, _pydicom, _same

_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
GENERIC = 0x44440010  # no dictionary entry: the explicit VR is all there is


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in _LONG:
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def item(body: bytes, *, undefined: bool = False) -> bytes:
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + b"\xfe\xff\x0d\xe0\0\0\0\0"
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body


def crafted(
    *elements: bytes, charset: str | None = "ISO_IR 192", omit: tuple[str, ...] = ()
) -> bytes:
    """A built file with raw elements appended after its last one."""
    return build(charset=charset, omit=omit) + b"".join(elements)


def _handler(elem: DataElement) -> str:
    return f"bulk:{elem.tag:08X}:{elem.VR}:{len(elem.value)}"


def _ingest(source: bytes | Path) -> Any:
    """The Instance as a comparable tuple (its fields, the model as a dict), or the error."""
    try:
        instance = ingest(source)
    except IngestError as exc:
        return exc.code, exc.message
    return tuple(
        dict(instance.metadata) if field.name == "metadata" else getattr(instance, field.name)
        for field in dataclasses.fields(Instance)
    )


def _reference_ingest(data: bytes) -> Any:
    """ingest reading everything through pydicom: its JSON model, ``ds.get`` for the checks and
    the summary (what ingest did before the direct road)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imaging.ingest, "_plain", lambda data: None)
        patch.setattr(imaging.ingest, "to_json_dict", _pydicom)
        patch.setattr(imaging.ingest, "direct_attribute", lambda ds, tag: None)
        patch.setattr(
            imaging.ingest, "_text", lambda ds, model, kw: imaging.ingest._text_from(ds, kw)
        )
        patch.setattr(
            imaging.ingest, "_int", lambda ds, model, kw: imaging.ingest._int_from(ds, kw)
        )
        return _ingest(data)


def assert_same_ingest(data: bytes) -> None:
    assert _same(_ingest(data), _reference_ingest(data))


def assert_same_as_pydicom(data: bytes) -> None:
    for threshold, handler in ((BULK_THRESHOLD, _handler), (16, None)):
        new, new_warnings = _outcome(to_json_dict, data, threshold, handler)
        old, old_warnings = _outcome(_pydicom, data, threshold, handler)
        assert _same(new, old)
        assert new_warnings == old_warnings
    assert_same_ingest(data)


# ---- crafted values: every direct VR, at the edges of pydicom's read validation -------------

LONG_NAME = b"A" * 64
CASES: list[tuple[str, bytes]] = [
    # default repertoire strings
    ("AE", b" STORESCP  "),
    ("AE", b"A\\ B \\"),
    ("AE", b"\x85AE\xa0"),
    ("AS", b"045Y"),
    ("AS", b"045Y\\"),
    ("CS", b"ORIGINAL\\PRIMARY\\AXIAL "),
    ("CS", b" \x00"),
    ("CS", b"\\"),
    ("CS", b"lower case\xe5"),
    ("DA", b"20261122"),
    ("DA", b"2026-11-22 \x00"),
    ("DT", b"20261122101500.123456+0800 "),
    ("TM", b"101500.1\\1015"),
    ("UR", b"http://example.org/a b  "),
    ("UR", b"   "),
    # UI: validated per value (length, syntax)
    ("UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
    ("UI", b"1.2.3\\4.5.6"),
    ("UI", b"1.2.3\\\\4"),
    ("UI", b"1.02.3"),
    ("UI", b"1.2.3 \x00 "),
    ("UI", b"1." + b"2" * 63),
    ("UI", b"1." + b"2" * 62),
    ("UI", b"1.2.3\n"),
    # DS: float() of each value, empty values
    ("DS", b"1.5"),
    ("DS", b" -1.5e3\\+2.\\.5 "),
    ("DS", b"nan\\inf\\-Infinity"),
    ("DS", b"1_000"),
    ("DS", b"1e400"),
    ("DS", b"12345678901234567"),
    ("DS", b"1\\\\2"),
    ("DS", b"1\\ \\2"),
    ("DS", b"  "),
    ("DS", b"\x00\t"),
    ("DS", b"1,5"),
    ("DS", b"1.5\x00\x00"),
    # IS: the IS syntax, 12 characters, ISfloat
    ("IS", b"42"),
    ("IS", b" +42 \\-7\\0007"),
    ("IS", b"123456789012"),
    ("IS", b"1234567890123"),
    ("IS", b"1.0"),
    ("IS", b"1.5"),
    ("IS", b"1\\\\2"),
    ("IS", b"\t"),
    ("IS", b"\x00"),
    ("IS", b"1_0"),
    ("IS", b"1\n"),
    # character set VRs
    ("SH", b"A" * 16),
    ("SH", b"A" * 17),
    ("SH", b"A\\" + b"B" * 17),
    ("SH", b"a\\\\b \x00"),
    ("SH", "张三".encode()),
    ("SH", b"\xe5\xbc"),
    ("SH", b"\x1b$BF|K\\\x1b(B"),
    ("LO", b"L" * 64),
    ("LO", b"L" * 65),
    ("LO", "身份证110101\\协和医院 ".encode()),
    ("UC", b"U" * 300 + b"\\x "),
    ("ST", b"S" * 1024),
    ("ST", b"S" * 1025),
    ("ST", b"line one\r\nline two\\ still one \x00"),
    ("LT", b"T" * 10241),
    ("UT", b"free text \\ with a backslash  "),
    # PN: groups, names, components
    ("PN", b"Zhang^San"),
    ("PN", "Zhang^San=张^三=zhang^san".encode()),
    ("PN", b"A=B=C=D"),
    ("PN", b"A^B\\C^D"),
    ("PN", b"A\\\\B"),
    ("PN", b"=="),
    ("PN", b"==\\A"),
    ("PN", b"=B"),
    ("PN", b"A==C"),
    ("PN", LONG_NAME),
    ("PN", LONG_NAME + b"B"),
    ("PN", b"A=" + LONG_NAME + b"B"),
    ("PN", b"Name  \x00"),
    # binary numbers
    ("US", struct.pack("<H", 512)),
    ("US", struct.pack("<3H", 1, 2, 65535)),
    ("US", b"\x01\x02\x03"),
    ("SS", struct.pack("<h", -5)),
    ("SS", struct.pack("<3h", -1, 0, 16)),  # as a LUT descriptor, pydicom makes -1 65535
    ("UL", struct.pack("<2L", 0, 4294967295)),
    ("SL", struct.pack("<l", -(2**31))),
    ("UV", struct.pack("<Q", 2**64 - 1)),
    ("SV", struct.pack("<2q", -(2**63), 7)),
    ("FL", struct.pack("<2f", 1.5, float("nan"))),
    ("FL", b"\x00\x00\x80"),
    ("FD", struct.pack("<d", -0.0)),
    ("FD", struct.pack("<d", float("inf"))),
    ("AT", struct.pack("<HH", 0x0010, 0x0010)),
    ("AT", struct.pack("<4H", 0x0010, 0x0010, 0x7FE0, 0x0010)),
    ("AT", b"\x10\x00\x10\x00\x20"),
    ("AT", b"\x10\x00"),
    # binary values: inline and bulk
    ("OB", b"\x00\x01\x02\x03"),
    ("OB", bytes(range(256)) * 8),
    ("OB", bytes(768)),  # (1024 // 4) * 3: the last inline length at the default threshold
    ("OB", bytes(769)),
    ("OW", b"\x00\x01" * 700),
    ("OF", struct.pack("<2f", 1.0, 2.0)),
    ("OD", struct.pack("<d", 1.0)),
    ("OL", struct.pack("<L", 7)),
    ("OV", struct.pack("<Q", 7)),
    ("UN", b"\x00\x01"),
]


@pytest.mark.parametrize("charset", ["ISO_IR 192", None, "ISO_IR 100", "GB18030"])
@pytest.mark.parametrize(("vr", "value"), CASES)
def test_crafted_values_as_pydicom(vr: str, value: bytes, charset: str | None) -> None:
    assert_same_as_pydicom(crafted(element(GENERIC, vr, value), charset=charset))


@pytest.mark.parametrize(("vr", "value"), CASES)
def test_empty_and_summary_elements_as_pydicom(vr: str, value: bytes) -> None:
    """The same values as the attributes ingest checks or summarises, and as empty values."""
    assert_same_as_pydicom(crafted(element(GENERIC, vr, b"")))
    for keyword, tag in (
        ("PatientName", 0x00100010),
        ("AccessionNumber", 0x00080050),
        ("StudyInstanceUID", 0x0020000D),
    ):
        assert_same_as_pydicom(crafted(element(tag, vr, value), omit=(keyword,)))
    for tag in (0x00280008, 0x00280010, 0x00281101):  # NumberOfFrames, Rows, a LUT descriptor
        assert_same_as_pydicom(crafted(element(tag, vr, value)))


@pytest.mark.parametrize(
    "charset",
    [
        "ISO 2022 IR 87",  # a first character set the road does not decode
        "ISO 2022 IR 6\\ISO 2022 IR 87",  # ASCII first: the road decodes values without escapes
        "ISO_IR 144",
        "ISO_IR 100\\",
        "NOT A CHARSET",
        "",
    ],
)
@pytest.mark.parametrize(
    "value", [b"Yamada^Tarou", b"\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", b"\xe5\xbc\xa0", b"A\\B"]
)
def test_other_character_sets_as_pydicom(charset: str, value: bytes) -> None:
    for vr in ("PN", "SH", "LO", "ST", "UT", "CS"):
        assert_same_as_pydicom(crafted(element(GENERIC, vr, value), charset=charset))


# ---- sequences -----------------------------------------------------------------------------

PLAIN_ITEM = (
    element(0x00080100, "SH", b"T-D1100 ")
    + element(0x00080102, "SH", b"SRT ")
    + element(0x00080104, "LO", b"Chest")
)
# nested, binary (bulk inside an item), a private element in an item
NESTED = element(
    0x00082112,
    "SQ",
    item(
        element(0x00080100, "SH", b"X")
        + element(0x00081110, "SQ", item(element(0x00081150, "UI", b"1.2.3\0")))
        + element(0x00091010, "LO", b"private")
        + element(0x00282000, "OB", bytes(2000))
    ),
)
SEQUENCES: list[bytes] = [
    element(0x00081032, "SQ", item(PLAIN_ITEM)),
    element(0x00081032, "SQ", item(PLAIN_ITEM) + item(b"") + item(PLAIN_ITEM)),
    element(0x00081032, "SQ", b""),
    element(0x00081032, "SQ", item(PLAIN_ITEM, undefined=True)),
    element(0x00081032, "SQ", item(PLAIN_ITEM)[:-1]),  # an item longer than the sequence
    element(0x00081032, "SQ", item(PLAIN_ITEM) + b"\xfe\xff\xdd\xe0\0\0\0\0"),  # a delimiter
    element(0x00081032, "SQ", item(PLAIN_ITEM)[:12]),  # cut inside an item's element
    element(0x00081032, "SQ", struct.pack("<HHL", 0x0008, 0x0100, 4) + b"ABCD"),  # no item tag
    NESTED,
    # items with elements out of order, repeated, with their own character set
    element(
        0x00081032, "SQ", item(element(0x00080104, "LO", b"b") + element(0x00080100, "SH", b"a"))
    ),
    element(
        0x00081032, "SQ", item(element(0x00080100, "SH", b"a") + element(0x00080100, "SH", b"b"))
    ),
    element(
        0x00081032,
        "SQ",
        item(
            element(0x00080005, "CS", b"GB18030")
            + element(0x00080104, "LO", "张".encode("gb18030"))
        ),
    ),
    element(
        0x00081032,
        "SQ",
        item(element(0x00080005, "CS", b"ISO_IR 100") + element(0x00080104, "LO", "é".encode())),
    ),
    element(0x00081032, "SQ", item(element(0x00091110, "SQ", item(PLAIN_ITEM)))),  # private SQ
    element(0x00091032, "SQ", item(PLAIN_ITEM)),  # a private sequence
    element(0x00081032, "SQ", item(element(0x00080100, "SH", b"S" * 17))),  # a warning inside
    element(0x00283010, "SQ", item(element(0x00283002, "SS", struct.pack("<3h", -1, 0, 16)))),
    element(0x00081032, "SQ", item(element(0x00080100, "XY", b"??"))),  # an unknown VR inside
    element(
        0x00081032,
        "SQ",
        item(element(0x00280103, "US", b"\x01\x00") + element(0x00283002, "US", b"\0\0\0\0\x10\0")),
    ),
    element(0x00081032, "SQ", item(b"\x08\x00\x00\x01\x04\x00\x00\x00ABCD")),  # implicit inside
]


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize(
    "pixel_representation",
    [b"", element(0x00280103, "US", b"\x01\x00"), element(0x00280103, "US", b"\x01")],
)
def test_sequences_as_pydicom(sequence: bytes, pixel_representation: bytes) -> None:
    assert_same_as_pydicom(crafted(sequence, pixel_representation))


def test_pixel_representation_read_after_a_sequence() -> None:
    """pydicom reads Pixel Representation when it converts a sequence: its warning comes then,
    before those of the elements between the sequence and it."""
    data = crafted(
        SEQUENCES[0],
        element(GENERIC - 0x10000, "LO", b"L" * 65),
        element(0x00280103, "SH", b"P" * 17),
    )
    assert_same_as_pydicom(data)
    _, warned = _outcome(to_json_dict, data, BULK_THRESHOLD, _handler)
    assert [w[-6:] for w in warned] == ["VR SH.", "VR LO."]


# ---- hypothesis: random values of random VRs, and mutations inside element values -----------

# Value pieces: separators, padding, signs and digits, escapes, non-ASCII in the character sets,
# and runs at the validation limits (SH 16, LO and PN groups 64, IS 12).
CHUNKS = [bytes([byte]) for byte in b"\\ \x00=^.eE+-0179Az_\t\n\r\x1b\x85\xa0\xe5\xff"] + [
    b"\x1b$B",
    b"\xc3\xa9",
    "张".encode(),
    "张".encode("gb18030"),
    b"nan",
    b"inf",
    b"1.5",
    b"1.2.840",
    b"A" * 16,
    b"B" * 63,
    b"9" * 12,
]
# Every VR, then SQ and an unknown one.
# fmt: off
VRS = [
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR",
    "US", "UT", "UV", "SQ", "XY",
]
# fmt: on
TAGS = {  # tag: the keyword build() writes there (left out when the tag is drawn)
    GENERIC: None,
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00080060: "Modality",
    0x0020000D: "StudyInstanceUID",
    0x00080016: "SOPClassUID",
    0x00280008: None,
    0x00280011: None,
    0x00281102: None,
}


ITEM_TAGS = [0x00080100, 0x00080104, 0x00091010, 0x00280103, 0x00400555]


@st.composite
def crafted_files(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from(sorted(TAGS)))
    vr = draw(st.sampled_from(VRS))
    value = b"".join(draw(st.lists(st.sampled_from(CHUNKS), max_size=10)))
    if vr == "SQ":  # a sequence of items of random elements
        value = b""
        for _ in range(draw(st.integers(0, 2))):
            tags = draw(st.sets(st.sampled_from(ITEM_TAGS), max_size=3))
            body = b"".join(
                element(t, draw(st.sampled_from(VRS[:-2])), draw(st.sampled_from(CHUNKS)))
                for t in sorted(tags)
            )
            value += item(body, undefined=draw(st.booleans()))
    charset = draw(st.sampled_from(["ISO_IR 192", None, "GB18030", "ISO_IR 100"]))
    keyword = TAGS[tag]
    return crafted(element(tag, vr, value), charset=charset, omit=(keyword,) if keyword else ())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crafted_files())
def test_random_values_as_pydicom(data: bytes) -> None:
    assert_same_as_pydicom(data)


def _value_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, length) in ``data`` of each top-level element value, sequences included."""
    ds = dcmread(io.BytesIO(data))
    return [
        (raw.value_tell, raw.length)
        for raw in ds._dict.values()
        if not isinstance(raw, DataElement) and 0 < raw.length < 0xFFFFFFFF
    ]


SAMPLES = [
    bundled("CT_small.dcm").read_bytes(),
    bundled("MR_small.dcm").read_bytes(),
    bundled("MR_small_implicit.dcm").read_bytes(),
    bundled("rtplan.dcm").read_bytes(),
    crafted(SEQUENCES[1], NESTED, element(0x00280103, "US", b"\x00\x00")),
    build(charset="GB18030", patient_name="Zhang^San=张^三", PatientID="身份证110101"),
]


def values_mutated(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``samples`` with bytes changed inside element values (text, numbers, items)."""
    spans = [_value_spans(sample) for sample in samples]

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        index = draw(st.integers(0, len(samples) - 1))
        data = bytearray(samples[index])
        for _ in range(draw(st.integers(1, 3))):
            start, length = draw(st.sampled_from(spans[index]))
            at = start + draw(st.integers(0, length - 1))
            chunk = draw(st.sampled_from(CHUNKS))[: start + length - at]
            data[at : at + len(chunk)] = chunk
        return bytes(data)

    return mutated()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values_mutated(SAMPLES))
def test_mutated_values_as_pydicom(data: bytes) -> None:
    assert_same_as_pydicom(data)


# ---- the road is taken -----------------------------------------------------------------------


def _fallbacks(data: bytes) -> tuple[list[int], int]:
    """ingest ``data``; the tags pydicom converted, and the calls of the converted road."""
    converted: list[int] = []
    calls = 0
    real_element = vars(pydicom.dataset)["convert_raw_data_element"]
    real_value = vars(imaging.dicomjson)["convert_value"]

    def element_spy(raw: Any, **kwargs: Any) -> Any:
        converted.append(int(raw.tag))
        return real_element(raw, **kwargs)

    def value_spy(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_value(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom.dataset, "convert_raw_data_element", element_spy)
        patch.setattr(imaging.dicomjson, "convert_value", value_spy)
        assert isinstance(ingest(data), Instance)
    return converted, calls


# What pydicom's reader converts itself (the file meta group length and transfer syntax, the
# character set), and the Pixel Representation read after a sequence (as pydicom does).
READER = {0x00020000, 0x00020010, 0x00080005, 0x00280103}


@pytest.mark.parametrize(
    ("data", "ambiguous"),
    [
        pytest.param(bundled("CT_small.dcm").read_bytes(), set(), id="CT_small"),
        pytest.param(bundled("MR_small.dcm").read_bytes(), set(), id="MR_small"),
        # implicit VR: Smallest and Largest Image Pixel Value are "US or SS", pydicom's to decide
        pytest.param(
            bundled("MR_small_implicit.dcm").read_bytes(),
            {0x00280106, 0x00280107},
            id="MR_small_implicit",
        ),
        pytest.param(
            crafted(SEQUENCES[1], NESTED, element(GENERIC, "DS", b"1.5\\2")), set(), id="sequences"
        ),
        pytest.param(
            build(charset="GB18030", patient_name="Zhang^San=张^三", PatientID="身份证110101"),
            set(),
            id="gb18030",
        ),
        pytest.param(build(charset="ISO_IR 100", patient_name="Müller^Jürgen"), set(), id="latin1"),
        pytest.param(build(charset=None), set(), id="no-charset"),
    ],
)
def test_ingest_takes_the_direct_road(data: bytes, ambiguous: set[int]) -> None:
    converted, calls = _fallbacks(data)
    assert set(converted) <= READER | ambiguous
    assert calls == 0


def test_a_private_creator_of_two_values_as_pydicom() -> None:
    """pydicom warns about it as it names a binary element of its block written inline."""
    data = bundled("CT_small.dcm").read_bytes().replace(b"GEMS_PARM_01", b"\\EMS_PARM_01", 1)
    assert_same_as_pydicom(data)
    converted, _ = _fallbacks(data)
    assert {0x00431028, 0x00431029, 0x0043102A} <= set(converted)


def test_the_road_is_closed_with_other_reading_settings() -> None:
    data = bundled("CT_small.dcm").read_bytes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config.settings, "reading_validation_mode", config.IGNORE)
        _, calls = _fallbacks(data)
        assert calls > 100
        assert_same_as_pydicom(data)


def test_direct_attribute() -> None:
    ds = dcmread(io.BytesIO(bundled("CT_small.dcm").read_bytes()))
    assert direct_attribute(ds, 0x00100010) == {
        "vr": "PN",
        "Value": [{"Alphabetic": "CompressedSamples^CT1"}],
    }
    assert direct_attribute(ds, 0x00280030) == {"vr": "DS", "Value": [0.661468, 0.661468]}
    assert direct_attribute(ds, 0x7FE00010) is None  # binary: the caller has no bulk handler
    assert direct_attribute(ds, 0x00100011) is None  # absent
    ds.PatientName  # noqa: B018
    assert direct_attribute(ds, 0x00100010) is None  # converted already
    assert isinstance(ds._dict[BaseTag(0x00280030)], RawDataElement)  # nothing was converted


# ---- a small file is parsed from memory, a large one from disk: the same result -------------


def _files() -> Iterator[Any]:
    for path in sorted(map(Path, pydicom.data.get_testdata_files())):
        if path.is_file() and path.stat().st_size < 400_000:
            data = path.read_bytes()
            yield pytest.param(data, id=path.name)
            yield pytest.param(data[: len(data) * 2 // 3], id=f"{path.name}-cut")
    big_private = crafted(
        element(0x00091010, "LO", b"ACME"), element(0x00091011, "OB", bytes(100_000))
    )
    yield pytest.param(big_private, id="deferred-private-OB")
    yield pytest.param(big_private[:-1000], id="deferred-private-OB-cut")


@pytest.mark.parametrize("data", list(_files()))
def test_path_read_whole_or_from_disk(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "f.dcm"
    path.write_bytes(data)
    whole = _ingest(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imaging.ingest, "READ_WHOLE_SIZE", 0)
        on_disk = _ingest(path)
    assert _same(whole, on_disk)


# ---- ingest's completeness check, reading the data set's elements directly ------------------


def _check_complete_reference(ds: Any, size: int) -> None:
    """imaging.ingest._check_complete as it was, through ds.keys() and ds.get_item()."""
    if str(ds.file_meta.get("TransferSyntaxUID", "")) in imaging.ingest._DEFLATED:
        return
    end = 132
    last_is_raw = True
    for tag in ds.keys():  # noqa: SIM118
        raw = ds.get_item(tag, keep_deferred=True)
        last_is_raw = isinstance(raw, RawDataElement)
        if isinstance(raw, RawDataElement):
            if raw.length == 0xFFFFFFFF:
                length = len(raw.value or b"") + 8
            else:
                length = raw.length
                if raw.value is not None and len(raw.value) < length:
                    raise IngestError("truncated", f"element {tag} is shorter than its length")
            end = max(end, raw.value_tell + length)
    if end > size:
        raise IngestError("truncated", "the file ends inside a data element")
    if last_is_raw and end < size:
        raise IngestError("truncated", "the file ends inside an element header")


UNDEFINED_SQ = (
    struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    + item(PLAIN_ITEM)
    + b"\xfe\xff\xdd\xe0\0\0\0\0"
)


def _complete_inputs() -> Iterator[Any]:
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm"):
        data = bundled(name).read_bytes()
        for cut in (len(data), len(data) - 1, len(data) - 7, len(data) * 3 // 4, 400):
            yield pytest.param(data[:cut], id=f"{name}-{cut}")
    ends_in_sequence = crafted(UNDEFINED_SQ)
    for cut in (0, 3, 8, 20):
        yield pytest.param(ends_in_sequence[: len(ends_in_sequence) - cut], id=f"sequence-{cut}")
    yield pytest.param(ends_in_sequence + b"\x10\x00", id="sequence-and-a-cut-header")


@pytest.mark.parametrize("data", list(_complete_inputs()))
def test_check_complete_as_before(data: bytes) -> None:
    def outcome(check: Callable[[Any, int], None]) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = dcmread(io.BytesIO(data), defer_size=imaging.ingest.DEFER_SIZE)
            except Exception as exc:
                return type(exc)
        try:
            check(ds, len(data))
        except IngestError as exc:
            return exc.code, exc.message
        return None

    assert outcome(imaging.ingest._check_complete) == outcome(_check_complete_reference)
