"""Whole-slide pyramids: levels, tile → (instance, frame), TILED_FULL and TILED_SPARSE, bad data."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames

from imaging.ingest import ingest
from imaging.wsi import Pyramid, TileRef, WsiError, build_pyramid
from tests.imaging.wsifiles import MISSING, SERIES_UID, SIZES, SPARSE_LEVEL, TILE, build_wsi
from tests.imaging.wsifiles import tile_colour as colour_of

Metadata = dict[str, Any]


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {f.sop_instance_uid: f.data for f in build_wsi()}


@pytest.fixture(scope="module")
def metadata(files: dict[str, bytes]) -> list[Metadata]:
    return [dict(ingest(data).metadata) for data in files.values()]


@pytest.fixture(scope="module")
def pyramid(metadata: list[Metadata]) -> Pyramid:
    return build_pyramid(metadata)


def _frame_colour(files: dict[str, bytes], ref: TileRef) -> tuple[int, int, int]:
    ds = dcmread(io.BytesIO(files[ref.sop_instance_uid]))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    image = Image.open(io.BytesIO(frames[ref.frame - 1]))
    assert image.size == (TILE, TILE)
    pixel = image.convert("RGB").getpixel((TILE // 2, TILE // 2))
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


def test_levels_are_ordered_by_resolution(pyramid: Pyramid) -> None:
    assert pyramid.series_uid == SERIES_UID
    assert [(lv.total_columns, lv.total_rows) for lv in pyramid.levels] == [(s, s) for s in SIZES]
    assert [lv.index for lv in pyramid.levels] == [0, 1, 2]
    assert [lv.downsample for lv in pyramid.levels] == [1.0, 2.0, 4.0]
    assert [(lv.tiles_across, lv.tiles_down) for lv in pyramid.levels] == [(4, 4), (2, 2), (1, 1)]
    for level in pyramid.levels:
        assert (level.tile_columns, level.tile_rows) == (TILE, TILE)
        assert level.optical_paths == ("1",)
        assert level.focal_planes == 1
    spacing = [lv.pixel_spacing_mm for lv in pyramid.levels]
    assert spacing == [(0.00025, 0.00025), (0.0005, 0.0005), (0.001, 0.001)]


def test_label_and_thumbnail_are_beside_the_levels(pyramid: Pyramid) -> None:
    label, thumbnail = pyramid.image("LABEL"), pyramid.image("THUMBNAIL")
    assert label is not None and (label.columns, label.rows) == (192, 96)
    assert thumbnail is not None and (thumbnail.columns, thumbnail.rows) == (128, 128)
    assert pyramid.image("OVERVIEW") is None
    level_uids = {uid for level in pyramid.levels for uid in level.instances}
    assert label.sop_instance_uid not in level_uids


def test_every_tile_maps_to_the_frame_that_holds_it(
    pyramid: Pyramid, files: dict[str, bytes]
) -> None:
    seen = 0
    for level in pyramid.levels:
        for row in range(level.tiles_down):
            for column in range(level.tiles_across):
                ref = pyramid.tile(level.index, column, row)
                if level.index == SPARSE_LEVEL and (column, row) in MISSING:
                    assert ref is None
                    continue
                assert ref is not None
                got = _frame_colour(files, ref)
                want = colour_of(level.index, column, row)
                assert all(abs(g - w) <= 6 for g, w in zip(got, want, strict=True)), (ref, got)
                seen += 1
    assert seen == 16 + 4 - len(MISSING) + 1


def test_tiled_full_is_computed_row_by_row(pyramid: Pyramid) -> None:
    base = pyramid.levels[0]
    assert pyramid.tile(0, 0, 0) == TileRef(base.instances[0], 1)
    assert pyramid.tile(0, 3, 0) == TileRef(base.instances[0], 4)
    assert pyramid.tile(0, 0, 1) == TileRef(base.instances[0], 5)
    assert pyramid.tile(0, 3, 2) == TileRef(base.instances[0], 12)
    assert pyramid.tile(0, 3, 3) == TileRef(base.instances[0], 16)


def test_outside_the_grid_is_none(pyramid: Pyramid) -> None:
    assert pyramid.tile(0, 4, 0) is None
    assert pyramid.tile(0, 0, 4) is None
    assert pyramid.tile(0, -1, 0) is None
    assert pyramid.tile(3, 0, 0) is None
    assert pyramid.tile(0, 0, 0, focal_plane=1) is None
    assert pyramid.tile(0, 0, 0, optical_path="2") is None
    assert pyramid.tile(SPARSE_LEVEL, 0, 0, optical_path="2") is None


def _volume(metadata: list[Metadata], level: int) -> Metadata:
    """A deep copy of one level's JSON model."""
    size = SIZES[level]
    for attrs in metadata:
        if attrs["00480006"]["Value"] == [size] and attrs["00080008"]["Value"][2] == "VOLUME":
            return copy.deepcopy(attrs)
    raise AssertionError(level)


