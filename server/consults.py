"""Consult requests: opening one, reading them, and the guarded transition every step uses.

Every transition is a guarded update: ``UPDATE consults … WHERE id = ? AND state = ? AND
version = ?``. Of two callers acting on the same consult at once (two specialists claiming it),
exactly one matches; the other gets 409 and nothing changes. Each accepted transition is stored
with its actor and time, and the clinically meaningful ones are announced on the durable streams
in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Entry, Outcome
from server.consultflow import (
    LIVE_CALL_STATES,
    ConsultAction,
    ConsultState,
    Priority,
    advance,
)
from server.db import guarded_update
from server.events import centre_stream, event_payload, institution_stream, user_stream
from server.models import (
    Centre,
    Consult,
    ConsultTransition,
    Patient,
    Report,
    ReportState,
    TurnaroundTarget,
    User,
    VideoCall,
    utcnow,
)
from server.policy import (
    Action,
    Principal,
    can_work_on,
    centre_side,
    consult_visible,
    consult_visible_clause,
    patient_visible_clause,
    requester_side,
)
from server.problems import NotFound, ValidationFailed
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router

router = Router()

Text = Annotated[str, Field(min_length=1, max_length=4000)]


# -- schemas ------------------------------------------------------------------------------


class ConsultCreate(RequestModel):
    patient_id: uuid.UUID
    centre: Centre
    question: Text
    clinical_summary: Annotated[str, Field(max_length=8000)] = ""
    priority: Priority = Priority.ROUTINE
    preferred_video_at: dt.datetime | None = None
    #: Submit at once (the usual case); ``false`` keeps a draft.
    submit: bool = True


class PatientBrief(ResponseModel):
    id: uuid.UUID
    name: str
    sex: str
    birth_date: dt.date


class TransitionOut(ResponseModel):
    action: str
    from_state: str | None
    to_state: str
    actor_user_id: uuid.UUID | None
    actor_name: str | None = None
    at: dt.datetime
    note: str
    detail: dict[str, Any]


class ReportBrief(ResponseModel):
    id: uuid.UUID
    version: int
    state: str
    critical: bool
    signed_at: dt.datetime | None


class ConsultOut(ResponseModel):
    id: uuid.UUID
    patient: PatientBrief
    centre: Centre
    state: ConsultState
    priority: Priority
    question: str
    clinical_summary: str
    preferred_video_at: dt.datetime | None
    requester_user_id: uuid.UUID
    requester_name: str
    requester_institution_id: uuid.UUID
    assignee_user_id: uuid.UUID | None
    assignee_name: str | None
    escalated_to_institution_id: uuid.UUID | None
    #: A signed critical value that the station has not yet acknowledged.
    critical_pending: bool
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    claimed_at: dt.datetime | None
    reported_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    due_at: dt.datetime | None
    version: int


class ConsultDetail(ConsultOut):
    timeline: list[TransitionOut]
    reports: list[ReportBrief]
    #: The call ringing or under way on this consult, if any (to show a ring or rejoin).
    live_call_id: uuid.UUID | None = None


class ConsultList(ResponseModel):
    items: list[ConsultOut]
    total: int


class ConsultQuery(QueryModel):
    state: ConsultState | None = None
    centre: Centre | None = None
    patient_id: uuid.UUID | None = None
    #: Only consults with a critical value the station has not acknowledged yet (true), or none
    #: (false): a lab's critical value arrives before the report is signed.
    critical_pending: bool | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


# -- helpers --------------------------------------------------------------------------------


async def display_names(db: AsyncSession, ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await db.execute(select(User.id, User.display_name).where(User.id.in_(wanted)))
    return {row[0]: row[1] for row in rows}


def consult_out(consult: Consult, patient: Patient, names: dict[uuid.UUID, str]) -> ConsultOut:
    return ConsultOut(
        id=consult.id,
        patient=PatientBrief.model_validate(patient),
        centre=consult.centre,
        state=consult.state,
        priority=consult.priority,
        question=consult.question,
        clinical_summary=consult.clinical_summary,
        preferred_video_at=consult.preferred_video_at,
        requester_user_id=consult.requester_user_id,
        requester_name=names.get(consult.requester_user_id, ""),
        requester_institution_id=consult.requester_institution_id,
        assignee_user_id=consult.assignee_user_id,
        assignee_name=names.get(consult.assignee_user_id) if consult.assignee_user_id else None,
        escalated_to_institution_id=consult.escalated_to_institution_id,
        critical_pending=consult.critical_since is not None,
        created_at=consult.created_at,
        submitted_at=consult.submitted_at,
        claimed_at=consult.claimed_at,
        reported_at=consult.reported_at,
        acknowledged_at=consult.acknowledged_at,
        due_at=consult.due_at,
        version=consult.version,
    )


def note_in_timeline(
    session: AsyncSession,
    consult: Consult,
    action: str,
    actor_user_id: uuid.UUID | None,
    *,
    at: dt.datetime | None = None,
    note: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """A timeline entry that leaves the consult's state as it is (a call, a lab result, an
    overdue flag...); state changes go through :func:`transition`."""
    session.add(
        ConsultTransition(
            consult_id=consult.id,
            action=action,
            from_state=consult.state.value,
            to_state=consult.state.value,
            actor_user_id=actor_user_id,
            at=at or utcnow(),
            note=note,
            detail=detail or {},
        )
    )


def requester_streams(consult: Consult) -> tuple[str, ...]:
    return (
        user_stream(consult.requester_user_id),
        institution_stream(consult.requester_institution_id),
    )


def may_contribute(principal: Principal, consult: Consult) -> bool:
    """The requesting station and the centre (or the partner it was escalated to) add to a
    consult: messages, files, images."""
    return (
        requester_side(principal, consult.requester_institution_id)
        or centre_side(principal, consult.centre)
        or can_work_on(principal, consult)
    )


def other_side_streams(principal: Principal, consult: Consult) -> list[str]:
    """Who hears of what ``principal`` added: the centre side when the station wrote, else the
    station."""
    if not requester_side(principal, consult.requester_institution_id):
        return list(requester_streams(consult))
    streams = [centre_stream(consult.centre)]
    if consult.assignee_user_id is not None:
        streams.append(user_stream(consult.assignee_user_id))
    if consult.escalated_to_institution_id is not None:
        streams.append(institution_stream(consult.escalated_to_institution_id))
    return streams


async def target_minutes(db: AsyncSession, centre: Centre, priority: Priority) -> int:
    minutes = await db.scalar(
        select(TurnaroundTarget.minutes).where(
            TurnaroundTarget.centre == centre, TurnaroundTarget.priority == priority
        )
    )
    return int(minutes) if minutes is not None else 24 * 60


async def load_consult(call: Call[Any, Any], consult_id: uuid.UUID) -> tuple[Consult, Patient]:
    """The consult and its patient if the caller may see it, else 404 (audited as denied)."""
    row = (
        await call.session.execute(
            select(Consult, Patient)
            .join(Patient, Patient.id == Consult.patient_id)
            .where(Consult.id == consult_id)
        )
    ).first()
    if row is None or not consult_visible(call.principal, row[0]):
        await call.audit(
            Entry(
                action="consult.read",
                object_type="consult",
                object_id=str(consult_id),
                patient_id=row[1].id if row else None,
                outcome=Outcome.DENIED,
            )
        )
        call.commit_on_error = True
        raise NotFound("no such consult")
    return row[0], row[1]


async def transition(
    call: Call[Any, Any],
    consult: Consult,
    action: ConsultAction,
    *,
    note: str = "",
    detail: dict[str, Any] | None = None,
    **changes: Any,
) -> ConsultState:
    """Apply ``action`` atomically: only if the consult is still in the state we read."""
    old = consult.state
    new = advance(old, action)
    now = utcnow()
    await guarded_update(
        call.session, consult, "consult", Consult.state == old, state=new, **changes
    )
    call.session.add(
        ConsultTransition(
            consult_id=consult.id,
            action=action.value,
            from_state=old.value,
            to_state=new.value,
            actor_user_id=call.principal.user_id,
            at=now,
            note=note,
            detail=detail or {},
        )
    )
    await call.audit(
        Entry(
            action=f"consult.{action.value}",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
        )
    )
    return new


async def submit_fields(db: AsyncSession, consult: Consult) -> dict[str, Any]:
    now = utcnow()
    minutes = await target_minutes(db, consult.centre, consult.priority)
    return {
        "submitted_at": now,
        "due_at": now + dt.timedelta(minutes=minutes),
        "overdue_notified_at": None,
        "assignee_user_id": None,
        "claimed_at": None,
    }


# -- routes ---------------------------------------------------------------------------------


@router.route(
    "POST",
    "/api/v1/consults",
    action=Action.CONSULT_REQUEST,
    summary="Open a consult request to one of the five centres",
    tags=["consults"],
    body=ConsultCreate,
    response=ConsultDetail,
    status=201,
)
async def create_consult(call: Call[ConsultCreate, None]) -> ConsultDetail:
    """The patient must be visible to the caller. With ``submit`` (the default) the request
    enters the centre's worklist at once, with its turnaround target."""
    body = call.body
    p = call.principal
    patient = await call.session.scalar(
        select(Patient).where(Patient.id == body.patient_id, patient_visible_clause(p, Patient.id))
    )
    if patient is None:
        raise ValidationFailed("unknown patient", field="patient_id")
    now = utcnow()
    consult = Consult(
        id=uuid.uuid4(),
        patient_id=patient.id,
        centre=body.centre,
        state=ConsultState.DRAFT,
        priority=body.priority,
        priority_rank=body.priority.rank,
        question=body.question,
        clinical_summary=body.clinical_summary,
        preferred_video_at=body.preferred_video_at,
        requester_user_id=p.user_id,
        requester_institution_id=p.institution_id,
        created_at=now,
    )
    call.session.add(consult)
    call.session.add(
        ConsultTransition(
            consult_id=consult.id,
            action="create",
            from_state=None,
            to_state=ConsultState.DRAFT.value,
            actor_user_id=p.user_id,
            at=now,
        )
    )
    await call.session.flush()
    await call.audit(
        Entry(
            action="consult.create",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=patient.id,
        )
    )
    if body.submit:
        await submit(call, consult)
    return await consult_detail(call, consult, patient)


