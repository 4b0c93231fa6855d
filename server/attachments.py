"""Files attached to a consult: photos, documents, anything the station or the centre adds.

Uploads are the raw request body (any content type), streamed to the blob store under a size
limit and recorded with their SHA-256. Downloads are always served as attachments, never inline,
so that a file cannot run as a page of ours. DICOM studies, ECGs and lab results arrive as typed
attachments with the imaging issue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, Field
from sqlalchemy import select

from imaging import photo
from imaging.aecg import AecgError, read_aecg
from server.audit import Entry
from server.consultflow import FINAL_STATES
from server.consults import display_names, load_consult, may_contribute, other_side_streams
from server.events import event_payload
from server.keys import BLOBS, SETTINGS
from server.models import Attachment, Consult
from server.policy import Action
from server.problems import Conflict, Forbidden, NotFound, PayloadTooLarge, Problem
from server.routing import Call, QueryModel, ResponseModel, Router

router = Router()

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_CHUNK = 256 * 1024


class NotPreviewable(Problem):
    status, code = 422, "attachment-not-previewable"
    title, title_zh = "This file cannot be previewed", "此文件无法预览"


class TooLargeToPreview(NotPreviewable):
    code = "attachment-too-large"
    title, title_zh = "This picture is too large to preview", "图片过大，无法预览"


class PreviewQuery(QueryModel):
    #: The longest side of the preview, in pixels.
    size: int = Field(default=photo.DEFAULT_BOX, ge=64, le=photo.MAX_BOX)


class NotAnEcg(Problem):
    status, code = 422, "aecg-invalid"
    title, title_zh = "Not a readable aECG", "不是可读的心电图 XML"


async def check_aecg(path: Path) -> None:
    """Refuse an aECG file that does not read as a 12-lead ECG (422 ``aecg-<reason>``)."""
    try:
        await asyncio.to_thread(read_aecg, path)
    except AecgError as exc:
        problem = NotAnEcg(f"{exc.code}: the file is not a readable HL7 aECG")
        problem.code = f"aecg-{exc.code}"
        raise problem from None


async def load_attachment(
    call: Call[Any, Any], *, kind: str | None = None, missing: str = "no such attachment"
) -> tuple[Attachment, Consult]:
    """The attachment the path names (of ``kind``, if given) and its consult, when the caller may
    see that consult; 404 otherwise."""
    attachment = await call.session.get(Attachment, call.path["attachment_id"])
    if attachment is None or (kind is not None and attachment.kind != kind):
        raise NotFound(missing)
    consult, _ = await load_consult(call, attachment.consult_id)
    return attachment, consult


def read_entry(
    attachment: Attachment, consult: Consult, action: str = "attachment.read", **detail: Any
) -> Entry:
    """The audit record of a read of an attached file (of the consult's patient)."""
    return Entry(
        action=action,
        object_type="attachment",
        object_id=str(attachment.id),
        patient_id=consult.patient_id,
        detail=detail,
    )


def _filename(value: str) -> str:
    if any(c in value for c in "/\\\x00") or value in {".", ".."} or value != value.strip():
        raise ValueError("a plain file name, without folders")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


FileName = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_filename)]


class UploadQuery(QueryModel):
    filename: FileName
    #: ``aecg``: an HL7 aECG XML file, checked on upload and readable as an ECG.
    kind: Literal["file", "photo", "document", "aecg"] = "file"


class AttachmentOut(ResponseModel):
    id: uuid.UUID
    consult_id: uuid.UUID
    kind: str
    filename: str
    content_type: str
    size: int
    sha256: str
    uploaded_by_user_id: uuid.UUID
    uploaded_by_name: str = ""
    message_id: uuid.UUID | None
    created_at: dt.datetime