def _set(attrs: Metadata, tag: str, vr: str, *values: Any) -> None:
    attrs[tag] = {"vr": vr, "Value": list(values)}


def test_a_concatenation_is_followed_across_its_parts(metadata: list[Metadata]) -> None:
    first, second = _volume(metadata, 0), _volume(metadata, 0)
    for part, (uid, frames, offset) in zip(
        (first, second), (("1.2.3.1", 10, 0), ("1.2.3.2", 6, 10)), strict=True
    ):
        _set(part, "00080018", "UI", uid)
        _set(part, "00280008", "IS", frames)
        _set(part, "00209161", "UI", "1.2.3.9")  # Concatenation UID
        _set(part, "00209228", "UL", offset)  # Concatenation Frame Offset Number
    level = build_pyramid([second, first]).levels[0]
    assert level.tile(0, 0) == TileRef("1.2.3.1", 1)
    assert level.tile(1, 2) == TileRef("1.2.3.1", 10)
    assert level.tile(2, 2) == TileRef("1.2.3.2", 1)
    assert level.tile(3, 3) == TileRef("1.2.3.2", 6)


def test_focal_planes_and_optical_paths_of_tiled_full(metadata: list[Metadata]) -> None:
    attrs = _volume(metadata, 0)
    _set(attrs, "00480303", "UL", 2)  # Total Pixel Matrix Focal Planes
    _set(attrs, "00280008", "IS", 16 * 2 * 2)
    paths = [{"00480106": {"vr": "SH", "Value": [name]}} for name in ("1", "2")]
    _set(attrs, "00480105", "SQ", *paths)  # Optical Path Sequence
    level = build_pyramid([attrs]).levels[0]
    assert (level.focal_planes, level.optical_paths) == (2, ("1", "2"))
    uid = level.instances[0]
    assert level.tile(3, 2, focal_plane=1) == TileRef(uid, 12 + 16)
    assert level.tile(3, 2, optical_path="2") == TileRef(uid, 12 + 32)
    assert level.tile(3, 2, focal_plane=1, optical_path="2") == TileRef(uid, 12 + 48)
    assert level.tile(0, 0, focal_plane=2) is None


def test_focal_planes_of_tiled_sparse(metadata: list[Metadata]) -> None:
    attrs = _volume(metadata, SPARSE_LEVEL)
    frames = attrs["52009230"]["Value"]
    position = frames[0]["0048021A"]["Value"][0]
    _set(position, "0040074A", "DS", 0.002)  # the first frame sits on a second plane
    level = build_pyramid([attrs]).levels[0]
    assert level.focal_planes == 2
    column = (position["0048021E"]["Value"][0] - 1) // TILE
    row = (position["0048021F"]["Value"][0] - 1) // TILE
    assert level.tile(column, row, focal_plane=1) == TileRef(level.instances[0], 1)
    assert level.tile(column, row) is None


