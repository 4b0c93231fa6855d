"""Searching the audit trail (supervisors and admins). There is no route that changes it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import select

from server.audit import Entry
from server.models import AuditEvent
from server.policy import Action
from server.routing import Call, QueryModel, ResponseModel, Router

router = Router()


class AuditOut(ResponseModel):
    id: int
    at: dt.datetime
    request_id: str
    actor_user_id: uuid.UUID | None
    actor_username: str
    actor_institution_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: str
    patient_id: uuid.UUID | None
    client_address: str
    outcome: str
    detail: dict[str, Any]


class AuditPage(ResponseModel):
    items: list[AuditOut]
    #: Pass as ``before_id`` for the next (older) page; absent on the last page.
    next_before_id: int | None


class AuditQuery(QueryModel):
    actor: Annotated[str, Field(max_length=64)] | None = None
    action: Annotated[str, Field(max_length=64)] | None = None
    object_type: Annotated[str, Field(max_length=32)] | None = None
    object_id: Annotated[str, Field(max_length=64)] | None = None
    patient_id: uuid.UUID | None = None
    outcome: Annotated[str, Field(pattern="^(ok|denied|failed)$")] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_id: Annotated[int, Field(ge=1, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


@router.route(
    "GET",
    "/api/v1/audit",
    action=Action.AUDIT_READ,
    summary="Search the audit trail, newest first",
    tags=["audit"],
    query=AuditQuery,
    response=AuditPage,
)
async def search_audit(call: Call[None, AuditQuery]) -> AuditPage:
    """Filters combine with AND. Reading the audit trail is itself audited."""
    q = call.query
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(q.limit + 1)
    if q.actor:
        stmt = stmt.where(AuditEvent.actor_username == q.actor)
    if q.action:
        stmt = stmt.where(AuditEvent.action == q.action)
    if q.object_type:
        stmt = stmt.where(AuditEvent.object_type == q.object_type)
    if q.object_id:
        stmt = stmt.where(AuditEvent.object_id == q.object_id)
    if q.patient_id:
        stmt = stmt.where(AuditEvent.patient_id == q.patient_id)
    if q.outcome:
        stmt = stmt.where(AuditEvent.outcome == q.outcome)
    if q.since:
        stmt = stmt.where(AuditEvent.at >= _aware(q.since))
    if q.until:
        stmt = stmt.where(AuditEvent.at < _aware(q.until))
    if q.before_id:
        stmt = stmt.where(AuditEvent.id < q.before_id)
    rows = list(await call.session.scalars(stmt))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    await call.audit(
        Entry(
            action="audit.search",
            object_type="audit",
            detail={"filters": sorted(q.model_dump(exclude_none=True, exclude={"limit"}))},
        )
    )
    return AuditPage(
        items=[AuditOut.model_validate(r) for r in rows],
        next_before_id=rows[-1].id if more and rows else None,
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
