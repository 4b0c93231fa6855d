"""Casework: the steps a consult takes after it is opened, on both sides.

The requesting station submits, cancels and acknowledges; the centre's specialists claim,
release, return for information, escalate and (through reports) answer; the coordinator
reassigns. Each route checks that the step fits the consult's state (409) before whose it is to
take (403), then applies it with :func:`server.consults.transition`, a guarded update.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

from pydantic import Field
from sqlalchemy import select

from server.audit import Entry
from server.consultflow import (
    ConsultAction,
    advance,
)
from server.consults import (
    ConsultDetail,
    consult_detail,
    load_consult,
    note_in_timeline,
    requester_streams,
    submit,
    transition,
)
from server.db import guarded_update
from server.events import centre_stream, event_payload, institution_stream, user_stream
from server.keys import ARCHIVE
from server.models import (
    Consult,
    ConsultStudy,
    Institution,
    InstitutionKind,
    Role,
    User,
    utcnow,
)
from server.policy import (
    Action,
    Principal,
    can_work_on,
    centre_side,
    requester_side,
)
from server.problems import Conflict, Forbidden, ValidationFailed
from server.routing import Call, Handler, RequestModel, Router
from server.sharing import share_study

router = Router()

Note = Annotated[str, Field(max_length=2000)]


class NoteBody(RequestModel):
    note: Note = ""


class ReturnBody(RequestModel):
    #: What the specialist needs to know: required.
    note: Annotated[str, Field(min_length=1, max_length=2000)]


class ReassignBody(RequestModel):
    assignee_id: uuid.UUID
    note: Note = ""


class EscalateBody(RequestModel):
    institution_id: uuid.UUID
    note: Annotated[str, Field(min_length=1, max_length=2000)]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise Forbidden(message)


def _transition_route(
    action: ConsultAction,
    summary: str,
    needs: Action,
    body: type[RequestModel] = NoteBody,
) -> Callable[[Handler], Handler]:
    return router.route(
        "POST",
        f"/api/v1/consults/{{consult_id}}/{action.value}",
        action=needs,
        summary=summary,
        tags=["consults"],
        body=body,
        response=ConsultDetail,
        errors=[409],
    )


@_transition_route(
    ConsultAction.SUBMIT, "Submit a draft, or resubmit a returned consult", Action.CONSULT_REQUEST
)
async def submit_consult(call: Call[NoteBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(
        requester_side(call.principal, consult.requester_institution_id),
        "only the requesting station submits",
    )
    await submit(call, consult)
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.CANCEL, "Cancel a consult before a specialist claims it", Action.CONSULT_REQUEST
)
async def cancel_consult(call: Call[NoteBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(
        requester_side(call.principal, consult.requester_institution_id),
        "only the requesting station cancels",
    )
    await transition(call, consult, ConsultAction.CANCEL, note=call.body.note)
    call.publish(
        [centre_stream(consult.centre)],
        "consult.cancelled",
        consult_id=consult.id,
        payload=event_payload(consult),
    )
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.CLAIM, "Claim a consult from the centre's worklist (atomic)", Action.CONSULT_WORK
)
async def claim_consult(call: Call[NoteBody, None]) -> ConsultDetail:
    """Of two specialists claiming at once, one wins; the other gets 409."""
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(can_work_on(call.principal, consult), "only a specialist of this centre claims it")
    await transition(
        call,
        consult,
        ConsultAction.CLAIM,
        note=call.body.note,
        assignee_user_id=call.principal.user_id,
        claimed_at=utcnow(),
    )
    call.publish(
        [centre_stream(consult.centre), *requester_streams(consult)],
        "consult.claimed",
        consult_id=consult.id,
        payload=event_payload(consult, assignee_id=str(call.principal.user_id)),
    )
    return await consult_detail(call, consult, patient)


def _require_assignee(principal: Principal, consult: Consult, action: ConsultAction) -> None:
    """The action must fit the state (409) before we ask whose claim it is (403)."""
    advance(consult.state, action)
    if consult.assignee_user_id != principal.user_id:
        raise Forbidden("this consult is claimed by another specialist")


@_transition_route(
    ConsultAction.RELEASE, "Give a claimed consult back to the worklist", Action.CONSULT_WORK
)
async def release_consult(call: Call[NoteBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require_assignee(call.principal, consult, ConsultAction.RELEASE)
    await transition(
        call,
        consult,
        ConsultAction.RELEASE,
        note=call.body.note,
        assignee_user_id=None,
        claimed_at=None,
    )
    call.publish(
        [centre_stream(consult.centre), *requester_streams(consult)],
        "consult.released",
        consult_id=consult.id,
        payload=event_payload(consult),
    )
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.RETURN,
    "Return to the requester for more information",
    Action.CONSULT_WORK,
    ReturnBody,
)
async def return_consult(call: Call[ReturnBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require_assignee(call.principal, consult, ConsultAction.RETURN)
    await transition(
        call,
        consult,
        ConsultAction.RETURN,
        note=call.body.note,
        assignee_user_id=None,
        claimed_at=None,
    )
    call.publish(
        requester_streams(consult),
        "consult.returned",
        consult_id=consult.id,
        payload=event_payload(consult),
    )
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.REASSIGN,
    "Assign a consult to a specialist of its centre (coordinator)",
    Action.CONSULT_COORDINATE,
    ReassignBody,
)
async def reassign_consult(call: Call[ReassignBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(
        centre_side(call.principal, consult.centre), "only this centre's coordinator reassigns"
    )
    assignee = await call.session.get(User, call.body.assignee_id)
    if assignee is None or not assignee.active:
        raise ValidationFailed("unknown specialist", field="assignee_id")
    if Role.SPECIALIST not in assignee.role_set or consult.centre not in assignee.centre_set:
        raise ValidationFailed(
            "the assignee is not a specialist of this centre", field="assignee_id"
        )
    await transition(
        call,
        consult,
        ConsultAction.REASSIGN,
        note=call.body.note,
        detail={"assignee_id": str(assignee.id)},
        assignee_user_id=assignee.id,
        claimed_at=utcnow(),
    )
    call.publish(
        [user_stream(assignee.id), centre_stream(consult.centre)],
        "consult.assigned",
        consult_id=consult.id,
        payload=event_payload(consult, assignee_id=str(assignee.id)),
    )
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.ESCALATE,
    "Escalate to a partner hospital's specialists",
    Action.CONSULT_WORK,
    EscalateBody,
)
async def escalate_consult(call: Call[EscalateBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require_assignee(call.principal, consult, ConsultAction.ESCALATE)
    partner = await call.session.get(Institution, call.body.institution_id)
    if (
        partner is None
        or partner.kind is not InstitutionKind.PARTNER_HOSPITAL
        or not partner.active
    ):
        raise ValidationFailed("escalate to an active partner hospital", field="institution_id")
    await transition(
        call,
        consult,
        ConsultAction.ESCALATE,
        note=call.body.note,
        detail={"institution_id": str(partner.id)},
        escalated_to_institution_id=partner.id,
    )
    # The partner is outside the consortium: it gets pseudonymised copies of the images.
    attached = await call.session.scalars(
        select(ConsultStudy.study_uid).where(ConsultStudy.consult_id == consult.id)
    )
    shared = 0
    for study_uid in list(attached):
        if await share_study(call.session, call.app[ARCHIVE], consult, study_uid) is not None:
            shared += 1
    if shared:
        await call.audit(
            Entry(
                action="imaging.share",
                object_type="consult",
                object_id=str(consult.id),
                patient_id=consult.patient_id,
                detail={"studies": shared, "institution": str(partner.id)},
            )
        )
    call.publish(
        [institution_stream(partner.id), *requester_streams(consult)],
        "consult.escalated",
        consult_id=consult.id,
        payload=event_payload(consult, institution_id=str(partner.id)),
    )
    return await consult_detail(call, consult, patient)


@_transition_route(
    ConsultAction.ACKNOWLEDGE,
    "Acknowledge the signed report at the requesting station",
    Action.CONSULT_REQUEST,
)
async def acknowledge_consult(call: Call[NoteBody, None]) -> ConsultDetail:
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(
        requester_side(call.principal, consult.requester_institution_id),
        "only the requesting station acknowledges",
    )
    await transition(
        call,
        consult,
        ConsultAction.ACKNOWLEDGE,
        note=call.body.note,
        acknowledged_at=utcnow(),
        critical_since=None,  # a critical value stops repeating once acknowledged
    )
    # The centre learns it was received; the station's other doctors clear their inboxes.
    streams = [centre_stream(consult.centre), institution_stream(consult.requester_institution_id)]
    if consult.assignee_user_id is not None:
        streams.append(user_stream(consult.assignee_user_id))
    call.publish(
        streams, "consult.acknowledged", consult_id=consult.id, payload=event_payload(consult)
    )
    return await consult_detail(call, consult, patient)


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/critical/acknowledge",
    action=Action.CONSULT_REQUEST,
    summary="Acknowledge a critical value (危急值) at the requesting station",
    tags=["consults"],
    body=NoteBody,
    response=ConsultDetail,
    errors=[409],
)
async def acknowledge_critical(call: Call[NoteBody, None]) -> ConsultDetail:
    """Stops the reminders and escalation of a critical value, whether it came with a signed
    report or straight from the lab before any report was signed. The report itself is still
    acknowledged on its own when it is signed."""
    consult, patient = await load_consult(call, call.path["consult_id"])
    _require(
        requester_side(call.principal, consult.requester_institution_id),
        "only the requesting station acknowledges",
    )
    if consult.critical_since is None:
        raise Conflict("this consult has no critical value waiting")
    since = consult.critical_since
    await guarded_update(call.session, consult, "consult", critical_since=None)
    note_in_timeline(
        call.session,
        consult,
        "critical.acknowledge",
        call.principal.user_id,
        note=call.body.note,
        detail={"critical_since": since.isoformat()},
    )
    await call.audit(
        Entry(
            action="consult.critical_acknowledge",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
        )
    )
    streams = [centre_stream(consult.centre), institution_stream(consult.requester_institution_id)]
    if consult.assignee_user_id is not None:
        streams.append(user_stream(consult.assignee_user_id))
    call.publish(
        streams, "critical.acknowledged", consult_id=consult.id, payload=event_payload(consult)
    )
    return await consult_detail(call, consult, patient)