async def submit(call: Call[Any, Any], consult: Consult) -> None:
    fields = await submit_fields(call.session, consult)
    await transition(call, consult, ConsultAction.SUBMIT, **fields)
    call.publish(
        [centre_stream(consult.centre)],
        "consult.submitted",
        consult_id=consult.id,
        payload=event_payload(
            consult, due_at=consult.due_at.isoformat() if consult.due_at else None
        ),
    )


async def consult_detail(call: Call[Any, Any], consult: Consult, patient: Patient) -> ConsultDetail:
    timeline = list(
        await call.session.scalars(
            select(ConsultTransition)
            .where(ConsultTransition.consult_id == consult.id)
            .order_by(ConsultTransition.id)
        )
    )
    report_stmt = select(Report).where(Report.consult_id == consult.id)
    if not can_work_on(call.principal, consult):
        report_stmt = report_stmt.where(Report.state == ReportState.SIGNED)
    reports = await call.session.scalars(report_stmt.order_by(Report.version))
    names = await display_names(
        call.session,
        [consult.requester_user_id, consult.assignee_user_id, *(t.actor_user_id for t in timeline)],
    )
    steps = []
    for t in timeline:
        step = TransitionOut.model_validate(t)
        step.actor_name = names.get(t.actor_user_id) if t.actor_user_id else None
        steps.append(step)
    live_call = await call.session.scalar(
        select(VideoCall.id).where(
            VideoCall.consult_id == consult.id, VideoCall.state.in_(LIVE_CALL_STATES)
        )
    )
    return ConsultDetail(
        **consult_out(consult, patient, names).model_dump(),
        timeline=steps,
        reports=[ReportBrief.model_validate(r) for r in reports],
        live_call_id=live_call,
    )


