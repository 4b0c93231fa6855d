"""DICOM test files: pydicom's bundled ones, and small ones built here."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.3"


def bundled(name: str) -> Path:
    """A file pydicom ships in its wheel (never one it would download)."""
    path = Path(pydicom.data.__file__).parent / "test_files" / name
    assert path.is_file(), name
    return path


def build(
    *,
    charset: str | None = "ISO_IR 192",
    patient_name: str = "Zhang^San",
    omit: tuple[str, ...] = (),
    **values: str,
) -> bytes:
    """A small Part-10 file (Secondary Capture without pixels) with the given attributes.

    pydicom's write validation is silenced here so that tests can build deliberately bad files.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(INSTANCE_UID)
        if charset is not None:
            ds.SpecificCharacterSet = charset
        fields = {
            "SOPClassUID": SECONDARY_CAPTURE,
            "SOPInstanceUID": INSTANCE_UID,
            "StudyInstanceUID": STUDY_UID,
            "SeriesInstanceUID": SERIES_UID,
            "Modality": "OT",
            "PatientName": patient_name,
            "PatientID": "P001",
            "PatientSex": "M",
            "PatientBirthDate": "19600101",
            "StudyDate": "20261122",
            "StudyTime": "101500",
            "AccessionNumber": "A42",
        }
        fields.update(values)
        for keyword, value in fields.items():
            if keyword not in omit:
                setattr(ds, keyword, value)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
