"""A small synthetic whole-slide pyramid as Part-10 files (VL Whole Slide Microscopy Image).

:func:`build_wsi` makes one series: three VOLUME levels of 1024², 512² and 256² pixels in
256 × 256 JPEG baseline tiles (Pillow, 4:2:2, YBR_FULL_422), a LABEL and a THUMBNAIL. Every tile
is filled with :func:`tile_colour` of its (level, column, row), so a test can decode the frame a
mapping points at and check it is the right tile. Level 1 is TILED_SPARSE: its frames are stored
in a shuffled order with their Plane Position (Slide), and tile (1, 1) is left out; the other
levels are TILED_FULL.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID, JPEGBaseline8Bit

from imaging.wsi import WSI_SOP_CLASS

ROOT = "1.2.826.0.1.3680043.8.498.66"
STUDY_UID = f"{ROOT}.1"
SERIES_UID = f"{ROOT}.2"
FRAME_OF_REFERENCE_UID = f"{ROOT}.3"
DIMENSION_ORGANIZATION_UID = f"{ROOT}.4"
TILE = 256
SIZES = (1024, 512, 256)
SPARSE_LEVEL = 1
MISSING = frozenset({(1, 1)})  # (column, row) left out of the sparse level
BASE_SPACING_MM = 0.00025  # 0.25 µm per pixel at level 0 (a 40× scan)


@dataclass(frozen=True, slots=True)
class WsiFile:
    sop_instance_uid: str
    kind: str  # VOLUME, LABEL, THUMBNAIL
    level: int | None
    data: bytes


def tile_colour(level: int, column: int, row: int) -> tuple[int, int, int]:
    """The flat RGB colour of a tile, far enough apart to survive JPEG."""
    return 40 + 60 * level, 20 + 50 * column, 20 + 50 * row


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=90, subsampling=1)
    return out.getvalue()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _common(uid: str, number: int, image_type: list[str], frames: list[bytes]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = UID(WSI_SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = image_type
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.SOPInstanceUID = uid
    ds.StudyDate = "20261122"
    ds.StudyTime = "101500"
    ds.ContentDate = "20261122"
    ds.ContentTime = "101500"
    ds.AcquisitionDateTime = "20261122101500"
    ds.AccessionNumber = "P42"
    ds.Modality = "SM"
    ds.Manufacturer = "Huizhen test"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Li^Si"
    ds.PatientID = "P002"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.ContainerIdentifier = "SLIDE-1"
    ds.IssuerOfTheContainerIdentifierSequence = Sequence()
    ds.ContainerTypeCodeSequence = Sequence([_code("433466003", "SCT", "Microscope slide")])
    specimen = Dataset()
    specimen.SpecimenIdentifier = "S-1"
    specimen.SpecimenUID = f"{ROOT}.5"
    specimen.IssuerOfTheSpecimenIdentifierSequence = Sequence()
    specimen.SpecimenPreparationSequence = Sequence()
    ds.SpecimenDescriptionSequence = Sequence([specimen])
    ds.VolumetricProperties = "VOLUME"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.BurnedInAnnotation = "NO"
    ds.SpecimenLabelInImage = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.IlluminationTypeCodeSequence = Sequence(
        [_code("111744", "DCM", "Brightfield illumination")]
    )
    path.IlluminationColorCodeSequence = Sequence([_code("414298005", "SCT", "Full Spectrum")])
    ds.OpticalPathSequence = Sequence([path])
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _shared(spacing_mm: float) -> Sequence:
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing_mm:.8g}", f"{spacing_mm:.8g}"]
    measures.SliceThickness = "0.004"
    shared.PixelMeasuresSequence = Sequence([measures])
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([frame_type])
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = Sequence([path])
    return Sequence([shared])


def _volume(level: int, number: int) -> Dataset:
    size = SIZES[level]
    tiles = size // TILE
    spacing = BASE_SPACING_MM * SIZES[0] / size
    grid = [(column, row) for row in range(tiles) for column in range(tiles)]  # TILED_FULL order
    sparse = level == SPARSE_LEVEL
    if sparse:
        grid = [tile for tile in grid if tile not in MISSING]
        random.Random(level).shuffle(grid)
    frames = [_jpeg(tile_colour(level, column, row), (TILE, TILE)) for column, row in grid]
    kind = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if level == 0 else None
    image_type = kind or ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    ds = _common(f"{ROOT}.10.{level}", number, image_type, frames)
    ds.Rows = ds.Columns = TILE
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = size
    ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = size * spacing  # FL, mm
    ds.ImagedVolumeDepth = 0.004
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = "20"
    origin.YOffsetInSlideCoordinateSystem = "40"
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    ds.SharedFunctionalGroupsSequence = _shared(spacing)
    organisation = Dataset()
    organisation.DimensionOrganizationUID = DIMENSION_ORGANIZATION_UID
    ds.DimensionOrganizationSequence = Sequence([organisation])
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    if sparse:
        per_frame = []
        for column, row in grid:
            position = Dataset()
            position.ColumnPositionInTotalImagePixelMatrix = 1 + column * TILE
            position.RowPositionInTotalImagePixelMatrix = 1 + row * TILE
            position.XOffsetInSlideCoordinateSystem = f"{20 - row * TILE * spacing:.6g}"
            position.YOffsetInSlideCoordinateSystem = f"{40 - column * TILE * spacing:.6g}"
            position.ZOffsetInSlideCoordinateSystem = "0"
            item = Dataset()
            item.PlanePositionSlideSequence = Sequence([position])
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
        indexes = []
        for keyword in (
            "ColumnPositionInTotalImagePixelMatrix",
            "RowPositionInTotalImagePixelMatrix",
        ):
            index = Dataset()
            index.DimensionOrganizationUID = DIMENSION_ORGANIZATION_UID
            index.DimensionIndexPointer = keyword
            index.FunctionalGroupPointer = "PlanePositionSlideSequence"
            indexes.append(index)
        ds.DimensionIndexSequence = Sequence(indexes)
    return ds


def _associated(kind: str, number: int, size: tuple[int, int]) -> Dataset:
    colour = (200, 200, 60) if kind == "LABEL" else (120, 90, 160)
    image_type = ["ORIGINAL", "PRIMARY", kind, "NONE"]
    ds = _common(f"{ROOT}.20.{number}", number, image_type, [_jpeg(colour, size)])
    ds.Columns, ds.Rows = size
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = size
    ds.DimensionOrganizationType = "TILED_FULL"
    if kind == "LABEL":
        ds.SpecimenLabelInImage = "YES"
        ds.BurnedInAnnotation = "YES"
    return ds


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_wsi() -> list[WsiFile]:
    """The series, levels first (0, 1, 2), then the label and the thumbnail."""
    files = [
        WsiFile(f"{ROOT}.10.{level}", "VOLUME", level, _part10(_volume(level, level + 1)))
        for level in range(len(SIZES))
    ]
    for number, (kind, size) in enumerate(
        (("LABEL", (192, 96)), ("THUMBNAIL", (128, 128))), start=len(SIZES) + 1
    ):
        ds = _associated(kind, number, size)
        files.append(WsiFile(str(ds.SOPInstanceUID), kind, None, _part10(ds)))
    return files
