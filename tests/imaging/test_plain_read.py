"""The plain read (imaging.dicomjson.read_plain): ingest reads a plain file straight from its bytes.

A file read that way must give the very instance pydicom's road gives (every field, the model, the
warnings), and a file it does not read (anything unusual, broken or not) must be left to pydicom.
Here: every file pydicom bundles, crafted ones at the edges of what the plain read takes, and
hypothesis-made mutations anywhere in a file (headers, lengths, delimiters, the file meta), each
compared with ingest through pydicom alone. And that the road is taken for the files a modality
sends: a silent fallback would pass every equality test while losing the speed.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

import imaging.ingest
from imaging.dicomjson import read_plain
from imaging.ingest import BULK_TAGS, Instance
from tests.imaging.dicomfiles import SERIES_UID, STUDY_UID, build, bundled
from tests.imaging.test_dicomjson_direct import (
    PLAIN_ITEM,
    assert_same_ingest,
    crafted,
    element,
    item,
    values_mutated,
)


def _plain(data: bytes) -> Any:
    return read_plain(data, imaging.ingest.BULK_THRESHOLD, lambda _e: "bulk", BULK_TAGS)


def _no_pydicom(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("pydicom was asked to read the file")


def assert_plain(data: bytes) -> Instance:
    """ingest reads ``data`` without pydicom, and as pydicom's road does."""
    assert _plain(data) is not None
    assert_same_ingest(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imaging.ingest, "dcmread", _no_pydicom)
        instance = imaging.ingest.ingest(data)
    assert instance.warnings == ()
    return instance


def assert_not_plain(data: bytes) -> None:
    """The plain read gives ``data`` way; ingest (through pydicom) is as before."""
    assert _plain(data) is None or imaging.ingest._plain(data) is None
    assert_same_ingest(data)


# ---- files a modality sends: read plainly --------------------------------------------------


def _set_syntax(data: bytes, uid: str) -> bytes:
    """``data`` with another Transfer Syntax UID (its length and the group length set)."""
    at = data.index(b"\x02\x00\x10\x00UI")
    (length,) = struct.unpack_from("<H", data, at + 6)
    value = uid.encode() + b"\x00" * (len(uid) % 2)
    (group_length,) = struct.unpack_from("<L", data, 140)
    meta = struct.pack("<L", group_length + len(value) - length)
    header = struct.pack("<HH2sH", 2, 0x10, b"UI", len(value))
    return data[:140] + meta + data[144:at] + header + value + data[at + 8 + length :]


# Tags after the built file's last one (Series Instance UID), as a plain data set's ascend.
DEFINED = element(
    0x00400555,
    "SQ",
    item(PLAIN_ITEM)
    + item(b"")
    + item(
        element(0x00080100, "SH", b"X")
        + element(0x00081110, "SQ", item(element(0x00081150, "UI", b"1.2.3\0")))
        + element(0x00091010, "LO", b"private")
        + element(0x00282000, "OB", bytes(2000))
    ),
)
REFERENCED = element(0x00081150, "UI", b"1.2.840.10008.5.1.4.1.1.2\x00") + element(
    0x00081155, "UI", b"1.2.3.4\x00"
)


def undefined_sequence(*items: bytes) -> bytes:
    """Content Sequence (0040,A730) of undefined length."""
    header = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    return header + b"".join(items) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


PIXELS = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
FRAGMENTS = (
    b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # an empty basic offset table
    + b"\xfe\xff\x00\xe0\x04\x00\x00\x00\xff\xd8\xff\xd9"
    + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
)


def implicit(data: bytes) -> bytes:
    """``data`` written again in implicit VR little endian."""
    ds = dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


SEQUENCES = crafted(
    DEFINED,
    undefined_sequence(item(REFERENCED, undefined=True), item(b""), item(REFERENCED)),
)
UNDEFINED = crafted(undefined_sequence(item(REFERENCED, undefined=True), item(REFERENCED)))
ENCAPSULATED = _set_syntax(crafted(PIXELS + FRAGMENTS, omit=("PixelData",)), JPEGBaseline8Bit)