@router.route(
    "GET",
    "/api/v1/consults",
    action=Action.CONSULT_READ,
    summary="Consults visible to the caller, newest first",
    tags=["consults"],
    query=ConsultQuery,
    response=ConsultList,
)
async def list_consults(call: Call[None, ConsultQuery]) -> ConsultList:
    q = call.query
    stmt = (
        select(Consult, Patient)
        .join(Patient, Patient.id == Consult.patient_id)
        .where(consult_visible_clause(call.principal))
    )
    if q.state is not None:
        stmt = stmt.where(Consult.state == q.state)
    if q.centre is not None:
        stmt = stmt.where(Consult.centre == q.centre)
    if q.patient_id is not None:
        stmt = stmt.where(Consult.patient_id == q.patient_id)
    if q.critical_pending is not None:
        pending = Consult.critical_since.is_not(None)
        stmt = stmt.where(pending if q.critical_pending else ~pending)
    total = await call.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = (
        await call.session.execute(
            stmt.order_by(Consult.created_at.desc(), Consult.id).limit(q.limit).offset(q.offset)
        )
    ).all()
    await call.audit_many(
        Entry(
            action="consult.list",
            object_type="consult",
            object_id=str(c.id),
            patient_id=c.patient_id,
        )
        for c, _ in rows
    )
    names = await display_names(
        call.session, [x for c, _ in rows for x in (c.requester_user_id, c.assignee_user_id)]
    )
    return ConsultList(items=[consult_out(c, p, names) for c, p in rows], total=total)


@router.route(
    "GET",
    "/api/v1/consults/{consult_id}",
    action=Action.CONSULT_READ,
    summary="One consult with its timeline and reports",
    tags=["consults"],
    response=ConsultDetail,
)
async def get_consult(call: Call[None, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    await call.audit(
        Entry(
            action="consult.read",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=patient.id,
        )
    )
    return await consult_detail(call, consult, patient)
