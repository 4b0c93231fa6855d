"""DICOM files the browser tests upload: a synthetic CT series, a large multi-frame image, pydicom's
12-lead ECG with fresh UIDs, a truncated file and one that is not DICOM at all.

The CT is a 512×512 phantom in Hounsfield units (air outside, a soft-tissue body, two lungs, a
bony ring), so a lung or a bone window visibly changes what is drawn.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
SIZE = 512


def _base(sop_class: str, study: str, series: str, patient_id: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = "测试^患者"
    ds.PatientID = patient_id
    ds.StudyDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.AccessionNumber = "T" + study[-8:]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    return ds


def _phantom(z: float) -> np.ndarray:
    """Hounsfield units of one slice; `z` in [0, 1] moves the lungs a little."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    c = SIZE / 2
    hu = np.full((SIZE, SIZE), -1000.0)
    body = ((x - c) / 220) ** 2 + ((y - c) / 170) ** 2 <= 1
    hu[body] = 40 + 20 * np.sin(x[body] / 9)  # soft tissue with some texture
    for side in (-1, 1):
        lung = ((x - c - side * 95) / (70 + 10 * z)) ** 2 + ((y - c) / 110) ** 2 <= 1
        hu[lung] = -820 + 60 * np.cos(y[lung] / 7)
    ring = np.abs(np.hypot(x - c, (y - c) * 1.25) - 190) < 7
    hu[ring & body] = 900
    spine = np.hypot(x - c, y - c - 120) < 22
    hu[spine] = 700
    return hu


def write_ct_series(folder: Path, slices: int, patient_id: str) -> list[Path]:
    """`slices` CT images of one new series (fresh study and series UIDs), one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(slices):
        ds = _base(CT_IMAGE, study, series, patient_id)
        ds.Modality = "CT"
        ds.SeriesDescription = "胸部 CT 平扫"
        ds.StudyDescription = "胸部 CT"
        ds.InstanceNumber = i + 1
        ds.FrameOfReferenceUID = frame_of_reference
        ds.ImagePositionPatient = [-250.0, -250.0, -100.0 + 5.0 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.SliceThickness = 5.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = SIZE
        ds.Columns = SIZE
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        stored = np.clip(_phantom(i / max(1, slices - 1)) + 1024, 0, 4095).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        path = folder / f"CT{i + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_multiframe(path: Path, frames: int, patient_id: str) -> Path:
    """One multi-frame 16-bit Secondary Capture (about 0.5 MiB a frame): several upload chunks."""
    ds = _base(MULTIFRAME_WORD_SC, generate_uid(), generate_uid(), patient_id)
    ds.Modality = "OT"
    ds.SeriesDescription = "多帧图像"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.FrameTime = 100.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = SIZE
    ds.Columns = SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    stack = np.stack([((x + 16 * f) % SIZE) * 64 + y for f in range(frames)]).astype(np.uint16)
    ds.PixelData = stack.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ecg(path: Path, patient_id: str) -> Path:
    """pydicom's 12-lead ECG (waveform_ecg.dcm) under fresh study, series and instance UIDs."""
    source = get_testdata_file("waveform_ecg.dcm")
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_truncated(path: Path, patient_id: str) -> Path:
    """A CT slice cut short inside its pixel data: a valid header, then nothing."""
    (full,) = write_ct_series(path.parent / "full", 1, patient_id)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_not_dicom(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("检查单扫描件说明：这不是 DICOM 文件。\n" * 20, encoding="utf-8")
    return path