PLAIN = [
    pytest.param(bundled("CT_small.dcm").read_bytes(), id="CT_small"),
    pytest.param(bundled("MR_small.dcm").read_bytes(), id="MR_small"),
    pytest.param(bundled("examples_jpeg2k.dcm").read_bytes(), id="jpeg2k"),
    pytest.param(bundled("SC_rgb_jpeg_dcmtk.dcm").read_bytes(), id="jpeg"),
    pytest.param(
        build(charset="GB18030", patient_name="Zhang^San=张^三", PatientID="身份证110101"),
        id="gb18030",
    ),
    pytest.param(build(charset="ISO_IR 192", patient_name="张^三"), id="utf8"),
    pytest.param(build(charset="ISO_IR 100", patient_name="Müller^Jürgen"), id="latin1"),
    pytest.param(build(charset=None), id="no-charset"),
    pytest.param(SEQUENCES, id="sequences"),
    pytest.param(crafted(undefined_sequence()), id="empty-undefined-sequence"),
    pytest.param(ENCAPSULATED, id="encapsulated"),
    pytest.param(implicit(build(charset="GB18030", patient_name="张^三")), id="implicit"),
    pytest.param(implicit(UNDEFINED), id="implicit-sequences"),
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_files_are_read_without_pydicom(data: bytes) -> None:
    assert_plain(data)


def test_what_the_plain_read_gives() -> None:
    instance = assert_plain(bundled("examples_jpeg2k.dcm").read_bytes())
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    assert instance.metadata["7FE00010"] == {"vr": "OB", "BulkDataURI": "7FE00010"}
    assert instance.number_of_frames == 1
    ct = dcmread(io.BytesIO(CT))
    ct.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for tag in [e.tag for e in ct if e.tag.is_private or " or " in dictionary_VR(e.tag)]:
        if tag != 0x7FE00010:  # pydicom's to read in implicit VR: private, "US or SS"...
            del ct[tag]
    out = io.BytesIO()
    ct.save_as(out, enforce_file_format=True)
    in_implicit_vr = assert_plain(out.getvalue())
    assert in_implicit_vr.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "7FE00010"}
    assert in_implicit_vr.metadata["00280030"] == {"vr": "DS", "Value": [0.661468, 0.661468]}
    chinese = assert_plain(build(charset="GB18030", patient_name="Zhang^San=张^三"))
    assert chinese.patient_name == "Zhang^San=张^三"
    assert chinese.specific_character_set == ("GB18030",)


def test_a_path_read_whole_is_read_plainly(tmp_path: Path) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    path = tmp_path / "ct.dcm"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imaging.ingest, "dcmread", _no_pydicom)
        assert imaging.ingest.ingest(path) == imaging.ingest.ingest(data)


# ---- files left to pydicom ---------------------------------------------------------------------

