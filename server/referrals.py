"""Two-way referral (双向转诊), opened from a signed report's referral advice.

*Up* (上转): the requesting station sends the patient to a higher tier — the lead hospital, a
partner hospital, or (from a village clinic) its township health centre. *Down* (下转): the centre
sends a recovering patient back to the station that asked, or to its township.

The receiving institution accepts or declines; an accepted referral is completed when the patient
arrives. Who receives: at the lead hospital, its centre coordinators (the admissions desk of the
remote centres); at a partner hospital, its specialists; at a township or village, its doctors
(a township also for its village clinics). Accepting a referral to a grassroots institution makes
the patient known there. Every step is in the referral's timeline and on the durable streams.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, false, or_, select

from server.audit import Entry
from server.consultflow import ReferralAction, ReferralState, advance_referral
from server.consults import PatientBrief, display_names, load_consult
from server.db import guarded_update
from server.events import institution_stream, user_stream
from server.models import (
    Institution,
    InstitutionKind,
    Patient,
    PatientLink,
    Referral,
    ReferralTransition,
    Report,
    ReportState,
    Role,
    utcnow,
)
from server.policy import Action, Principal, centre_side, requester_side
from server.problems import Conflict, Forbidden, NotFound, ValidationFailed
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router

router = Router()

_GRASSROOTS = frozenset({InstitutionKind.TOWNSHIP_CENTRE, InstitutionKind.VILLAGE_CLINIC})
_HOSPITALS = frozenset({InstitutionKind.LEAD_HOSPITAL, InstitutionKind.PARTNER_HOSPITAL})


class ReferralCreate(RequestModel):
    direction: Literal["up", "down"]
    to_institution_id: uuid.UUID
    reason: Annotated[str, Field(min_length=1, max_length=4000)]
    green_channel: bool = False


class ReferralNote(RequestModel):
    note: Annotated[str, Field(max_length=2000)] = ""


class ReferralStep(ResponseModel):
    action: str
    from_state: str | None
    to_state: str
    actor_user_id: uuid.UUID
    actor_name: str = ""
    at: dt.datetime
    note: str


class ReferralOut(ResponseModel):
    id: uuid.UUID
    consult_id: uuid.UUID
    patient_id: uuid.UUID
    #: Who is coming: the receiving institution needs it to prepare, before it sees the consult.
    patient: PatientBrief
    direction: str
    green_channel: bool
    from_institution_id: uuid.UUID
    to_institution_id: uuid.UUID
    state: ReferralState
    reason: str
    created_by_user_id: uuid.UUID
    created_by_name: str
    created_at: dt.datetime
    version: int


class ReferralDetail(ReferralOut):
    timeline: list[ReferralStep]


class ReferralList(ResponseModel):
    items: list[ReferralOut]


class ReferralQuery(QueryModel):
    box: Literal["incoming", "outgoing"] | None = None
    state: ReferralState | None = None


# -- who is who -----------------------------------------------------------------------------


def _sending(principal: Principal) -> frozenset[uuid.UUID]:
    """Institutions on whose behalf this user refers patients."""
    if Role.GRASSROOTS_DOCTOR in principal.roles:
        return principal.care_institutions
    if principal.institution_kind in _HOSPITALS and principal.roles & {
        Role.SPECIALIST,
        Role.CENTRE_COORDINATOR,
    }:
        return frozenset({principal.institution_id})
    return frozenset()


def _receiving(principal: Principal) -> frozenset[uuid.UUID]:
    """Institutions on whose behalf this user answers referrals."""
    if Role.GRASSROOTS_DOCTOR in principal.roles:
        return principal.care_institutions
    kind = principal.institution_kind
    if kind is InstitutionKind.LEAD_HOSPITAL and Role.CENTRE_COORDINATOR in principal.roles:
        return frozenset({principal.institution_id})
    if kind is InstitutionKind.PARTNER_HOSPITAL and Role.SPECIALIST in principal.roles:
        return frozenset({principal.institution_id})
    return frozenset()


def _receiver(principal: Principal, referral: Referral) -> bool:
    return referral.to_institution_id in _receiving(principal)


def _sender(principal: Principal, referral: Referral) -> bool:
    return referral.from_institution_id in _sending(principal)


def _visible_clause(principal: Principal) -> ColumnElement[bool]:
    sending, receiving = _sending(principal), _receiving(principal)
    clauses = []
    if sending:
        clauses.append(Referral.from_institution_id.in_(sending))
    if receiving:
        clauses.append(Referral.to_institution_id.in_(receiving))
    return or_(*clauses) if clauses else false()


# -- helpers --------------------------------------------------------------------------------


async def _outs(call: Call[Any, Any], referrals: list[Referral]) -> list[ReferralOut]:
    patients = {
        p.id: p
        for p in await call.session.scalars(
            select(Patient).where(Patient.id.in_({r.patient_id for r in referrals}))
        )
    }
    names = await display_names(call.session, [r.created_by_user_id for r in referrals])
    return [
        ReferralOut.model_validate(
            {
                **{c: getattr(r, c) for c in _COLUMNS},
                "patient": PatientBrief.model_validate(patients[r.patient_id]),
                "created_by_name": names.get(r.created_by_user_id, ""),
            }
        )
        for r in referrals
    ]


_COLUMNS = (
    "id",
    "consult_id",
    "patient_id",
    "direction",
    "green_channel",
    "from_institution_id",
    "to_institution_id",
    "state",
    "reason",
    "created_by_user_id",
    "created_at",
    "version",
)


async def _detail(call: Call[Any, Any], referral: Referral) -> ReferralDetail:
    steps = list(
        await call.session.scalars(
            select(ReferralTransition)
            .where(ReferralTransition.referral_id == referral.id)
            .order_by(ReferralTransition.id)
        )
    )
    names = await display_names(call.session, [s.actor_user_id for s in steps])
    timeline = []
    for step in steps:
        out = ReferralStep.model_validate(step)
        out.actor_name = names.get(step.actor_user_id, "")
        timeline.append(out)
    (head,) = await _outs(call, [referral])
    return ReferralDetail(**head.model_dump(), timeline=timeline)


async def _load(call: Call[Any, Any], referral_id: uuid.UUID) -> Referral:
    referral = await call.session.get(Referral, referral_id)
    p = call.principal
    if referral is None or not (_sender(p, referral) or _receiver(p, referral)):
        raise NotFound("no such referral")
    return referral


def _payload(referral: Referral) -> dict[str, Any]:
    return {
        "referral_id": str(referral.id),
        "consult_id": str(referral.consult_id),
        "direction": referral.direction,
        "green_channel": referral.green_channel,
        "state": referral.state.value,
    }


async def _check_target(
    call: Call[Any, Any], direction: str, origin: Institution, target: Institution | None
) -> Institution:
    if target is None or not target.active:
        raise ValidationFailed("unknown institution", field="to_institution_id")
    if direction == "up":
        upward = target.kind in _HOSPITALS or (
            origin.kind is InstitutionKind.VILLAGE_CLINIC and target.id == origin.parent_id
        )
        if not upward:
            raise ValidationFailed(
                "an upward referral goes to a hospital, or from a village clinic to its township",
                field="to_institution_id",
            )
    elif target.kind not in _GRASSROOTS:
        raise ValidationFailed(
            "a downward referral goes to a township health centre or village clinic",
            field="to_institution_id",
        )
    return target


# -- routes ---------------------------------------------------------------------------------


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/referrals",
    action=Action.REFERRAL,
    summary="Open a referral, up or down, as the signed report advises",
    tags=["referrals"],
    body=ReferralCreate,
    response=ReferralDetail,
    status=201,
    errors=[409],
)
async def open_referral(call: Call[ReferralCreate, None]) -> ReferralDetail:
    """Up: by the requesting station. Down: by the centre, to the station that asked or to its
    township. The consult's latest signed report must advise this direction."""
    consult, patient = await load_consult(call, call.path["consult_id"])
    body = call.body
    p = call.principal
    report = await call.session.scalar(
        select(Report)
        .where(Report.consult_id == consult.id, Report.state == ReportState.SIGNED)
        .order_by(Report.version.desc())
        .limit(1)
    )
    advice = (report.content.get("referral") or {}).get("direction") if report else None
    if advice != body.direction:
        raise Conflict(f"the signed report does not advise a referral {body.direction}")
    if body.direction == "up":
        if not requester_side(p, consult.requester_institution_id):
            raise Forbidden("the requesting station refers a patient up")
        origin = await call.session.get(Institution, consult.requester_institution_id)
    else:
        if not centre_side(p, consult.centre):
            raise Forbidden("the centre refers a patient down")
        origin = await call.session.get(Institution, p.institution_id)
    assert origin is not None
    target = await _check_target(
        call, body.direction, origin, await call.session.get(Institution, body.to_institution_id)
    )
    active = await call.session.scalar(
        select(Referral.id).where(
            Referral.consult_id == consult.id,
            Referral.direction == body.direction,
            Referral.state.in_([ReferralState.REQUESTED, ReferralState.ACCEPTED]),
        )
    )
    if active is not None:
        raise Conflict(
            f"this consult already has an open referral {body.direction}", referral_id=str(active)
        )
    referral = Referral(
        id=uuid.uuid4(),
        consult_id=consult.id,
        patient_id=patient.id,
        direction=body.direction,
        green_channel=body.green_channel,
        from_institution_id=origin.id,
        to_institution_id=target.id,
        state=ReferralState.REQUESTED,
        reason=body.reason,
        created_by_user_id=p.user_id,
    )
    call.session.add(referral)
    call.session.add(
        ReferralTransition(
            referral_id=referral.id,
            action="open",
            from_state=None,
            to_state=ReferralState.REQUESTED.value,
            actor_user_id=p.user_id,
            at=utcnow(),
            note=body.reason,
        )
    )
    await call.session.flush()
    await call.audit(
        Entry(
            action="referral.open",
            object_type="referral",
            object_id=str(referral.id),
            patient_id=patient.id,
        )
    )
    call.publish(
        [institution_stream(target.id)],
        "referral.requested",
        consult_id=consult.id,
        payload=_payload(referral),
    )
    return await _detail(call, referral)


