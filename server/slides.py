"""Whole-slide images for the pathology centre: the pyramid of a series, and its tiles.

A VL Whole Slide Microscopy series holds one image per resolution level, each cut into tiles
(frames). The pyramid route tells a viewer the levels and their tile grids; the tile route
answers one tile by level, column and row. A tile stored as baseline JPEG (the common case) is
sent as it is stored, without decoding; any other syntax is rendered to JPEG. Tiles never
change, so browsers may keep them.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

from aiohttp import web
from sqlalchemy import Row

from imaging.frames import FrameError, read_frame
from imaging.render import RenderError, render
from imaging.wsi import Pyramid, WsiError, build_pyramid
from server.audit import Entry
from server.dicomhttp import UID_PATHS
from server.keys import ARCHIVE
from server.policy import Action
from server.problems import NotFound
from server.routing import Call, ResponseModel, Router
from server.wado import audit_pixels, visible_instances

router = Router()

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_CACHE_SIZE = 32


class LevelOut(ResponseModel):
    index: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    tiles_down: int
    downsample: float
    pixel_spacing_mm: tuple[float, float] | None
    focal_planes: int


class AssociatedOut(ResponseModel):
    kind: str
    instance_uid: str
    width: int
    height: int


class PyramidOut(ResponseModel):
    series_uid: str
    levels: list[LevelOut]
    associated: list[AssociatedOut]


class _Pyramids:
    """Built pyramids by series and instance count (a series that grows is built again)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, int], Pyramid] = OrderedDict()

    def get(self, series: str, count: int) -> Pyramid | None:
        found = self._cache.get((series, count))
        if found is not None:
            self._cache.move_to_end((series, count))
        return found

    def put(self, series: str, count: int, pyramid: Pyramid) -> None:
        self._cache[(series, count)] = pyramid
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


_pyramids = _Pyramids()


async def _pyramid(call: Call[None, None]) -> tuple[Pyramid, list[Row[Any]]]:
    series = call.path["series"]
    rows = await visible_instances(call, call.path["study"], series)
    pyramid = _pyramids.get(series, len(rows))
    if pyramid is None:
        # Only a cache miss reads the instances' metadata (a tile request must stay cheap).
        rows = await visible_instances(call, call.path["study"], series, with_metadata=True)
        try:
            pyramid = await asyncio.to_thread(build_pyramid, [json.loads(r.metadata) for r in rows])
        except WsiError as exc:
            raise NotFound(f"not a whole-slide series: {exc.message}") from None
        _pyramids.put(series, len(rows), pyramid)
    return pyramid, rows


@router.route(
    "GET",
    "/api/v1/slides/{study}/{series}",
    action=Action.IMAGING_READ,
    summary="A whole-slide series' pyramid: levels, tile grids, label and overview images",
    tags=["imaging"],
    path_types=UID_PATHS,
    response=PyramidOut,
)
async def slide_pyramid(call: Call[None, None]) -> PyramidOut:
    """Level 0 is the highest resolution. Fetch tiles from ``…/tiles/{level}/{column}/{row}``."""
    pyramid, rows = await _pyramid(call)
    await call.audit(
        Entry(
            action="imaging.metadata",
            object_type="series",
            object_id=pyramid.series_uid,
            patient_id=rows[0].patient_ref,
        )
    )
    return PyramidOut(
        series_uid=pyramid.series_uid,
        levels=[
            LevelOut(
                index=level.index,
                width=level.total_columns,
                height=level.total_rows,
                tile_width=level.tile_columns,
                tile_height=level.tile_rows,
                tiles_across=level.tiles_across,
                tiles_down=level.tiles_down,
                downsample=level.downsample,
                pixel_spacing_mm=level.pixel_spacing_mm,
                focal_planes=level.focal_planes,
            )
            for level in pyramid.levels
        ],
        associated=[
            AssociatedOut(
                kind=a.kind, instance_uid=a.sop_instance_uid, width=a.columns, height=a.rows
            )
            for a in pyramid.associated
        ],
    )


@router.route(
    "GET",
    "/api/v1/slides/{study}/{series}/tiles/{level}/{column}/{row}",
    action=Action.IMAGING_READ,
    summary="One tile of a whole-slide image as JPEG",
    tags=["imaging"],
    path_types={**UID_PATHS, "level": int, "column": int, "row": int},
    produces="image/jpeg",
)
async def slide_tile(call: Call[None, None]) -> web.Response:
    """A tile outside the grid, or missing from a sparse level, is 404."""
    pyramid, rows = await _pyramid(call)
    ref = pyramid.tile(call.path["level"], call.path["column"], call.path["row"])
    if ref is None:
        raise NotFound("no such tile")
    row = next(r for r in rows if r.sop_instance_uid == ref.sop_instance_uid)
    path = call.app[ARCHIVE].path_of(row.sha256)
    try:
        if row.transfer_syntax_uid == JPEG_BASELINE:
            frame = await asyncio.to_thread(read_frame, path, ref.frame)
            data = frame.data
        else:
            data = await asyncio.to_thread(render, path, ref.frame, media_type="image/jpeg")
    except (FrameError, RenderError) as exc:
        raise NotFound(str(exc)) from None
    await audit_pixels(call, row)
    return web.Response(
        body=data,
        content_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )
