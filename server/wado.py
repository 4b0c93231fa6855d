"""Retrieval: WADO-RS (instances, metadata, frames, bulk data, rendered, thumbnail) and WADO-URI.

Metadata comes from the index (the DICOM JSON kept at ingest), never from re-reading files; its
``BulkDataURI`` values become absolute URLs of the bulk data resource, and ``00020010`` carries
the stored transfer syntax (viewers decode frames with it). Frames are cut from the stored file
by seeking (:mod:`imaging.frames`): as stored with ``transfer-syntax=*``, else uncompressed.

Audit: each retrieval of instances or metadata is recorded; pixel reads (frames, rendered,
thumbnails, bulk data) once per session and series in a ten-minute window
(:class:`server.audit.ReadWindow`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import Row, select

from imaging import render
from imaging.frames import FrameError, decode_frame, read_frames
from server.audit import Entry
from server.dicomhttp import (
    DICOM_JSON,
    UID_PATHS,
    MediaRange,
    Part,
    base_url,
    multipart_response,
    parse_accept,
)
from server.keys import ARCHIVE, RECENT_READS
from server.models import DICOM
from server.policy import Action, study_visible_clause
from server.problems import BadRequest, NotAcceptable, NotFound, Problem
from server.routing import Call, QueryModel, Router

router = Router()
_TAGS = ("dicomweb",)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2"})
_MAX_FRAMES_PER_REQUEST = 1000


async def visible_instances(
    call: Call[Any, Any],
    study: str,
    series: str | None = None,
    instance: str | None = None,
    *,
    with_metadata: bool = False,
) -> list[Row[Any]]:
    """The visible instances at this level, in series and instance order; 404 if none."""
    i, s = DICOM.instances, DICOM.studies
    columns = [
        i.c.sop_instance_uid,
        i.c.series_uid,
        i.c.study_uid,
        i.c.sop_class_uid,
        i.c.transfer_syntax_uid,
        i.c.sha256,
        i.c.frames,
        s.c.patient_ref,
    ]
    if with_metadata:
        columns.append(i.c.metadata)
    stmt = (
        select(*columns)
        .join(s, s.c.study_uid == i.c.study_uid)
        .where(i.c.study_uid == study, study_visible_clause(call.principal))
        .order_by(i.c.series_uid, i.c.instance_number, i.c.sop_instance_uid)
    )
    if series is not None:
        stmt = stmt.where(i.c.series_uid == series)
    if instance is not None:
        stmt = stmt.where(i.c.sop_instance_uid == instance)
    rows = list((await call.session.execute(stmt)).all())
    if not rows:
        raise NotFound("no such study, series or instance")
    return rows


async def _audit_retrieval(call: Call[Any, Any], rows: list[Row[Any]], what: str) -> None:
    first = rows[0]
    await call.audit(
        Entry(
            action=f"imaging.{what}",
            object_type="study",
            object_id=first.study_uid,
            patient_id=first.patient_ref,
            detail={"instances": len(rows)},
        )
    )


async def audit_pixels(call: Call[Any, Any], row: Row[Any]) -> None:
    if call.app[RECENT_READS].first_in_window(call.principal.session_id, row.series_uid):
        await call.audit(
            Entry(
                action="imaging.pixels",
                object_type="series",
                object_id=row.series_uid,
                patient_id=row.patient_ref,
            )
        )


def _pixel_problem(exc: FrameError | render.RenderError) -> Problem:
    """No such frame or no pixels: 404; a syntax we cannot decode or encode: 406."""
    if getattr(exc, "status", 404) == 406:
        return NotAcceptable(str(exc))
    return NotFound(str(exc))


def _path(call: Call[Any, Any], row: Row[Any]) -> Path:
    return call.app[ARCHIVE].path_of(row.sha256)


class WadoQuery(QueryModel):
    """PS3.18 8.3.3.1: ``accept`` names the media types wanted, in place of the Accept header
    (for clients that cannot set headers, and OHIF's thumbnails); ``charset`` is accepted and
    ignored (responses are UTF-8)."""

    accept: str | None = Field(default=None, max_length=512)
    charset: str | None = Field(default=None, max_length=64)


def _accepted(call: Call[Any, Any]) -> list[MediaRange]:
    """The media ranges asked for: the ``accept`` query parameter, else the Accept header."""
    return parse_accept(call.request.query.get("accept") or call.request.headers.get("Accept"))


# -- instances --------------------------------------------------------------------------


def _want_dicom(ranges: list[MediaRange], stored: set[str]) -> None:
    for r in ranges:
        if r.type in ("*/*", "multipart/*"):
            return
        if r.type in ("multipart/related", "application/dicom"):
            if r.type == "multipart/related" and r.part_type not in ("", "application/dicom"):
                continue
            ts = r.transfer_syntax
            if ts in (None, "*") or stored <= {ts} or (ts == EXPLICIT_LE and stored <= _NATIVE):
                return
    raise NotAcceptable(
        'ask for multipart/related; type="application/dicom"; transfer-syntax=* '
        "(instances are sent as stored)"
    )


async def _retrieve(call: Call[None, None]) -> web.Response:
    rows = await visible_instances(
        call, call.path["study"], call.path.get("series"), call.path.get("instance")
    )
    _want_dicom(_accepted(call), {r.transfer_syntax_uid for r in rows})
    await _audit_retrieval(call, rows, "retrieve")
    root = base_url(call.request)
    parts = [
        Part(
            f"application/dicom; transfer-syntax={r.transfer_syntax_uid}",
            path=_path(call, r),
            location=f"{root}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_instance_uid}",
        )
        for r in rows
    ]
    return multipart_response(parts, "application/dicom")


_LEVELS = (
    ("study", "a study's", "/dicomweb/studies/{study}"),
    ("series", "a series'", "/dicomweb/studies/{study}/series/{series}"),
    ("instance", "an instance's", "/dicomweb/studies/{study}/series/{series}/instances/{instance}"),
)


def _at_every_level(
    suffix: str,
    name: str,
    summary: str,
    serve: Callable[[Call[None, Any]], Awaitable[web.Response]],
    *,
    levels: tuple[tuple[str, str, str], ...] = _LEVELS,
    **options: Any,
) -> None:
    """Declare one GET resource at study, series and instance level (``{level}`` and
    ``{whose}`` in ``name`` and ``summary`` say which)."""
    for level, whose, base in levels:

        async def handler(call: Call[None, Any]) -> web.Response:
            return await serve(call)

        handler.__name__ = name.format(level=level)
        router.route(
            "GET",
            base + suffix,
            action=Action.IMAGING_READ,
            summary=summary.format(whose=whose),
            tags=_TAGS,
            path_types=UID_PATHS,
            **({"query": WadoQuery} | options),
        )(handler)


_at_every_level(
    "",
    "retrieve_{level}",
    "WADO-RS: {whose} instances, as stored",
    _retrieve,
    produces='multipart/related; type="application/dicom"',
    errors=[406],
)


# -- metadata ---------------------------------------------------------------------------


#: A BulkDataURI in the stored JSON (compact, as the index wrote it). A value that merely
#: contains this text is JSON-escaped (\"), so it cannot match.
_BULK_URI = re.compile(r'"BulkDataURI":"([^"\\]*)"')


async def _metadata(call: Call[None, None]) -> web.Response:
    """The stored JSON texts spliced together, not parsed and serialised again (about 6× less
    CPU for a 200-instance series): bulk data paths made absolute, the stored transfer syntax
    added as 00020010."""
    rows = await visible_instances(
        call,
        call.path["study"],
        call.path.get("series"),
        call.path.get("instance"),
        with_metadata=True,
    )
    await _audit_retrieval(call, rows, "metadata")
    root = base_url(call.request)
    parts = []
    for r in rows:
        prefix = (
            f"{root}/studies/{r.study_uid}/series/{r.series_uid}"
            f"/instances/{r.sop_instance_uid}/bulkdata/"
        )

        def absolute(match: re.Match[str], prefix: str = prefix) -> str:
            return f'"BulkDataURI":"{prefix}{match.group(1).replace("/", ".")}"'

        text: str = _BULK_URI.sub(absolute, r.metadata)
        syntax = f'"00020010":{{"vr":"UI","Value":["{r.transfer_syntax_uid}"]}}}}'
        parts.append(text[:-1] + ("," if text != "{}" else "") + syntax)
    return web.Response(
        body=("[" + ",".join(parts) + "]").encode(), headers={"Content-Type": DICOM_JSON}
    )


_at_every_level(
    "/metadata", "{level}_metadata", "WADO-RS: {whose} metadata", _metadata, produces=DICOM_JSON
)


# -- frames -----------------------------------------------------------------------------


def _frame_numbers(text: str) -> list[int]:
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or len(piece) > 6 or int(piece) < 1:
            raise BadRequest("frame numbers are positive integers separated by commas")
        numbers.append(int(piece))
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"ask for at most {_MAX_FRAMES_PER_REQUEST} frames at a time")
    return numbers


def _frames_as_stored(ranges: list[MediaRange]) -> bool:
    """True: send frames in their stored syntax; False: uncompressed. 406 if neither will do."""
    for r in ranges:
        if r.type in ("*/*", "multipart/*"):
            return True
        if r.type == "multipart/related":
            if r.part_type in ("", "*/*", "application/octet-stream", "application/*"):
                return r.transfer_syntax == "*" or (
                    r.part_type in ("", "*/*", "application/*") and r.transfer_syntax is None
                )
            if r.part_type.startswith("image/") and r.transfer_syntax in (None, "*"):
                return True
        if r.type == "application/octet-stream":
            return False
    raise NotAcceptable('ask for multipart/related; type="application/octet-stream"')


@router.route(
    "GET",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    action=Action.IMAGING_READ,
    summary="WADO-RS: frames of an instance (comma-separated, 1-based)",
    tags=_TAGS,
    path_types=UID_PATHS,
    query=WadoQuery,
    produces='multipart/related; type="application/octet-stream"',
    errors=[400, 406],
)
async def retrieve_frames(call: Call[None, WadoQuery]) -> web.Response:
    """With ``transfer-syntax=*`` in Accept, frames come as stored (JPEG, JPEG 2000, RLE…);
    otherwise uncompressed little endian, decoded on the server."""
    numbers = _frame_numbers(call.path["frames"])
    as_stored = _frames_as_stored(_accepted(call))
    rows = await visible_instances(
        call, call.path["study"], call.path["series"], call.path["instance"]
    )
    row = rows[0]
    path = _path(call, row)
    ts = row.transfer_syntax_uid
    try:
        if as_stored or ts in _NATIVE:
            frames = await asyncio.to_thread(lambda: [f.data for f in read_frames(path, numbers)])
            out_ts = ts if as_stored else EXPLICIT_LE
        else:
            frames = [await asyncio.to_thread(_decoded_bytes, path, n) for n in numbers]
            out_ts = EXPLICIT_LE
    except FrameError as exc:
        raise _pixel_problem(exc) from None
    await audit_pixels(call, row)
    ctype = f"application/octet-stream; transfer-syntax={out_ts}"
    return multipart_response([Part(ctype, data=d) for d in frames], "application/octet-stream")


def _decoded_bytes(path: Path, number: int) -> bytes:
    array = decode_frame(path, number)
    return bytes(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


# -- bulk data --------------------------------------------------------------------------


@router.route(
    "GET",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag_path}",
    action=Action.IMAGING_READ,
    summary="WADO-RS: one bulk data value named by a BulkDataURI of the metadata",
    tags=_TAGS,
    path_types=UID_PATHS,
    query=WadoQuery,
    produces='multipart/related; type="application/octet-stream"',
)
async def retrieve_bulkdata(call: Call[None, WadoQuery]) -> web.Response:
    rows = await visible_instances(
        call, call.path["study"], call.path["series"], call.path["instance"]
    )
    row = rows[0]
    try:
        data = await asyncio.to_thread(_bulk_value, _path(call, row), call.path["tag_path"])
    except LookupError:
        raise NotFound("no such bulk data in this instance") from None
    await audit_pixels(call, row)
    return multipart_response(
        [Part("application/octet-stream", data=data)], "application/octet-stream"
    )


def _bulk_value(path: Path, tag_path: str) -> bytes:
    from pydicom import dcmread

    steps = tag_path.split(".")
    if len(steps) % 2 != 1 or len(steps) > 9:
        raise LookupError(tag_path)
    ds = dcmread(path, stop_before_pixels=False)
    node: Any = ds
    for index, step in enumerate(steps):
        if index % 2 == 0:
            try:
                tag = int(step, 16)
            except ValueError:
                raise LookupError(step) from None
            if tag not in node:
                raise LookupError(step)
            node = node[tag]
            if index < len(steps) - 1:
                node = node.value
        else:
            if not step.isdigit() or int(step) >= len(node):
                raise LookupError(step)
            node = node[int(step)]
    value = node.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise LookupError(tag_path)


# -- rendered and thumbnails ------------------------------------------------------------


class ThumbnailQuery(WadoQuery):
    viewport: str | None = Field(default=None, max_length=32)


class RenderedQuery(ThumbnailQuery):
    window: str | None = Field(default=None, max_length=64)
    quality: int | None = Field(default=None, ge=1, le=100)


def _viewport(text: str | None) -> tuple[int, int] | None:
    try:
        return render.parse_viewport(text) if text else None
    except render.RenderError as exc:
        raise BadRequest(str(exc)) from None


async def _representative(call: Call[Any, Any]) -> Row[Any]:
    """The image that stands for a study, series or instance: the middle one with pixels."""
    rows = await visible_instances(
        call, call.path["study"], call.path.get("series"), call.path.get("instance")
    )
    with_pixels = [r for r in rows if r.frames]
    if not with_pixels:
        raise NotFound("nothing here has pixel data")
    return with_pixels[len(with_pixels) // 2]


def _image_type(call: Call[Any, Any]) -> Literal["image/jpeg", "image/png"]:
    for r in _accepted(call):
        if r.type in ("image/jpeg", "image/*", "*/*", "image/jpg"):
            return "image/jpeg"
        if r.type == "image/png":
            return "image/png"
    raise NotAcceptable("rendered images are image/jpeg or image/png")


async def _rendered(
    call: Call[None, RenderedQuery], frame: int, row: Row[Any] | None = None
) -> web.Response:
    media = _image_type(call)
    try:
        window = render.parse_window(call.query.window) if call.query.window else None
    except render.RenderError as exc:
        raise BadRequest(str(exc)) from None
    viewport = _viewport(call.query.viewport)
    if row is None:
        rows = await visible_instances(
            call, call.path["study"], call.path["series"], call.path["instance"]
        )
        row = rows[0]
    try:
        data = await asyncio.to_thread(
            render.render,
            _path(call, row),
            frame,
            media_type=media,
            window=window,
            viewport=viewport,
            quality=call.query.quality,
        )
    except (FrameError, render.RenderError) as exc:
        raise _pixel_problem(exc) from None
    await audit_pixels(call, row)
    return web.Response(body=data, content_type=media)


async def _rendered_whole(call: Call[None, RenderedQuery]) -> web.Response:
    """A study or series rendered: its representative image (the one its thumbnail shows), as
    viewers such as OHIF ask for it, single part; not the multipart of every instance."""
    return await _rendered(call, 1, await _representative(call))


_at_every_level(
    "/rendered",
    "rendered_{level}",
    "WADO-RS: {whose} representative image rendered as JPEG or PNG",
    _rendered_whole,
    levels=_LEVELS[:2],  # an instance's has a route of its own below
    query=RenderedQuery,
    produces=("image/jpeg", "image/png"),
    errors=[400, 406],
)


@router.route(
    "GET",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
    action=Action.IMAGING_READ,
    summary="WADO-RS: an instance rendered as JPEG or PNG (first frame)",
    tags=_TAGS,
    path_types=UID_PATHS,
    query=RenderedQuery,
    produces=("image/jpeg", "image/png"),
    errors=[400, 406],
)
async def rendered_instance(call: Call[None, RenderedQuery]) -> web.Response:
    """``window=center,width[,linear|linear_exact|sigmoid]``, ``viewport=width,height``,
    ``quality=1..100``; Accept chooses image/jpeg (default) or image/png."""
    return await _rendered(call, 1)


@router.route(
    "GET",
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
    action=Action.IMAGING_READ,
    summary="WADO-RS: one frame rendered as JPEG or PNG",
    tags=_TAGS,
    path_types={**UID_PATHS, "frame": int},
    query=RenderedQuery,
    produces=("image/jpeg", "image/png"),
    errors=[400, 406],
)
async def rendered_frame(call: Call[None, RenderedQuery]) -> web.Response:
    frame = call.path["frame"]
    if frame < 1:
        raise NotFound("frames are numbered from 1")
    return await _rendered(call, frame)


async def _thumbnail(call: Call[None, ThumbnailQuery]) -> web.Response:
    media = _image_type(call)
    viewport = _viewport(call.query.viewport)
    row = await _representative(call)
    try:
        data = await asyncio.to_thread(
            render.thumbnail, _path(call, row), media_type=media, viewport=viewport
        )
    except (FrameError, render.RenderError) as exc:
        raise _pixel_problem(exc) from None
    await audit_pixels(call, row)
    return web.Response(body=data, content_type=media)


_at_every_level(
    "/thumbnail",
    "{level}_thumbnail",
    "WADO-RS: {whose} thumbnail (the middle image; ``viewport`` bounds its size)",
    _thumbnail,
    query=ThumbnailQuery,
    produces=("image/jpeg", "image/png"),
    errors=[400, 406],
)


# -- WADO-URI ---------------------------------------------------------------------------


class WadoUriQuery(QueryModel):
    requestType: Literal["WADO"]
    studyUID: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)
    seriesUID: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)
    objectUID: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)
    contentType: str = "image/jpeg"
    frameNumber: int = Field(default=1, ge=1)
    windowCenter: float | None = None
    windowWidth: float | None = Field(default=None, gt=0)
    rows: int | None = Field(default=None, ge=1, le=4096)
    columns: int | None = Field(default=None, ge=1, le=4096)
    transferSyntax: str | None = Field(default=None, max_length=64)


@router.route(
    "GET",
    "/wado",
    action=Action.IMAGING_READ,
    summary="WADO-URI: one object as application/dicom, image/jpeg or image/png",
    tags=_TAGS,
    query=WadoUriQuery,
    produces=("image/jpeg", "image/png", "application/dicom"),
    errors=[404, 406],
)
async def wado_uri(call: Call[None, WadoUriQuery]) -> web.Response:
    q = call.query
    rows = await visible_instances(call, q.studyUID, q.seriesUID, q.objectUID)
    row = rows[0]
    path = _path(call, row)
    wanted = [t.strip().lower() for t in q.contentType.split(",")]
    if "application/dicom" in wanted:
        await _audit_retrieval(call, rows, "retrieve")
        data = await asyncio.to_thread(path.read_bytes)
        return web.Response(body=data, content_type="application/dicom")
    media: Literal["image/jpeg", "image/png"]
    if "image/png" in wanted:
        media = "image/png"
    elif any(w in ("image/jpeg", "image/*", "*/*") for w in wanted):
        media = "image/jpeg"
    else:
        raise NotAcceptable("contentType is application/dicom, image/jpeg or image/png")
    window = None
    if q.windowCenter is not None and q.windowWidth is not None:
        window = (q.windowCenter, q.windowWidth, "LINEAR")
    viewport = (
        (q.columns or q.rows or 0, q.rows or q.columns or 0) if (q.rows or q.columns) else None
    )
    try:
        data = await asyncio.to_thread(
            render.render, path, q.frameNumber, media_type=media, window=window, viewport=viewport
        )
    except (FrameError, render.RenderError) as exc:
        raise _pixel_problem(exc) from None
    await audit_pixels(call, row)
    return web.Response(body=data, content_type=media)
