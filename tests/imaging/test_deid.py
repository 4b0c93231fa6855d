"""Pseudonymisation (PS3.15 Basic Profile): every table row applied, nothing identifying left."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.deid import (
    DEIDENTIFICATION_METHOD,
    TABLE_E1_1,
    DeidError,
    action_for,
    pseudonymise,
    pseudonymous_uid,
)
from imaging.ingest import ingest
from imaging.wsi import TileRef, build_pyramid
from tests.imaging.dicomfiles import build, bundled
from tests.imaging.wsifiles import build_wsi

KEY = b"consortium-secret-key-0123456789"
PSEUDONYM = "HZ-2026-0042"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.8.498.55"
STUDY, SERIES, FRAME = f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"
NAME = "张三"


def _value(keyword: str, index: int) -> Any:
    """A valid, recognisable value for the attribute's VR."""
    vr = dictionary_VR(keyword).split(" or ")[0]
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "SECRET"
        item.CodingSchemeDesignator = "99LOCAL"
        item.CodeMeaning = "secret meaning"
        return Sequence([item])
    text = f"secret{index}"
    values: dict[str, Any] = {
        "AE": "SECRETAE",
        "AS": "045Y",
        "CS": "SECRET",
        "DA": "20260101",
        "DT": "20260101120000",
        "TM": "120000",
        "DS": "1.5",
        "IS": "7",
        "PN": f"Secret^Person{index}",
        "UI": f"{ROOT}.100.{index}",
        "UR": "http://192.0.2.1/secret",
        "OB": b"\x01\x02",
        "OW": b"\x01\x02",
        "FL": 1.5,
        "FD": 1.5,
        "SL": 7,
        "SS": 7,
        "UL": 7,
        "US": 7,
    }
    return values.get(vr, text)


