"""DICOMweb at ``/dicomweb``: QIDO-RS search, STOW-RS store and delete (PS3.18).

Retrieval (WADO-RS, rendered images, WADO-URI) is in :mod:`server.wado`. Every route goes
through the router like the rest of the API: the session cookie or a bearer token
authenticates, the policy layer decides by role, and visibility by institution is a SQL
condition from :func:`server.policy.study_visible_clause`: a station sees what it and its
village clinics sent, a centre what is attached to its consults.

STOW-RS streams each part of the ``multipart/related`` body to disk, checks it, and commits its
index row before reading the next, so a large upload never holds the database, and an upload
that breaks off keeps the instances that arrived whole. The response lists each instance as
stored (``ReferencedSOPSequence``) or failed with a reason (``FailedSOPSequence``): 200 when all
were stored, 202 when some failed, 409 when none was stored. ``?consult=<id>`` also attaches
the studies to a consult, which the other side hears of.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.helpers import parse_mimetype
from sqlalchemy import select

from imaging.ingest import Instance
from imaging.qido import Level, QueryError, parse_query, search
from imaging.steps import Work
from server.archive import Accepted, TooLarge, Verdict
from server.audit import Entry, writing
from server.consultflow import FINAL_STATES
from server.consults import load_consult, may_contribute
from server.dicomhttp import (
    DICOM_JSON,
    UID_PATHS,
    base_url,
    dicom_json,
)
from server.keys import ARCHIVE
from server.models import DICOM, Consult
from server.policy import Action, study_visible_clause
from server.problems import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from server.routing import Call, QueryModel, Router
from server.studies import attach_studies

router = Router()

_CHUNK = 256 * 1024
_TAGS = ("dicomweb",)


class DicomQuery(QueryModel):
    """QIDO-RS: match on attributes by keyword or tag (PatientID=…, 00100020=…), with
    ``includefield``, ``limit``, ``offset`` and ``fuzzymatching``."""

    model_config = {"extra": "allow"}

    limit: int | None = None
    offset: int | None = None


class StowQuery(QueryModel):
    consult: uuid.UUID | None = None


# -- QIDO-RS ----------------------------------------------------------------------------


async def _search(
    call: Call[None, Any],
    level: Level,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> web.Response:
    try:
        query = parse_query(level, call.request.query.items())
    except QueryError as exc:
        raise BadRequest(exc.message) from None
    items = await search(
        call.session,
        DICOM,
        query,
        visible=study_visible_clause(call.principal),
        base_url=base_url(call.request),
        study_uid=study_uid,
        series_uid=series_uid,
    )
    studies = {_uid(item, "0020000D") for item in items}
    await call.audit_many(
        Entry(action="imaging.search", object_type="study", object_id=uid)
        for uid in sorted(studies)
    )
    return dicom_json(items)


def _uid(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _qido(path: str, level: Level, summary: str) -> None:
    async def handler(call: Call[None, DicomQuery]) -> web.Response:
        return await _search(
            call, level, study_uid=call.path.get("study"), series_uid=call.path.get("series")
        )

    handler.__name__ = "search_" + path.strip("/").replace("/", "_").replace("{", "").replace(
        "}", ""
    ).removeprefix("dicomweb_")
    router.route(
        "GET",
        path,
        action=Action.IMAGING_READ,
        summary=summary,
        tags=_TAGS,
        query=DicomQuery,
        path_types=UID_PATHS,
        produces=DICOM_JSON,
        errors=[400],
    )(handler)


_qido("/dicomweb/studies", Level.STUDY, "QIDO-RS: search for studies")
_qido("/dicomweb/series", Level.SERIES, "QIDO-RS: search for series in all studies")
_qido("/dicomweb/instances", Level.INSTANCE, "QIDO-RS: search for instances in all studies")
_qido("/dicomweb/studies/{study}/series", Level.SERIES, "QIDO-RS: search a study's series")
_qido("/dicomweb/studies/{study}/instances", Level.INSTANCE, "QIDO-RS: search a study's instances")
_qido(
    "/dicomweb/studies/{study}/series/{series}/instances",
    Level.INSTANCE,
    "QIDO-RS: search a series' instances",
)


# -- STOW-RS ----------------------------------------------------------------------------


def _multipart_type(request: web.Request) -> str:
    header = request.headers.get("Content-Type", "")
    mime = parse_mimetype(header)
    if f"{mime.type}/{mime.subtype}" != "multipart/related" or "boundary" not in mime.parameters:
        raise UnsupportedMediaType(
            'send multipart/related; type="application/dicom" with a boundary'
        )
    part_type = mime.parameters.get("type", "application/dicom").strip('"').lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType("only application/dicom parts are accepted (no bulk data)")
    return part_type


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(_CHUNK):
        yield chunk


def _sop_ref(accepted: Accepted, url: str = "", reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    inst = accepted.instance
    if inst is not None:
        item["00081150"] = {"vr": "UI", "Value": [inst.sop_class_uid]}
        item["00081155"] = {"vr": "UI", "Value": [inst.instance_uid]}
    else:
        item["00081150"] = {"vr": "UI"}
        item["00081155"] = {"vr": "UI"}
    if url:
        item["00081190"] = {"vr": "UR", "Value": [url]}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


async def _stow(call: Call[None, StowQuery], study_uid: str | None) -> web.Response:
    _multipart_type(call.request)
    principal = call.principal
    consult: Consult | None = None
    if call.query.consult is not None:
        consult, _ = await load_consult(call, call.query.consult)
        if not may_contribute(principal, consult):
            raise Forbidden("only the requesting station and the centre add images to a consult")
        if consult.state in FINAL_STATES:
            raise Conflict(f"a {consult.state.value} consult takes no more images")
    # Release the database while bytes arrive: each instance commits on its own below.
    await call.session.commit()
    archive = call.app[ARCHIVE]
    try:
        reader = await call.request.multipart()
    except (ValueError, AssertionError):
        raise BadRequest("the multipart body cannot be read") from None
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies: dict[str, uuid.UUID | None] = {}
    actor = call.actor()

    def audit_first_of_study(inst: Instance) -> Work[int] | None:
        """One record per study stored by this request, in the transaction of its first
        instance."""
        if inst.study_uid in studies:
            return None
        entry = Entry(
            action="imaging.store",
            object_type="study",
            object_id=inst.study_uid,
            detail={"via": "stow-rs"},
        )
        return writing(actor, [entry])

    root = base_url(call.request)
    parts = 0
    while True:
        try:
            part = await _next_part(reader)
        except ValueError:
            raise BadRequest("the multipart body is malformed") from None
        if part is None:
            break
        parts += 1
        ctype = part.headers.get("Content-Type", "application/dicom").split(";")[0].strip()
        if ctype.lower() != "application/dicom":
            await part.release()
            failed.append(_sop_ref(Accepted(Verdict.REFUSED), reason=0xC000))
            continue
        try:
            received = await archive.receive(_part_chunks(part))
        except TooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        accepted = await archive.accept(
            call.session,
            received,
            owner_id=principal.institution_id,
            expect_study_uid=study_uid,
            then=audit_first_of_study,
        )
        inst = accepted.instance
        if not accepted.ok or inst is None:
            failed.append(_sop_ref(accepted, reason=accepted.reason))
            await call.session.rollback()
            continue
        studies.setdefault(inst.study_uid, None)
        series_url = f"{root}/studies/{inst.study_uid}/series/{inst.series_uid}"
        stored.append(_sop_ref(accepted, f"{series_url}/instances/{inst.instance_uid}"))
        await call.session.commit()
    if parts == 0:
        raise BadRequest("the body has no parts")
    if consult is not None and studies:
        await _attach(call, consult.id, list(studies))
    body: dict[str, Any] = {}
    if study_uid is not None or len(studies) == 1:
        body["00081190"] = {
            "vr": "UR",
            "Value": [f"{root}/studies/{study_uid or next(iter(studies))}"],
        }
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if stored else 409)
    return dicom_json(body, status=status)


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    part = await reader.next()
    if part is None:
        return None
    if not isinstance(part, BodyPartReader):  # a nested multipart: not DICOM
        raise ValueError("nested multipart")
    return part


async def _attach(call: Call[Any, Any], consult_id: uuid.UUID, study_uids: list[str]) -> None:
    consult, _ = await load_consult(call, consult_id)  # loaded again: the loop committed
    await attach_studies(call, consult, study_uids)


@router.route(
    "POST",
    "/dicomweb/studies",
    action=Action.IMAGING_WRITE,
    summary="STOW-RS: store instances (multipart/related; type=application/dicom)",
    tags=_TAGS,
    query=StowQuery,
    raw_body=True,
    produces=DICOM_JSON,
    errors=[400, 409, 415],
)
async def stow(call: Call[None, StowQuery]) -> web.Response:
    """Parts are application/dicom Part-10 files. ``?consult=`` attaches the stored studies to a
    consult of the caller's. Each instance is at most ``HUIZHEN_MAX_INSTANCE_BYTES``."""
    return await _stow(call, None)