@router.route(
    "GET",
    "/api/v1/referrals",
    action=Action.REFERRAL,
    summary="Referrals sent or received by the caller's institution",
    tags=["referrals"],
    query=ReferralQuery,
    response=ReferralList,
)
async def list_referrals(call: Call[None, ReferralQuery]) -> ReferralList:
    p = call.principal
    stmt = select(Referral).where(_visible_clause(p))
    if call.query.box == "incoming":
        stmt = stmt.where(Referral.to_institution_id.in_(_receiving(p)))
    elif call.query.box == "outgoing":
        stmt = stmt.where(Referral.from_institution_id.in_(_sending(p)))
    if call.query.state is not None:
        stmt = stmt.where(Referral.state == call.query.state)
    rows = list(await call.session.scalars(stmt.order_by(Referral.created_at.desc()).limit(200)))
    await call.audit_many(
        Entry(
            action="referral.list",
            object_type="referral",
            object_id=str(r.id),
            patient_id=r.patient_id,
        )
        for r in rows
    )
    return ReferralList(items=await _outs(call, rows))


@router.route(
    "GET",
    "/api/v1/referrals/{referral_id}",
    action=Action.REFERRAL,
    summary="One referral with its timeline",
    tags=["referrals"],
    response=ReferralDetail,
)
async def get_referral(call: Call[None, None]) -> ReferralDetail:
    referral = await _load(call, call.path["referral_id"])
    await call.audit(
        Entry(
            action="referral.read",
            object_type="referral",
            object_id=str(referral.id),
            patient_id=referral.patient_id,
        )
    )
    return await _detail(call, referral)