class AttachmentList(ResponseModel):
    items: list[AttachmentOut]


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(_CHUNK):
        yield chunk


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/attachments",
    action=Action.CONSULT_READ,
    summary="Attach a file (the raw request body) to a consult",
    tags=["consults"],
    query=UploadQuery,
    response=AttachmentOut,
    status=201,
    raw_body=True,
    errors=[409],
)
async def upload(call: Call[None, UploadQuery]) -> AttachmentOut:
    """Send the file as the body with its own ``Content-Type`` and ``?filename=``. The limit is
    ``HUIZHEN_MAX_ATTACHMENT_BYTES``."""
    consult, _ = await load_consult(call, call.path["consult_id"])
    if not may_contribute(call.principal, consult):
        raise Forbidden("only the requesting station and the centre attach files")
    if consult.state in FINAL_STATES:
        raise Conflict(f"a {consult.state.value} consult takes no more files")
    limit = call.app[SETTINGS].max_attachment_bytes
    declared = call.request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the file exceeds {limit} bytes")
    ctype = call.request.content_type.lower()
    content_type = ctype if _CONTENT_TYPE.match(ctype) else "application/octet-stream"
    blob = await call.app[BLOBS].put(_chunks(call.request), max_bytes=limit)
    if call.query.kind == "aecg":
        await check_aecg(call.app[BLOBS].path(blob.sha256))
    attachment = Attachment(
        id=uuid.uuid4(),
        consult_id=consult.id,
        kind=call.query.kind,
        filename=call.query.filename,
        content_type=content_type,
        size=blob.size,
        sha256=blob.sha256,
        uploaded_by_user_id=call.principal.user_id,
    )
    call.session.add(attachment)
    await call.session.flush()
    await call.audit(
        Entry(
            action="attachment.create",
            object_type="attachment",
            object_id=str(attachment.id),
            patient_id=consult.patient_id,
            detail={"size": blob.size},
        )
    )
    call.publish(
        other_side_streams(call.principal, consult),
        "consult.attachment",
        consult_id=consult.id,
        payload=event_payload(consult, attachment_id=str(attachment.id)),
    )
    out = AttachmentOut.model_validate(attachment)
    out.uploaded_by_name = call.principal.display_name
    return out


@router.route(
    "GET",
    "/api/v1/consults/{consult_id}/attachments",
    action=Action.CONSULT_READ,
    summary="The files attached to a consult",
    tags=["consults"],
    response=AttachmentList,
)
async def list_attachments(call: Call[None, None]) -> AttachmentList:
    consult, _ = await load_consult(call, call.path["consult_id"])
    rows = await call.session.scalars(
        select(Attachment)
        .where(Attachment.consult_id == consult.id)
        .order_by(Attachment.created_at, Attachment.id)
    )
    files = list(rows)
    names = await display_names(call.session, [a.uploaded_by_user_id for a in files])
    items = []
    for a in files:
        out = AttachmentOut.model_validate(a)
        out.uploaded_by_name = names.get(a.uploaded_by_user_id, "")
        items.append(out)
    return AttachmentList(items=items)


@router.route(
    "GET",
    "/api/v1/attachments/{attachment_id}",
    action=Action.CONSULT_READ,
    summary="Download an attached file",
    tags=["consults"],
    produces="application/octet-stream",
)
async def download(call: Call[None, None]) -> web.StreamResponse:
    attachment, consult = await load_attachment(call)
    await call.audit(read_entry(attachment, consult))
    path = call.app[BLOBS].path(attachment.sha256)
    quoted = urllib.parse.quote(attachment.filename, safe="")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
            "Content-Security-Policy": "sandbox",
            "X-Original-Content-Type": attachment.content_type,
            "X-Content-SHA256": attachment.sha256,
        },
    )


@router.route(
    "GET",
    "/api/v1/attachments/{attachment_id}/preview",
    action=Action.CONSULT_READ,
    summary="A photo attachment as a JPEG fitted in size×size (TIFF, 16-bit and big photos too)",
    tags=["consults"],
    query=PreviewQuery,
    produces="image/jpeg",
    errors=[422],
)
async def preview(call: Call[None, PreviewQuery]) -> web.Response:
    """What a browser can show and a slow link can carry: the first picture of the file, upright,
    8-bit, never enlarged. 422 when the file is not a picture or too large to decode."""
    attachment, consult = await load_attachment(call)
    path = call.app[BLOBS].path(attachment.sha256)
    try:
        data = await asyncio.to_thread(photo.preview, path, call.query.size)
    except photo.PhotoError as exc:
        refusal = TooLargeToPreview if exc.code == "too-large" else NotPreviewable
        raise refusal(exc.message) from None
    await call.audit(read_entry(attachment, consult, preview=call.query.size))
    return web.Response(
        body=data,
        content_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600", "X-Content-SHA256": attachment.sha256},
    )