@router.route(
    "POST",
    "/dicomweb/studies/{study}",
    action=Action.IMAGING_WRITE,
    summary="STOW-RS: store instances of one study",
    tags=_TAGS,
    query=StowQuery,
    path_types=UID_PATHS,
    raw_body=True,
    produces=DICOM_JSON,
    errors=[400, 409, 415],
)
async def stow_study(call: Call[None, StowQuery]) -> web.Response:
    """Instances of another study fail with reason A900."""
    return await _stow(call, call.path["study"])


# -- delete -----------------------------------------------------------------------------


async def _delete(call: Call[None, None]) -> None:
    study = call.path["study"]
    series = call.path.get("series")
    instance = call.path.get("instance")
    s = DICOM.studies
    row = (
        await call.session.execute(select(s.c.patient_ref).where(s.c.study_uid == study))
    ).first()
    if row is None:
        raise NotFound("no such study")
    removed = await DICOM.remove(
        call.session, study_uid=study, series_uid=series, instance_uid=instance
    )
    if removed.instances == 0:
        raise NotFound("no such series or instance")
    await call.audit(
        Entry(
            action="imaging.delete",
            object_type="study",
            object_id=study,
            patient_id=row.patient_ref,
            detail={
                "level": "instance" if instance else "series" if series else "study",
                "instances": removed.instances,
            },
        )
    )
    await call.session.commit()
    archive = call.app[ARCHIVE]
    for sha in removed.orphaned_sha256:
        archive.store.delete(sha)


def _delete_route(path: str, name: str, summary: str) -> None:
    async def handler(call: Call[None, None]) -> None:
        await _delete(call)

    handler.__name__ = name
    router.route(
        "DELETE",
        path,
        action=Action.IMAGING_DELETE,
        summary=summary,
        tags=_TAGS,
        path_types=UID_PATHS,
    )(handler)


_delete_route("/dicomweb/studies/{study}", "delete_study", "Delete a study (admins)")
_delete_route(
    "/dicomweb/studies/{study}/series/{series}", "delete_series", "Delete a series (admins)"
)
_delete_route(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
    "delete_instance",
    "Delete an instance (admins)",
)
