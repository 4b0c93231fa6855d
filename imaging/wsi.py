"""Whole-slide image pyramids (VL Whole Slide Microscopy Image Storage) from DICOM JSON metadata.

:func:`build_pyramid` takes the DICOM JSON models (PS3.18 F.2, as :mod:`imaging.ingest` keeps
them) of one series' instances and returns a :class:`Pyramid`:

* instances whose Image Type (value 3) is VOLUME are grouped into levels by their Total Pixel
  Matrix Columns/Rows and tile Columns/Rows, the levels ordered from the highest resolution
  (level 0) down; LABEL, OVERVIEW and THUMBNAIL instances are kept beside them as
  :class:`AssociatedImage`;
* :meth:`Level.tile` (and :meth:`Pyramid.tile`) maps a tile (column, row; 0-based, in tiles) on a
  focal plane and an optical path to the SOP Instance UID and 1-based frame number holding it,
  or ``None`` where there is no such tile:

  - TILED_FULL: computed (PS3.3 C.7.6.17.3): frames run along a row of tiles, then down the rows,
    then through the focal planes, then the optical paths (in Optical Path Sequence order). An
    instance that is part of a concatenation holds the frames after its Concatenation Frame
    Offset Number. Several TILED_FULL instances at one level hold different optical paths.
  - TILED_SPARSE: read from each frame's Plane Position (Slide) Sequence (Column/Row Position In
    Total Image Pixel Matrix, 1-based pixels, on the tile grid), focal plane by the rank of its
    Z Offset among the level's, optical path from the frame's (else the shared) Optical Path
    Identification Sequence.

A missing or nonsensical attribute (no matrix size, a zero tile size, a tile off the grid, frame
counts that do not add up) raises :class:`WsiError` with a stable ``code``; messages name
attributes, never values of the patient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from pydicom.datadict import tag_for_keyword

__all__ = [
    "WSI_SOP_CLASS",
    "AssociatedImage",
    "Level",
    "Pyramid",
    "TileRef",
    "WsiError",
    "WsiErrorCode",
    "build_pyramid",
]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"

WsiErrorCode = Literal[
    "no-instances",  # nothing given
    "not-wsi",  # an instance of another SOP class
    "mixed-series",  # instances of several series
    "missing-attribute",  # a required attribute is absent
    "bad-attribute",  # a value of the wrong kind, zero or negative
    "no-volume",  # no VOLUME image
    "bad-tile-position",  # a sparse tile off the tile grid or outside the matrix
    "duplicate-tile",  # two frames for one tile
    "frame-count",  # frames do not match the tiles they should hold
]
ImageKind = Literal["VOLUME", "THUMBNAIL", "LABEL", "OVERVIEW"]
_KINDS: frozenset[str] = frozenset({"VOLUME", "THUMBNAIL", "LABEL", "OVERVIEW"})


class WsiError(Exception):
    """The metadata cannot make a pyramid; ``code`` says why, ``message`` says it for a person."""

    def __init__(self, code: WsiErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: WsiErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TileRef:
    sop_instance_uid: str
    frame: int  # 1-based, as in WADO-RS /frames/{n}


@dataclass(frozen=True, slots=True)
class AssociatedImage:
    kind: ImageKind  # LABEL, OVERVIEW or THUMBNAIL
    sop_instance_uid: str
    columns: int  # of the whole image (Total Pixel Matrix, else the frame)
    rows: int


@dataclass(frozen=True, slots=True)
class _FullPart:
    """A TILED_FULL instance: frames offset + 1 .. offset + frames of its logical image."""

    sop_instance_uid: str
    offset: int
    frames: int


@dataclass(frozen=True, slots=True)
class _FullImage:
    """One TILED_FULL image (a single instance, or a concatenation of several)."""

    optical_paths: tuple[str, ...]
    focal_planes: int
    parts: tuple[_FullPart, ...]


@dataclass(frozen=True)
class Level:
    index: int  # 0 is the highest resolution
    total_columns: int
    total_rows: int
    tile_columns: int
    tile_rows: int
    focal_planes: int
    optical_paths: tuple[str, ...]  # identifiers, in the order of the first instance
    pixel_spacing_mm: tuple[float, float] | None  # (between rows, between columns)
    downsample: float  # level 0 columns / this level's columns
    instances: tuple[str, ...]  # SOP Instance UIDs
    _full: tuple[_FullImage, ...] = field(repr=False)
    _sparse: Mapping[tuple[int, int, int, str], TileRef] = field(repr=False)

    @property
    def tiles_across(self) -> int:
        return math.ceil(self.total_columns / self.tile_columns)

    @property
    def tiles_down(self) -> int:
        return math.ceil(self.total_rows / self.tile_rows)

    def tile(
        self, column: int, row: int, *, focal_plane: int = 0, optical_path: str | None = None
    ) -> TileRef | None:
        """Where the tile is, or ``None`` (outside the grid, or a sparse level without it)."""
        if not (0 <= column < self.tiles_across and 0 <= row < self.tiles_down):
            return None
        if not 0 <= focal_plane < self.focal_planes:
            return None
        path = self.optical_paths[0] if optical_path is None else optical_path
        found = self._sparse.get((column, row, focal_plane, path))
        if found is not None:
            return found
        for image in self._full:
            if path not in image.optical_paths or focal_plane >= image.focal_planes:
                continue
            tiles = self.tiles_across * self.tiles_down
            number = 1 + (
                column
                + row * self.tiles_across
                + focal_plane * tiles
                + image.optical_paths.index(path) * tiles * image.focal_planes
            )
            for part in image.parts:
                if part.offset < number <= part.offset + part.frames:
                    return TileRef(part.sop_instance_uid, number - part.offset)
        return None


@dataclass(frozen=True)
class Pyramid:
    series_uid: str
    levels: tuple[Level, ...]
    associated: tuple[AssociatedImage, ...]

    def tile(
        self,
        level: int,
        column: int,
        row: int,
        *,
        focal_plane: int = 0,
        optical_path: str | None = None,
    ) -> TileRef | None:
        if not 0 <= level < len(self.levels):
            return None
        return self.levels[level].tile(
            column, row, focal_plane=focal_plane, optical_path=optical_path
        )

    def image(self, kind: ImageKind) -> AssociatedImage | None:
        """The first label, overview or thumbnail image, if the series has one."""
        return next((a for a in self.associated if a.kind == kind), None)


# --- reading the DICOM JSON model -------------------------------------------------------------


@functools.cache
def _key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}"


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, dict | Mapping)  # dict first: the ABC check is slow


def _values(attrs: Mapping[str, Any], keyword: str) -> Sequence[Any]:
    attr = attrs.get(_key(keyword))
    if not _is_mapping(attr):
        return ()
    values = attr.get("Value")
    return values if isinstance(values, list) else ()


def _first(attrs: Mapping[str, Any], keyword: str) -> Any:
    values = _values(attrs, keyword)
    return values[0] if values else None


def _item(attrs: Mapping[str, Any], keyword: str) -> Mapping[str, Any] | None:
    item = _first(attrs, keyword)
    return item if _is_mapping(item) else None


def _text(attrs: Mapping[str, Any], keyword: str) -> str:
    value = _first(attrs, keyword)
    return value.strip() if isinstance(value, str) else ""


def _number(value: Any, keyword: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise WsiError("bad-attribute", f"{keyword} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise WsiError("bad-attribute", f"{keyword} is not a number") from None
    if not math.isfinite(number):
        raise WsiError("bad-attribute", f"{keyword} is not finite")
    return number


def _int(
    attrs: Mapping[str, Any], keyword: str, *, default: int | None = None, minimum: int = 1
) -> int:
    value = _first(attrs, keyword)
    if value is None:
        if default is None:
            raise WsiError("missing-attribute", f"an instance has no {keyword}")
        return default
    number = _number(value, keyword)
    if number != int(number) or number < minimum:
        raise WsiError("bad-attribute", f"{keyword} must be an integer of at least {minimum}")
    return int(number)


@dataclass(frozen=True, slots=True)
class _Instance:
    attrs: Mapping[str, Any]
    uid: str
    kind: ImageKind
    total_columns: int
    total_rows: int
    columns: int
    rows: int
    frames: int


def _instance(attrs: Mapping[str, Any], series_uid: str | None) -> _Instance:
    sop_class = _text(attrs, "SOPClassUID")
    if sop_class != WSI_SOP_CLASS:
        raise WsiError("not-wsi", "an instance is not a VL Whole Slide Microscopy Image")
    uid = _text(attrs, "SOPInstanceUID")
    if not uid:
        raise WsiError("missing-attribute", "an instance has no SOPInstanceUID")
    if series_uid is not None and _text(attrs, "SeriesInstanceUID") != series_uid:
        raise WsiError("mixed-series", "the instances belong to several series")
    image_type = _values(attrs, "ImageType")
    if len(image_type) < 3:
        raise WsiError("missing-attribute", "an instance has no ImageType value 3")
    kind = str(image_type[2]).strip().upper()
    if kind not in _KINDS:
        raise WsiError("bad-attribute", "ImageType value 3 is not VOLUME/THUMBNAIL/LABEL/OVERVIEW")
    columns = _int(attrs, "Columns")
    rows = _int(attrs, "Rows")
    return _Instance(
        attrs=attrs,
        uid=uid,
        kind=kind,  # type: ignore[arg-type]  # checked against _KINDS above
        total_columns=_int(attrs, "TotalPixelMatrixColumns"),
        total_rows=_int(attrs, "TotalPixelMatrixRows"),
        columns=columns,
        rows=rows,
        frames=_int(attrs, "NumberOfFrames", default=1),
    )


def build_pyramid(instances: Iterable[Mapping[str, Any]]) -> Pyramid:
    """The pyramid of one series, from its instances' DICOM JSON models."""
    parsed: list[_Instance] = []
    series_uid: str | None = None
    for attrs in instances:
        instance = _instance(attrs, series_uid)
        series_uid = _text(attrs, "SeriesInstanceUID")
        parsed.append(instance)
    if not parsed:
        raise WsiError("no-instances", "no instances were given")
    volumes: dict[tuple[int, int, int, int], list[_Instance]] = {}
    associated: list[AssociatedImage] = []
    for instance in sorted(parsed, key=lambda i: _int(i.attrs, "InstanceNumber", default=0)):
        if instance.kind == "VOLUME":
            size = (instance.total_columns, instance.total_rows, instance.columns, instance.rows)
            volumes.setdefault(size, []).append(instance)
        else:
            associated.append(
                AssociatedImage(
                    instance.kind, instance.uid, instance.total_columns, instance.total_rows
                )
            )
    if not volumes:
        raise WsiError("no-volume", "the series has no VOLUME image")
    sizes = sorted(volumes, key=lambda s: (-s[0] * s[1], -s[0]))
    base_columns = sizes[0][0]
    levels = tuple(
        _level(index, volumes[size], base_columns / size[0]) for index, size in enumerate(sizes)
    )
    return Pyramid(series_uid=series_uid or "", levels=levels, associated=tuple(associated))