async def _step(call: Call[ReferralNote, None], action: ReferralAction) -> ReferralDetail:
    referral = await _load(call, call.path["referral_id"])
    p = call.principal
    new = advance_referral(referral.state, action)
    if action is ReferralAction.CANCEL:
        if not _sender(p, referral):
            raise Forbidden("the sending institution cancels a referral")
    elif not _receiver(p, referral):
        raise Forbidden("the receiving institution answers a referral")
    old = referral.state
    await guarded_update(call.session, referral, "referral", Referral.state == old, state=new)
    call.session.add(
        ReferralTransition(
            referral_id=referral.id,
            action=action.value,
            from_state=old.value,
            to_state=new.value,
            actor_user_id=p.user_id,
            at=utcnow(),
            note=call.body.note,
        )
    )
    if action is ReferralAction.ACCEPT:
        target = await call.session.get(Institution, referral.to_institution_id)
        linked = await call.session.get(
            PatientLink, (referral.patient_id, referral.to_institution_id)
        )
        if target is not None and target.kind in _GRASSROOTS and linked is None:
            call.session.add(
                PatientLink(
                    patient_id=referral.patient_id, institution_id=referral.to_institution_id
                )
            )
    await call.session.flush()
    await call.audit(
        Entry(
            action=f"referral.{action.value}",
            object_type="referral",
            object_id=str(referral.id),
            patient_id=referral.patient_id,
        )
    )
    if action is ReferralAction.CANCEL:
        streams = [institution_stream(referral.to_institution_id)]
    else:
        streams = [
            user_stream(referral.created_by_user_id),
            institution_stream(referral.from_institution_id),
        ]
    call.publish(
        streams, f"referral.{new.value}", consult_id=referral.consult_id, payload=_payload(referral)
    )
    return await _detail(call, referral)


def _step_route(action: ReferralAction, summary: str) -> Any:
    async def handler(call: Call[ReferralNote, None]) -> ReferralDetail:
        return await _step(call, action)

    handler.__name__ = f"{action.value}_referral"
    return router.route(
        "POST",
        f"/api/v1/referrals/{{referral_id}}/{action.value}",
        action=Action.REFERRAL,
        summary=summary,
        tags=["referrals"],
        body=ReferralNote,
        response=ReferralDetail,
        errors=[409],
    )(handler)


_step_route(ReferralAction.ACCEPT, "Accept a referral (receiving institution)")
_step_route(ReferralAction.DECLINE, "Decline a referral (receiving institution)")
_step_route(ReferralAction.CANCEL, "Cancel a referral (sending institution)")
_step_route(ReferralAction.COMPLETE, "Record the patient's arrival (receiving institution)")
