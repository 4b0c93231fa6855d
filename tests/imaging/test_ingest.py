"""Ingest validation: real files in, typed errors for everything else."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

import imaging.ingest
from imaging.ingest import IngestError, IngestErrorCode, Instance, ingest
from tests.imaging.dicomfiles import INSTANCE_UID, SECONDARY_CAPTURE, STUDY_UID, build, bundled

CT = bundled("CT_small.dcm").read_bytes()


@pytest.mark.parametrize(
    ("name", "modality", "frames", "rows"),
    [
        ("CT_small.dcm", "CT", 1, 128),
        ("MR_small.dcm", "MR", 1, 64),
        ("SC_rgb_rle_2frame.dcm", "OT", 2, 100),  # multi-frame, RLE compressed
        ("JPEG2000.dcm", "NM", 1, 1024),  # compressed
        ("test-SR.dcm", "SR", None, None),
        ("waveform_ecg.dcm", "ECG", None, None),
        ("ExplVR_BigEnd.dcm", "US", 1, 60),
    ],
)
def test_bundled_files_ingest(
    name: str, modality: str, frames: int | None, rows: int | None
) -> None:
    path = bundled(name)
    by_path = ingest(path)
    assert by_path == ingest(path.read_bytes())
    assert by_path.modality == modality
    assert by_path.number_of_frames == frames
    assert by_path.rows == rows
    for uid in (by_path.study_uid, by_path.series_uid, by_path.instance_uid, by_path.sop_class_uid):
        assert uid and len(uid) <= 64
    json.dumps(by_path.metadata)  # the DICOM JSON model is plain JSON
    assert by_path.metadata["0020000D"]["Value"] == [by_path.study_uid]


def test_ct_summary_and_bulk_data_left_out() -> None:
    ct = ingest(CT)
    assert ct.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert ct.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert ct.patient_name == "CompressedSamples^CT1"
    assert ct.columns == 128
    assert ct.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "7FE00010"}
    assert len(json.dumps(ct.metadata)) < len(CT) / 2


def test_waveform_data_is_bulk_with_its_path() -> None:
    ecg = ingest(bundled("waveform_ecg.dcm"))
    groups = ecg.metadata["54000100"]["Value"]
    assert [g["54001010"]["BulkDataURI"] for g in groups] == [
        "54000100/0/54001010",
        "54000100/1/54001010",
    ]
    assert all("InlineBinary" not in g["54001010"] for g in groups)


@pytest.mark.parametrize("charset", ["GB18030", "ISO_IR 192"])
def test_chinese_patient_names(charset: str) -> None:
    data = build(charset=charset, patient_name="张三", PatientID="身份证110101")
    encoding = "gb18030" if charset == "GB18030" else "utf-8"
    assert "张三".encode(encoding) in data  # written in that character set
    instance = ingest(data)
    assert instance.patient_name == "张三"
    assert instance.patient_id == "身份证110101"
    assert instance.specific_character_set == (charset,)
    assert instance.metadata["00100010"]["Value"] == [{"Alphabetic": "张三"}]
    assert instance.warnings == ()


def test_gb18030_and_utf8_differ_on_disk_but_read_the_same() -> None:
    gb = build(charset="GB18030", patient_name="Zhang^San=张^三")
    utf8 = build(charset="ISO_IR 192", patient_name="Zhang^San=张^三")
    assert gb != utf8
    assert ingest(gb).patient_name == ingest(utf8).patient_name == "Zhang^San=张^三"


def test_built_file_summary() -> None:
    instance = ingest(build())
    assert (instance.study_uid, instance.instance_uid) == (STUDY_UID, INSTANCE_UID)
    assert (instance.patient_sex, instance.patient_birth_date) == ("M", "19600101")
    assert (instance.study_date, instance.study_time, instance.accession_number) == (
        "20261122",
        "101500",
        "A42",
    )
    assert instance.number_of_frames is None


def _code(data: bytes) -> str:
    with pytest.raises(IngestError) as caught:
        ingest(data)
    assert caught.value.message
    return caught.value.code


def _patch(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


def test_bad_input_codes() -> None:
    assert _code(b"") == "not-dicom"
    assert _code(b"Patient: Zhang San\nNot a DICOM file.\n" * 10) == "not-dicom"
    assert _code(CT[1:]) == "not-dicom"  # a 127-byte preamble
    assert _code(CT[128:]) == "not-dicom"  # no preamble at all
    assert _code(CT[:128] + b"DICN" + CT[132:]) == "not-dicom"
    assert _code(CT[:130]) == "truncated"
    assert _code(CT[: len(CT) // 2]) == "truncated"
    assert _code(CT[:-1]) == "truncated"
    assert _code(CT[: len(CT) - 3]) == "truncated"
    assert _code(bundled("MR_truncated.dcm").read_bytes()) == "truncated"
    assert _code(bundled("meta_missing_tsyntax.dcm").read_bytes()) == "missing-meta"
    assert _code(build(omit=("SOPInstanceUID",))) == "missing-uid"
    assert _code(build(omit=("StudyInstanceUID",))) == "missing-uid"
    assert _code(build(SeriesInstanceUID="")) == "missing-uid"
    # The meta header comes first: change only its copy of the UID.
    one = build()
    other_instance = one.replace(INSTANCE_UID.encode(), INSTANCE_UID[:-1].encode() + b"9", 1)
    assert _code(other_instance) == "inconsistent-meta"
    other_class = one.replace(SECONDARY_CAPTURE.encode(), SECONDARY_CAPTURE[:-1].encode() + b"8", 1)
    assert _code(other_class) == "inconsistent-meta"
    assert _code(build(StudyInstanceUID="1.2.3." + "4" * 70)) == "bad-uid"
    good = build(StudyInstanceUID="1.2.3.4.5")
    assert _code(_patch(good, b"1.2.3.4.5\x00", b"1.2.3.4.X\x00")) == "bad-uid"
    assert _code(_patch(good, b"1.2.3.4.5\x00", b"1.2.3..45\x00")) == "bad-uid"


def test_lying_length_is_refused() -> None:
    good = build(AccessionNumber="A42")
    at = good.index(b"A42")
    # Explicit VR SH: 2-byte length just before the value; claim more than the file holds.
    lying = good[: at - 2] + (60000).to_bytes(2, "little") + good[at:]
    assert _code(lying) == "truncated"


SAMPLES = [CT, bundled("MR_small.dcm").read_bytes(), bundled("test-SR.dcm").read_bytes()]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "overwrite":  # most often a length or a VR
            chunk = draw(
                st.sampled_from(
                    [b"\xff\xff\xff\xff", b"\x00\x00", b"SQ", b"UN", b"\xfe\xff\x00\xe0"]
                )
            )
            data[at : at + len(chunk)] = chunk
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_give_a_result_or_an_ingest_error(data: bytes) -> None:
    try:
        result = ingest(data)
    except IngestError as exc:
        code: str = exc.code
    else:
        assert isinstance(result, Instance)
        json.dumps(result.metadata)
        return
    assert code in get_args(IngestErrorCode)


def _large_file(tmp_path: Path, megabytes: int) -> Path:
    """CT_small with its pixel data grown to ``megabytes`` (a multi-frame-sized value)."""
    ds = dcmread(bundled("CT_small.dcm"))
    ds.NumberOfFrames = megabytes * (1 << 20) // (128 * 128 * 2)
    ds.PixelData = bytes(megabytes << 20)
    path = tmp_path / "large.dcm"
    ds.save_as(path)
    return path


def test_pixel_data_stays_on_disk_when_ingesting_a_path(tmp_path: Path) -> None:
    path = _large_file(tmp_path, 32)
    tracemalloc.start()
    try:
        instance = ingest(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert instance.number_of_frames == 1024
    assert instance.metadata["7FE00010"] == {"vr": "OW", "BulkDataURI": "7FE00010"}
    assert peak < 4 << 20  # the 32 MB value was never read


def test_a_path_cut_inside_pixel_data_is_truncated(tmp_path: Path) -> None:
    path = _large_file(tmp_path, 2)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[: -(1 << 20)])
    with pytest.raises(IngestError) as caught:
        ingest(cut)
    assert caught.value.code == "truncated"
    with pytest.raises(IngestError) as missing:
        ingest(tmp_path / "absent.dcm")
    assert missing.value.code == "not-dicom"


@pytest.mark.parametrize("whole", [True, False])
def test_encapsulated_pixel_data_over_the_defer_size_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Compressed pixel data longer than DEFER_SIZE is left unread when ingesting a path; its
    end is pydicom's to find, and a whole file is not "truncated" for it (it was, before)."""
    data = bundled("examples_jpeg2k.dcm").read_bytes()  # JPEG 2000, 150 KB of fragments
    ds = dcmread(DicomBytesIO(data))
    assert ds["PixelData"].is_undefined_length  # encapsulated
    assert len(ds.PixelData) > imaging.ingest.DEFER_SIZE
    if not whole:
        monkeypatch.setattr(imaging.ingest, "READ_WHOLE_SIZE", 0)
    monkeypatch.setattr(imaging.ingest, "_plain", lambda data: None)  # pydicom's road
    path = tmp_path / "j2k.dcm"
    path.write_bytes(data)
    assert ingest(path) == ingest(data)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-5000])
    with pytest.raises(IngestError) as caught:
        ingest(cut)
    assert caught.value.code == "truncated"


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_model_text_is_strict_json_with_null_for_what_json_cannot_say() -> None:
    # (0020,0013) IS and (0028,0030) DS come after the built file's last element: a plain file
    spacing = b"nan\\inf\\-Infinity\\1.5 "
    data = (
        build(charset="ISO_IR 192")
        + (
            b"\x20\x00\x13\x00IS\x02\x007 "
            + b"\x28\x00\x30\x00DS"
            + len(spacing).to_bytes(2, "little")
        )
        + spacing
    )
    instance = ingest(data)
    assert instance.warnings == ()
    model = _strict(instance.metadata_json)
    assert model["00280030"] == {"vr": "DS", "Value": [None, None, None, 1.5]}
    assert model["00200013"] == {"vr": "IS", "Value": [7]}
    # an IS too long for its VR: pydicom reads it (with a warning) as an integer over 64 bits
    long_is = b"1" * 24
    data = build(charset="ISO_IR 192") + b"\x20\x00\x13\x00IS\x18\x00" + long_is
    instance = ingest(data)
    assert instance.warnings
    (value,) = instance.metadata["00200013"]["Value"]
    assert value > 2**64  # pydicom's integer of the text read as a float
    assert _strict(instance.metadata_json)["00200013"] == {"vr": "IS", "Value": [value]}