def _optical_paths(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    paths = tuple(
        _text(item, "OpticalPathIdentifier")
        for item in _values(attrs, "OpticalPathSequence")
        if _is_mapping(item)
    )
    return paths or ("",)


def _pixel_spacing(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    shared = _item(attrs, "SharedFunctionalGroupsSequence")
    measures = _item(shared, "PixelMeasuresSequence") if shared is not None else None
    spacing = _values(measures, "PixelSpacing") if measures is not None else []
    if len(spacing) != 2:
        return None
    return _number(spacing[0], "PixelSpacing"), _number(spacing[1], "PixelSpacing")


def _organisation(instance: _Instance) -> str:
    declared = _text(instance.attrs, "DimensionOrganizationType").upper()
    if declared:
        if declared not in {"TILED_FULL", "TILED_SPARSE"}:
            raise WsiError("bad-attribute", "DimensionOrganizationType is not TILED_*")
        return declared
    # absent: per-frame positions make it sparse; a single tile covering the image is full
    if _values(instance.attrs, "PerFrameFunctionalGroupsSequence"):
        return "TILED_SPARSE"
    return "TILED_FULL"


def _level(index: int, instances: list[_Instance], downsample: float) -> Level:
    first = instances[0]
    across = math.ceil(first.total_columns / first.columns)
    down = math.ceil(first.total_rows / first.rows)
    full: dict[str, list[_Instance]] = {}
    sparse: dict[tuple[int, int, int, str], TileRef] = {}
    sparse_instances: list[_Instance] = []
    for instance in instances:
        if _organisation(instance) == "TILED_FULL":
            group = _text(instance.attrs, "ConcatenationUID") or instance.uid
            full.setdefault(group, []).append(instance)
        else:
            sparse_instances.append(instance)
    images = tuple(_full_image(parts, across * down) for parts in full.values())
    if sparse_instances:
        _sparse_tiles(sparse_instances, sparse, across, down)
    planes = max([1] + [image.focal_planes for image in images] + [1 + k[2] for k in sparse])
    paths: list[str] = []
    for instance in instances:
        for path in _optical_paths(instance.attrs):
            if path not in paths:
                paths.append(path)
    for key in sparse:
        if key[3] not in paths:
            paths.append(key[3])
    return Level(
        index=index,
        total_columns=first.total_columns,
        total_rows=first.total_rows,
        tile_columns=first.columns,
        tile_rows=first.rows,
        focal_planes=planes,
        optical_paths=tuple(paths),
        pixel_spacing_mm=_pixel_spacing(first.attrs),
        downsample=downsample,
        instances=tuple(i.uid for i in instances),
        _full=images,
        _sparse=sparse,
    )


def _full_image(parts: list[_Instance], tiles: int) -> _FullImage:
    first = parts[0]
    paths = _optical_paths(first.attrs)
    planes = _int(first.attrs, "TotalPixelMatrixFocalPlanes", default=1)
    out = sorted(
        (
            _FullPart(
                instance.uid,
                _int(instance.attrs, "ConcatenationFrameOffsetNumber", default=0, minimum=0),
                instance.frames,
            )
            for instance in parts
        ),
        key=lambda p: p.offset,
    )
    expected = tiles * planes * len(paths)
    position = 0
    for part in out:
        if part.offset != position:
            raise WsiError("frame-count", "the parts of a concatenation leave a gap or overlap")
        position += part.frames
    if position != expected:
        raise WsiError(
            "frame-count", f"a TILED_FULL image has {position} frames for {expected} tiles"
        )
    return _FullImage(optical_paths=paths, focal_planes=planes, parts=tuple(out))


def _sparse_tiles(
    instances: list[_Instance],
    into: dict[tuple[int, int, int, str], TileRef],
    across: int,
    down: int,
) -> None:
    positions: list[tuple[int, int, float, str, TileRef]] = []
    for instance in instances:
        frames = _values(instance.attrs, "PerFrameFunctionalGroupsSequence")
        if len(frames) != instance.frames:
            raise WsiError("frame-count", "PerFrameFunctionalGroupsSequence ≠ NumberOfFrames")
        shared = _item(instance.attrs, "SharedFunctionalGroupsSequence") or {}
        default_path = _path_of(shared) or _optical_paths(instance.attrs)[0]
        for number, item in enumerate(frames, start=1):
            if not _is_mapping(item):
                raise WsiError("bad-attribute", "a per-frame functional group is not an item")
            plane = _item(item, "PlanePositionSlideSequence")
            if plane is None:
                raise WsiError("missing-attribute", "a frame has no PlanePositionSlideSequence")
            column = _int(plane, "ColumnPositionInTotalImagePixelMatrix", minimum=1)
            row = _int(plane, "RowPositionInTotalImagePixelMatrix", minimum=1)
            z_value = _first(plane, "ZOffsetInSlideCoordinateSystem")
            z = _number(z_value, "ZOffsetInSlideCoordinateSystem") if z_value is not None else 0.0
            if (column - 1) % instance.columns or (row - 1) % instance.rows:
                raise WsiError("bad-tile-position", "a sparse tile is not on the tile grid")
            tile_column, tile_row = (column - 1) // instance.columns, (row - 1) // instance.rows
            if tile_column >= across or tile_row >= down:
                raise WsiError("bad-tile-position", "a sparse tile is outside the pixel matrix")
            path = _path_of(item) or default_path
            positions.append((tile_column, tile_row, z, path, TileRef(instance.uid, number)))
    z_rank = {z: rank for rank, z in enumerate(sorted({p[2] for p in positions}))}
    for tile_column, tile_row, z, path, ref in positions:
        key = (tile_column, tile_row, z_rank[z], path)
        if key in into:
            raise WsiError("duplicate-tile", "two frames hold the same tile")
        into[key] = ref


def _path_of(group: Mapping[str, Any]) -> str:
    item = _item(group, "OpticalPathIdentificationSequence")
    return _text(item, "OpticalPathIdentifier") if item is not None else ""
