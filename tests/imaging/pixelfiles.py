"""Image files built for the frame and render tests: native, encapsulated, large, odd."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from tests.imaging.dicomfiles import SERIES_UID, STUDY_UID

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.40"
DEFLATED = "1.2.840.10008.1.2.1.99"


def image_dataset(
    rows: int,
    columns: int,
    *,
    frames: int | None = None,
    bits: int = 16,
    samples: int = 1,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **values: Any,
) -> Dataset:
    """A CT-like data set with the Image Pixel attributes and no pixel data yet."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(INSTANCE_UID)
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = INSTANCE_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames is not None:
        ds.NumberOfFrames = frames
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def write_native(path: Path, ds: Dataset, pixels: np.ndarray[Any, Any] | bytes) -> Path:
    data = pixels if isinstance(pixels, bytes) else pixels.tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)
    ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_encapsulated(
    path: Path,
    ds: Dataset,
    frames: Sequence[bytes],
    *,
    fragments_per_frame: int = 1,
    has_bot: bool = True,
    extended: bool = False,
) -> Path:
    if extended:
        data, offsets, lengths = encapsulate_extended(list(frames))
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        data = encapsulate(list(frames), fragments_per_frame, has_bot=has_bot)
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def write_large(
    path: Path,
    ds: Dataset,
    frame_count: int,
    frame: Callable[[int], bytes],
    *,
    encapsulated: bool = False,
) -> Path:
    """A file whose pixel data is streamed frame by frame (never all in memory).

    Encapsulated: an empty Basic Offset Table and one fragment per frame.
    """
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as out:
        if encapsulated:
            out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
            out.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))
            for number in range(1, frame_count + 1):
                data = frame(number)
                out.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(data)))
                out.write(data)
            out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        else:
            size = len(frame(1))
            out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size * frame_count))
            for number in range(1, frame_count + 1):
                out.write(frame(number))
    return path


def write_large_deflated(
    path: Path, ds: Dataset, frame_count: int, frame: Callable[[int], bytes]
) -> Path:
    """Deflated Explicit VR Little Endian, the data set deflated as a stream, frame by frame."""
    ds.file_meta.TransferSyntaxUID = UID(DEFLATED)
    body = io.BytesIO()
    encoded = DicomFileLike(body)
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, ds)
    size = len(frame(1))
    body.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size * frame_count))
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(out), ds.file_meta)
        out.write(deflater.compress(body.getvalue()))
        for number in range(1, frame_count + 1):
            out.write(deflater.compress(frame(number)))
        out.write(deflater.flush())
    return path