def _without(attrs: Metadata, tag: str) -> Metadata:
    del attrs[tag]
    return attrs


def _bad(metadata: list[Metadata], change: str) -> list[Metadata]:
    everything = copy.deepcopy(metadata)
    full, sparse = _volume(metadata, 0), _volume(metadata, SPARSE_LEVEL)
    positions = [item["0048021A"]["Value"][0] for item in sparse["52009230"]["Value"]]
    if change == "no total columns":
        return [_without(full, "00480006")]
    if change == "no total rows":
        return [_without(full, "00480007")]
    if change == "no tile columns":
        return [_without(full, "00280011")]
    if change == "zero tile columns":
        _set(full, "00280011", "US", 0)
        return [full]
    if change == "zero tile rows":
        _set(full, "00280010", "US", 0)
        return [full]
    if change == "text matrix size":
        _set(full, "00480006", "UL", "wide")
        return [full]
    if change == "no image type":
        return [_without(full, "00080008")]
    if change == "unknown image type":
        _set(full, "00080008", "CS", "ORIGINAL", "PRIMARY", "PHOTO", "NONE")
        return [full]
    if change == "another class":
        _set(full, "00080016", "UI", "1.2.840.10008.5.1.4.1.1.7")
        return [full]
    if change == "another series":
        _set(full, "0020000E", "UI", "1.2.3.4")
        return [*everything, full]
    if change == "labels only":
        return [m for m in everything if m["00080008"]["Value"][2] != "VOLUME"]
    if change == "nothing":
        return []
    if change == "too few full frames":
        _set(full, "00280008", "IS", 15)
        return [full]
    if change == "unknown organisation":
        _set(full, "00209311", "CS", "STACKED")
        return [full]
    if change == "sparse off grid":
        _set(positions[0], "0048021E", "SL", 2)
        return [sparse]
    if change == "sparse outside":
        _set(positions[0], "0048021F", "SL", 1 + 2 * TILE)
        return [sparse]
    if change == "sparse duplicate":
        for keyword in ("0048021E", "0048021F"):
            positions[1][keyword] = copy.deepcopy(positions[0][keyword])
        return [sparse]
    if change == "sparse without position":
        del sparse["52009230"]["Value"][0]["0048021A"]
        return [sparse]
    if change == "sparse frame count":
        _set(sparse, "00280008", "IS", 4)
        return [sparse]
    raise AssertionError(change)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("no total columns", "missing-attribute"),
        ("no total rows", "missing-attribute"),
        ("no tile columns", "missing-attribute"),
        ("zero tile columns", "bad-attribute"),
        ("zero tile rows", "bad-attribute"),
        ("text matrix size", "bad-attribute"),
        ("no image type", "missing-attribute"),
        ("unknown image type", "bad-attribute"),
        ("another class", "not-wsi"),
        ("another series", "mixed-series"),
        ("labels only", "no-volume"),
        ("nothing", "no-instances"),
        ("too few full frames", "frame-count"),
        ("unknown organisation", "bad-attribute"),
        ("sparse off grid", "bad-tile-position"),
        ("sparse outside", "bad-tile-position"),
        ("sparse duplicate", "duplicate-tile"),
        ("sparse without position", "missing-attribute"),
        ("sparse frame count", "frame-count"),
    ],
)
def test_bad_metadata_is_refused_with_a_code(
    metadata: list[Metadata], change: str, code: str
) -> None:
    with pytest.raises(WsiError) as caught:
        build_pyramid(_bad(metadata, change))
    assert caught.value.code == code


def test_the_unchanged_metadata_builds(metadata: list[Metadata]) -> None:
    """Each bad case above differs from a good one only by its change."""
    assert len(build_pyramid([_volume(metadata, 0)]).levels) == 1
    assert len(build_pyramid([_volume(metadata, SPARSE_LEVEL)]).levels) == 1
