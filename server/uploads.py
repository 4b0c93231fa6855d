"""Resumable uploads of one DICOM file, for stations on links that drop.

The browser declares the file's size, then sends chunks at increasing offsets; after a dropped
connection it asks where the upload stands and carries on from there. A chunk at the wrong
offset is refused with 409 and the current offset, so nothing is written twice or out of
order. ``complete`` checks and stores the file like a STOW-RS part and, when the upload named a
consult, attaches its study. Partial files live under ``data_dir/uploads`` and only the
uploader can see or continue them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from server.archive import Received, TooLarge
from server.attachments import FileName
from server.audit import Entry
from server.consultflow import FINAL_STATES
from server.consults import load_consult, may_contribute
from server.db import guarded_update
from server.keys import ARCHIVE, SETTINGS
from server.models import Upload, utcnow
from server.policy import Action
from server.problems import Conflict, Forbidden, NotFound, PayloadTooLarge, Problem
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router
from server.studies import attach_studies

router = Router()

MAX_CHUNK = 8 * 1024 * 1024


class UploadBody(RequestModel):
    size: Annotated[int, Field(gt=0)]
    filename: FileName
    consult_id: uuid.UUID | None = None


class UploadOut(ResponseModel):
    id: uuid.UUID
    offset: int
    size: int
    filename: str
    consult_id: uuid.UUID | None
    complete: bool
    instance_uid: str | None


class ChunkQuery(QueryModel):
    offset: Annotated[int, Field(ge=0)]


class Stored(ResponseModel):
    study_uid: str
    series_uid: str
    instance_uid: str
    #: False when the same instance was stored already (uploads are idempotent).
    stored: bool


class WrongOffset(Problem):
    status, code, title, title_zh = 409, "wrong-offset", "Not the upload's offset", "上传位置不符"


class NotDicom(Problem):
    status, code, title, title_zh = (
        422,
        "dicom-invalid",
        "Not a valid DICOM file",
        "不是有效的 DICOM 文件",
    )


def _out(upload: Upload) -> UploadOut:
    return UploadOut(
        id=upload.id,
        offset=upload.received,
        size=upload.size,
        filename=upload.filename,
        consult_id=upload.consult_id,
        complete=upload.completed_at is not None,
        instance_uid=upload.instance_uid,
    )


def _part_path(call: Call[Any, Any], upload_id: uuid.UUID) -> Path:
    folder = call.app[SETTINGS].data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{upload_id.hex}.part"


async def _own(call: Call[Any, Any]) -> Upload:
    upload = await call.session.get(Upload, call.path["upload_id"])
    if upload is None or upload.user_id != call.principal.user_id:
        raise NotFound("no such upload")
    return upload


@router.route(
    "POST",
    "/api/v1/uploads",
    action=Action.IMAGING_WRITE,
    summary="Begin a resumable upload of one DICOM file",
    tags=["imaging"],
    body=UploadBody,
    response=UploadOut,
    status=201,
    errors=[409],
)
async def begin_upload(call: Call[UploadBody, None]) -> UploadOut:
    """Then send the bytes with ``PUT /api/v1/uploads/{id}?offset=`` and finish with
    ``POST /api/v1/uploads/{id}/complete``."""
    limit = call.app[SETTINGS].max_instance_bytes
    if call.body.size > limit:
        raise PayloadTooLarge(f"the file exceeds {limit} bytes")
    if call.body.consult_id is not None:
        consult, _ = await load_consult(call, call.body.consult_id)
        if not may_contribute(call.principal, consult):
            raise Forbidden("only the requesting station and the centre add images to a consult")
        if consult.state in FINAL_STATES:
            raise Conflict(f"a {consult.state.value} consult takes no more images")
    upload = Upload(
        id=uuid.uuid4(),
        user_id=call.principal.user_id,
        institution_id=call.principal.institution_id,
        consult_id=call.body.consult_id,
        filename=call.body.filename,
        size=call.body.size,
        received=0,
    )
    call.session.add(upload)
    await call.session.flush()
    _part_path(call, upload.id).touch()
    return _out(upload)


@router.route(
    "GET",
    "/api/v1/uploads/{upload_id}",
    action=Action.IMAGING_WRITE,
    summary="Where an upload stands (the offset to send next)",
    tags=["imaging"],
    response=UploadOut,
)
async def upload_status(call: Call[None, None]) -> UploadOut:
    return _out(await _own(call))


@router.route(
    "PUT",
    "/api/v1/uploads/{upload_id}",
    action=Action.IMAGING_WRITE,
    summary="Send the next chunk of an upload (the raw body, at most 8 MiB)",
    tags=["imaging"],
    query=ChunkQuery,
    response=UploadOut,
    raw_body=True,
    errors=[409],
)
async def upload_chunk(call: Call[None, ChunkQuery]) -> UploadOut:
    """A chunk whose ``offset`` is not the upload's current offset is refused with 409 and the
    current ``offset`` in the problem, so that a client that lost track can carry on."""
    upload = await _own(call)
    if upload.completed_at is not None:
        raise Conflict("the upload is complete")
    if call.query.offset != upload.received:
        raise WrongOffset(
            "send the chunk that starts at the upload's offset", offset=upload.received
        )
    room = min(MAX_CHUNK, upload.size - upload.received)
    declared = call.request.content_length
    if declared is not None and declared > room:
        raise PayloadTooLarge(f"this chunk may hold at most {room} bytes")
    await call.session.commit()  # release the database while the chunk arrives
    data = bytearray()
    async for piece in call.request.content.iter_chunked(256 * 1024):
        data += piece
        if len(data) > room:
            raise PayloadTooLarge(f"this chunk may hold at most {room} bytes")
    path = _part_path(call, upload.id)
    await asyncio.to_thread(_write_at, path, upload.received, bytes(data))
    await guarded_update(
        call.session,
        upload,
        "upload",
        Upload.received == call.query.offset,
        received=upload.received + len(data),
        updated_at=utcnow(),
    )
    return _out(upload)


def _write_at(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.ftruncate(fd, offset + len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


@router.route(
    "POST",
    "/api/v1/uploads/{upload_id}/complete",
    action=Action.IMAGING_WRITE,
    summary="Finish an upload: check and store the DICOM file, attach it to the consult",
    tags=["imaging"],
    response=Stored,
    errors=[409, 422],
)
async def complete_upload(call: Call[None, None]) -> Stored:
    upload = await _own(call)
    if upload.completed_at is not None:
        raise Conflict("the upload is complete")
    if upload.received != upload.size:
        raise WrongOffset("the upload is not whole yet", offset=upload.received)
    archive = call.app[ARCHIVE]
    path = _part_path(call, upload.id)
    staged = archive.store.temp_path()
    await asyncio.to_thread(os.replace, path, staged)
    try:
        received: Received = await archive.receive_file(staged)
    except TooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    accepted = await archive.accept(call.session, received, owner_id=upload.institution_id)
    inst = accepted.instance
    if not accepted.ok or inst is None:
        upload.completed_at = utcnow()  # the bytes are gone; the client starts again
        call.commit_on_error = True
        problem = (
            Conflict(accepted.message, code=accepted.code)
            if accepted.code in ("duplicate", "study-mismatch")
            else NotDicom(accepted.message)
        )
        problem.code = accepted.code
        raise problem
    await guarded_update(
        call.session,
        upload,
        "upload",
        completed_at=dt.datetime.now(dt.UTC),
        instance_uid=inst.instance_uid,
    )
    await call.audit(
        Entry(
            action="imaging.store",
            object_type="study",
            object_id=inst.study_uid,
            detail={"via": "upload"},
        )
    )
    if upload.consult_id is not None:
        consult, _ = await load_consult(call, upload.consult_id)
        await attach_studies(call, consult, [inst.study_uid])
    return Stored(
        study_uid=inst.study_uid,
        series_uid=inst.series_uid,
        instance_uid=inst.instance_uid,
        stored=accepted.verdict.value == "stored",
    )