def _base(**meta: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(meta.get("sop", f"{ROOT}.4"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = meta.get("sop", f"{ROOT}.4")
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.FrameOfReferenceUID = FRAME
    ds.Modality = "CT"
    return ds


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def everything() -> tuple[Dataset, Dataset, dict[str, str]]:
    """A data set holding every attribute of the table, and its pseudonymised output."""
    ds = _base()
    for index, keyword in enumerate(sorted(TABLE_E1_1)):
        if keyword not in ds:
            setattr(ds, keyword, _value(keyword, index))
    for n, keyword in enumerate(("ReferencedImageSequence", "SourceImageSequence")):  # X/Z/U*
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE
        item.ReferencedSOPInstanceUID = f"{ROOT}.200.{n}"
        setattr(ds, keyword, Sequence([item]))
    result = pseudonymise(_part10(ds), key=KEY, pseudonym=PSEUDONYM)
    return ds, dcmread(io.BytesIO(result.data)), result.uid_map


def test_the_table_covers_the_common_rows_with_real_keywords() -> None:
    assert len(TABLE_E1_1) >= 300
    for keyword, code in TABLE_E1_1.items():
        assert tag_for_keyword(keyword) is not None, keyword
        assert code in {"D", "Z", "X", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}, keyword
    assert action_for("X/Z/U*") == "U"
    assert action_for("X/Z/D") == action_for("X/D") == action_for("Z/D") == "D"
    assert action_for("X/Z") == "Z"


@pytest.mark.parametrize("keyword", sorted(TABLE_E1_1))
def test_every_row_of_the_table_is_applied(
    keyword: str, everything: tuple[Dataset, Dataset, dict[str, str]]
) -> None:
    original, output, uid_map = everything
    before = original[keyword]
    action = action_for(TABLE_E1_1[keyword])
    if keyword in {"PatientName", "PatientID"}:
        assert str(output[keyword].value) == PSEUDONYM
    elif action == "X":
        assert keyword not in output
    elif action == "Z" or (action == "D" and before.VR == "SQ"):
        assert keyword in output
        assert output[keyword].is_empty
    elif action == "D":
        assert keyword in output
        assert not output[keyword].is_empty
        assert str(output[keyword].value) != str(before.value)
    elif before.VR == "SQ":  # U on a sequence: kept, its instance UIDs replaced
        old_item, new_item = before.value[0], output[keyword].value[0]
        assert new_item.ReferencedSOPClassUID == old_item.ReferencedSOPClassUID
        replaced = uid_map[old_item.ReferencedSOPInstanceUID]
        assert new_item.ReferencedSOPInstanceUID == replaced
    else:
        assert str(output[keyword].value) == uid_map[str(before.value)]
        assert str(output[keyword].value).startswith("2.25.")


def test_the_result_is_marked_and_consistent(
    everything: tuple[Dataset, Dataset, dict[str, str]],
) -> None:
    original, output, uid_map = everything
    assert output.PatientIdentityRemoved == "YES"
    assert output.DeidentificationMethod == DEIDENTIFICATION_METHOD
    code = output.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
    assert output.SOPInstanceUID == uid_map[original.SOPInstanceUID]
    assert output.SOPClassUID == CT_IMAGE  # a class UID is a definition, kept
    assert output.Modality == "CT"  # not in the table: kept


def _chinese_study() -> tuple[bytes, list[str]]:
    """A GB18030 instance with the name and UIDs in many places, nested and private included."""
    ds = _base()
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = f"{NAME}^"
    ds.PatientID = "110101199003077777"
    ds.OtherPatientNames = NAME
    ds.ReferringPhysicianName = "李四"
    ds.InstitutionName = "某县人民医院"
    ds.StudyDescription = f"{NAME} 胸部CT"
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.add_new(0x00091001, "LO", NAME)
    ds.add_new(0x00091002, "UI", f"{ROOT}.77")
    series = Dataset()
    series.SeriesInstanceUID = f"{ROOT}.9"
    instance = Dataset()
    instance.ReferencedSOPClassUID = CT_IMAGE
    instance.ReferencedSOPInstanceUID = f"{ROOT}.10"
    instance.PersonName = NAME
    instance.add_new(0x00110010, "LO", "VENDOR")
    instance.add_new(0x00111001, "PN", NAME)
    series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([series])
    request = Dataset()
    request.RequestedProcedureID = "R1"
    request.ScheduledProcedureStepID = NAME
    ds.RequestAttributesSequence = Sequence([request])
    uids = [STUDY, SERIES, FRAME, f"{ROOT}.4", f"{ROOT}.9", f"{ROOT}.10", f"{ROOT}.77"]
    return _part10(ds), uids


def test_no_name_nor_uid_left_in_the_bytes() -> None:
    data, uids = _chinese_study()
    assert NAME.encode("gb18030") in data  # the source has it, in its character set
    out = pseudonymise(data, key=KEY, pseudonym=PSEUDONYM).data
    for text in (NAME, "李四", "某县人民医院", "110101199003077777"):
        for encoding in ("gb18030", "utf-8", "utf-16-le"):
            assert text.encode(encoding) not in out, (text, encoding)
    for uid in uids:
        assert uid.encode() not in out, uid
    assert ROOT.encode() not in out  # no UID of that root at all
    assert b"VENDOR" not in out  # private creators gone, nested too


def test_nested_sequences_are_cleaned() -> None:
    data, _ = _chinese_study()
    result = pseudonymise(data, key=KEY, pseudonym=PSEUDONYM)
    out = dcmread(io.BytesIO(result.data))
    assert "RequestAttributesSequence" not in out
    series = out.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == result.uid_map[f"{ROOT}.9"]
    instance = series.ReferencedInstanceSequence[0]
    assert instance.ReferencedSOPInstanceUID == result.uid_map[f"{ROOT}.10"]
    assert instance.ReferencedSOPClassUID == CT_IMAGE
    assert instance.PersonName == "ANONYMIZED"
    assert not any(element.tag.is_private for element in instance)
    assert not any(element.tag.is_private for element in out)


def test_uids_are_deterministic_and_keep_a_study_together() -> None:
    first = build(SOPInstanceUID=f"{ROOT}.21", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    ds = dcmread(io.BytesIO(build(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)))
    reference = Dataset()
    reference.ReferencedSOPClassUID = ds.SOPClassUID
    reference.ReferencedSOPInstanceUID = f"{ROOT}.21"
    ds.ReferencedImageSequence = Sequence([reference])
    second = _part10(ds)

    a = pseudonymise(first, key=KEY, pseudonym=PSEUDONYM)
    b = pseudonymise(second, key=KEY, pseudonym=PSEUDONYM)
    assert pseudonymise(first, key=KEY, pseudonym=PSEUDONYM).data == a.data  # twice: same bytes
    out_a, out_b = dcmread(io.BytesIO(a.data)), dcmread(io.BytesIO(b.data))
    assert out_a.StudyInstanceUID == out_b.StudyInstanceUID == a.uid_map[STUDY]
    assert out_a.SeriesInstanceUID == out_b.SeriesInstanceUID
    assert out_a.SOPInstanceUID != out_b.SOPInstanceUID
    # the reference from b to a still points at a, under its new UID
    assert out_b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_a.SOPInstanceUID
    assert out_a.StudyInstanceUID == pseudonymous_uid(KEY, STUDY)
    other = pseudonymise(first, key=b"another-key-of-the-partner-site", pseudonym=PSEUDONYM)
    assert other.uid_map[STUDY] != a.uid_map[STUDY]


def test_pseudonymous_uids_are_valid_uuid_derived_uids() -> None:
    uid = pseudonymous_uid(KEY, STUDY)
    assert uid.startswith("2.25.")
    assert len(uid) <= 64
    assert UID(uid).is_valid
    n = int(uid.removeprefix("2.25."))
    assert n < 2**128
    assert (n >> 76) & 0xF == 8  # UUID version 8
    assert (n >> 62) & 0x3 == 2  # RFC variant


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "waveform_ecg.dcm", "test-SR.dcm", "examples_overlay.dcm", "image_dfl.dcm"],
)
def test_the_output_passes_ingest(name: str) -> None:
    data = bundled(name).read_bytes()
    original = ingest(data)
    result = pseudonymise(data, key=KEY, pseudonym=PSEUDONYM)
    instance = ingest(result.data)
    assert instance.study_uid == result.uid_map[original.study_uid]
    assert instance.series_uid == result.uid_map[original.series_uid]
    assert instance.instance_uid == result.uid_map[original.instance_uid]
    assert instance.sop_class_uid == original.sop_class_uid
    assert instance.transfer_syntax_uid == original.transfer_syntax_uid
    assert instance.patient_name == instance.patient_id == PSEUDONYM
    assert instance.patient_birth_date == ""
    for uid in (original.study_uid, original.series_uid, original.instance_uid):
        assert uid.encode() not in result.data
    source, out = dcmread(io.BytesIO(data)), dcmread(io.BytesIO(result.data))
    for tag in (0x7FE00010, 0x54001010):  # pixel and waveform data untouched
        if tag in source:
            assert out[tag].value == source[tag].value
    assert not any(0x6000 <= element.tag.group <= 0x60FF for element in out)  # overlays


def test_a_dataset_given_is_not_changed() -> None:
    ds = dcmread(io.BytesIO(build()))
    before = _part10(ds)
    from_dataset = pseudonymise(ds, key=KEY, pseudonym=PSEUDONYM)
    assert _part10(ds) == before
    assert from_dataset.data == pseudonymise(before, key=KEY, pseudonym=PSEUDONYM).data


def test_other_instance_uids_are_replaced_and_definitions_kept() -> None:
    ds = dcmread(io.BytesIO(build()))
    ds.ReferencedColorPaletteInstanceUID = f"{ROOT}.31"  # an instance UID the table does not list
    code = Dataset()
    code.CodeValue = "T-D4000"
    code.CodingSchemeDesignator = "SRT"
    code.CodingSchemeUID = "2.16.840.1.113883.6.96"
    code.CodeMeaning = "Abdomen"
    ds.AnatomicRegionSequence = Sequence([code])
    out = dcmread(io.BytesIO(pseudonymise(_part10(ds), key=KEY, pseudonym=PSEUDONYM).data))
    assert out.ReferencedColorPaletteInstanceUID == pseudonymous_uid(KEY, f"{ROOT}.31")
    assert out.AnatomicRegionSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_burned_in_annotation_is_refused_unless_accepted() -> None:
    data = build(BurnedInAnnotation="YES")
    with pytest.raises(DeidError) as caught:
        pseudonymise(data, key=KEY, pseudonym=PSEUDONYM)
    assert caught.value.code == "burned-in-annotation"
    out = pseudonymise(data, key=KEY, pseudonym=PSEUDONYM, accept_burned_in=True)
    assert dcmread(io.BytesIO(out.data)).BurnedInAnnotation == "YES"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"key": b"short", "pseudonym": PSEUDONYM}, "bad-key"),
        ({"key": KEY, "pseudonym": ""}, "bad-pseudonym"),
        ({"key": KEY, "pseudonym": "A\\B"}, "bad-pseudonym"),
        ({"key": KEY, "pseudonym": "王五"}, "bad-pseudonym"),
        ({"key": KEY, "pseudonym": "X" * 65}, "bad-pseudonym"),
        ({"key": KEY, "pseudonym": "A\nB"}, "bad-pseudonym"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(DeidError) as caught:
        pseudonymise(build(), **kwargs)
    assert caught.value.code == code


def test_bad_input_is_refused_without_quoting_it() -> None:
    with pytest.raises(DeidError) as caught:
        pseudonymise(b"MSH|" + NAME.encode() * 40, key=KEY, pseudonym=PSEUDONYM)
    assert caught.value.code == "not-dicom"
    assert NAME not in str(caught.value)
    with pytest.raises(DeidError) as caught:  # a preamble and marker, then nothing of use
        pseudonymise(b"\0" * 128 + b"DICM" + NAME.encode(), key=KEY, pseudonym=PSEUDONYM)
    assert NAME not in str(caught.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        no_sop = build(omit=("SOPInstanceUID",))
    with pytest.raises(DeidError) as caught:
        pseudonymise(no_sop, key=KEY, pseudonym=PSEUDONYM)
    assert caught.value.code == "missing-uid"


def test_a_whole_slide_series_stays_one_pyramid() -> None:
    files = build_wsi()
    volumes = [f for f in files if f.kind == "VOLUME"]
    results = [pseudonymise(f.data, key=KEY, pseudonym=PSEUDONYM) for f in volumes]
    instances = [ingest(result.data) for result in results]
    assert len({(i.study_uid, i.series_uid) for i in instances}) == 1
    pyramid = build_pyramid([i.metadata for i in instances])
    assert [level.total_columns for level in pyramid.levels] == [1024, 512, 256]
    assert pyramid.tile(0, 3, 2) == TileRef(instances[0].instance_uid, 12)
    out = dcmread(io.BytesIO(results[0].data))
    assert out.ContainerIdentifier == "ANONYMIZED"
    specimen = out.SpecimenDescriptionSequence[0]
    assert specimen.SpecimenUID.startswith("2.25.")
    assert out.DimensionOrganizationSequence[0].DimensionOrganizationUID.startswith("2.25.")
    label = next(f for f in files if f.kind == "LABEL")  # the slide label is burned in
    with pytest.raises(DeidError) as caught:
        pseudonymise(label.data, key=KEY, pseudonym=PSEUDONYM)
    assert caught.value.code == "burned-in-annotation"