CT = bundled("CT_small.dcm").read_bytes()
BUILT = build(charset="ISO_IR 192")
NOT_PLAIN = [
    pytest.param(_set_syntax(CT, ExplicitVRBigEndian), id="big-endian-claimed"),
    pytest.param(bundled("MR_small_bigendian.dcm").read_bytes(), id="big-endian"),
    pytest.param(bundled("image_dfl.dcm").read_bytes(), id="deflated"),
    pytest.param(_set_syntax(CT, ImplicitVRLittleEndian), id="implicit-claimed"),
    pytest.param(build(charset="ISO 2022 IR 87"), id="iso2022"),
    pytest.param(build(charset="ISO_IR 192\\GB18030"), id="two-charsets"),
    pytest.param(CT[:-1], id="cut-by-one"),
    pytest.param(CT[:-10_000], id="cut-in-pixels"),
    pytest.param(CT + b"\x00" * 5, id="five-bytes-more"),
    pytest.param(CT + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", id="item-delimiter-after"),
    pytest.param(crafted(element(0x00091011, "OB", b"\x00" * 4)[:-2]), id="short-value"),
    pytest.param(crafted(element(0x00280103, "US", b"\x01")), id="us-of-one-byte"),
    pytest.param(crafted(element(0x00089999, "UN", b"ABCD")), id="un"),
    pytest.param(crafted(undefined_sequence(item(REFERENCED))[:-8]), id="no-sequence-delimiter"),
    pytest.param(crafted(undefined_sequence(item(REFERENCED)) + b"\x00"), id="a-byte-more"),
    pytest.param(crafted(element(0x00400555, "SQ", item(REFERENCED))[:-1]), id="short-sequence"),
    pytest.param(
        crafted(undefined_sequence(item(REFERENCED, undefined=True)[:-8])), id="no-item-delimiter"
    ),
    pytest.param(
        _set_syntax(crafted(PIXELS + FRAGMENTS[:-8], omit=("PixelData",)), JPEGBaseline8Bit),
        id="fragments-without-delimiter",
    ),
    pytest.param(
        BUILT[:132] + BUILT[132:140] + b"\x01\x00\x00\x00" + BUILT[144:], id="meta-length"
    ),
    pytest.param(BUILT[:128] + b"DICN" + BUILT[132:], id="no-dicm"),
    pytest.param(build(charset="ISO_IR 192", omit=("SOPInstanceUID",)), id="no-sop-instance"),
]


def _series(uid: str = SERIES_UID) -> bytes:
    return element(0x0020000E, "UI", uid.encode() + b"\x00" * (len(uid) % 2))


def _looks_explicit() -> bytes:
    """An implicit VR file whose first element's length reads as letters ("CD", 17475 bytes),
    so that pydicom, warning, reads it as explicit VR."""
    data = implicit(build(charset=None))
    (meta_length,) = struct.unpack_from("<L", data, 140)
    start = 144 + meta_length
    value = b"ORIGINAL\\PRIMARY".ljust(0x4443, b" ")
    return data[:start] + struct.pack("<HHL", 0x0008, 0x0008, len(value)) + value + data[start:]


UIDS = ("StudyInstanceUID", "SeriesInstanceUID")
# (0043,0010) "GEMS_PARM_01" made "\\EMS_PARM_01": two values, the first empty; the block has OB
LISTED_CREATOR = CT.replace(b"GEMS_PARM_01", b"\\EMS_PARM_01", 1)
OWN_CHARSET = item(
    element(0x00080005, "CS", b"ISO_IR 192") + element(0x00100010, "PN", "张^三".encode())
)
NOT_PLAIN += [
    # what pydicom would read the same way, but the plain read does not take (by choice)
    pytest.param(crafted(element(0x00100010, "PN", b"Again")), id="repeated-tag"),
    pytest.param(
        _set_syntax(
            crafted(PIXELS + FRAGMENTS[:-4] + b"\x01\x00\x00\x00", omit=("PixelData",)),
            JPEGBaseline8Bit,
        ),
        id="delimiter-with-a-length",
    ),
    pytest.param(
        crafted(element(0x00400555, "SQ", item(REFERENCED) + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")),
        id="delimiter-in-a-defined-sequence",
    ),
    # what pydicom reads otherwise (a warning: it names a private binary element of the block)
    pytest.param(LISTED_CREATOR, id="private-creator-of-two-values"),
    pytest.param(
        crafted(element(0x00400555, "SQ", OWN_CHARSET), charset="ISO_IR 100"),
        id="item-with-its-own-charset",
    ),
    pytest.param(_looks_explicit(), id="implicit-that-looks-explicit"),
    # what ingest refuses after reading
    pytest.param(
        crafted(element(0x0020000D, "LO", b"not.a.uid"), _series(), omit=UIDS), id="uid-as-lo"
    ),
    pytest.param(
        crafted(element(0x0020000D, "UI", STUDY_UID.encode()), _series("1.2.3\\4.5"), omit=UIDS),
        id="two-series-uids",
    ),
]


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_unusual_or_broken_files_are_left_to_pydicom(data: bytes) -> None:
    assert_not_plain(data)


# ---- every bundled file, and mutations anywhere --------------------------------------------------


def _bundled() -> Iterator[Any]:
    for path in sorted(map(Path, pydicom.data.get_testdata_files())):
        if path.is_file() and path.stat().st_size < 2_000_000:
            yield pytest.param(path.read_bytes(), id=path.name)


@pytest.mark.parametrize("data", list(_bundled()))
def test_bundled_files_as_pydicom(data: bytes) -> None:
    assert_same_ingest(data)


SAMPLES = [
    CT,
    bundled("MR_small_implicit.dcm").read_bytes(),
    SEQUENCES,
    implicit(UNDEFINED),
    ENCAPSULATED,
    build(charset="GB18030", patient_name="Zhang^San=张^三", PatientID="身份证110101"),
]
CHUNKS = [
    b"\x00",
    b"\xff",
    b"\xff\xff\xff\xff",
    b"\xfe\xff\x00\xe0",
    b"\xfe\xff\x0d\xe0",
    b"\xfe\xff\xdd\xe0",
    b"SQ\x00\x00",
    b"OB",
    b"UN",
    b"CS",
    b"\x08\x00\x05\x00",
    b"\x02\x00",
]


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A sample with bytes changed, inserted, or cut anywhere, the file meta included."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        if len(data) <= 132:
            break
        at = draw(st.integers(128, len(data) - 1))
        kind = draw(st.sampled_from(["overwrite", "insert", "delete", "cut"]))
        chunk = draw(st.sampled_from(CHUNKS))
        if kind == "overwrite":
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = chunk
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_mutated_files_as_pydicom(data: bytes) -> None:
    assert_same_ingest(data)


# Values changed in place, headers untouched: most of these files stay plain, and each value the
# direct writers take or refuse is compared with pydicom's reading of it.
PLAIN_SAMPLES = [CT, SEQUENCES, build(charset="GB18030", patient_name="张^三"), implicit(UNDEFINED)]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values_mutated(PLAIN_SAMPLES))
def test_mutated_values_as_pydicom(data: bytes) -> None:
    assert_same_ingest(data)
