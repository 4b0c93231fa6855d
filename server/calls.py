"""Video consultations: a call per consult, up to four participants in a mesh.

ringing → accepted (the first invitee accepts), declined (every invitee declines) or timed out
→ connected (a participant reports media flowing) → ended (fewer than two remain, or the caller
gives up while it rings). Who joined and left when goes into the consult's timeline. The media
never passes through the server: it relays only the signalling (``signalling.realtime``), and
only between members of the call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Entry
from server.consultflow import LIVE_CALL_STATES, CallAction, CallState, advance_call
from server.consults import display_names, load_consult, note_in_timeline
from server.db import guarded_update
from server.events import user_stream
from server.models import (
    CallParticipant,
    CallRecording,
    Centre,
    Consult,
    Institution,
    Role,
    User,
    UserRole,
    VideoCall,
    utcnow,
)
from server.policy import (
    Action,
    Principal,
    call_invitee_clause,
    can_work_on,
    centre_side,
    requester_side,
)
from server.problems import Conflict, Forbidden, NotFound, ValidationFailed
from server.routing import Call, RequestModel, ResponseModel, Router


class CallFull(Conflict):
    code = "call-full"


router = Router()

MAX_PARTICIPANTS = 4


class CallCreate(RequestModel):
    #: Whom to ring: one to three people who may work on this consult.
    invitee_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PARTICIPANTS - 1)]


class InviteBody(RequestModel):
    user_id: uuid.UUID


class ParticipantOut(ResponseModel):
    user_id: uuid.UUID
    display_name: str
    answer: str
    invited_at: dt.datetime
    joined_at: dt.datetime | None
    left_at: dt.datetime | None


class InviteeOut(ResponseModel):
    id: uuid.UUID
    display_name: str
    institution_id: uuid.UUID
    institution_name_zh: str
    institution_name_en: str
    #: Of the partner hospital the consult was escalated to, outside the consortium.
    partner: bool


class Invitees(ResponseModel):
    items: list[InviteeOut]


class CallOut(ResponseModel):
    id: uuid.UUID
    consult_id: uuid.UUID
    state: CallState
    created_by_user_id: uuid.UUID
    created_at: dt.datetime
    accepted_at: dt.datetime | None
    connected_at: dt.datetime | None
    ended_at: dt.datetime | None
    participants: list[ParticipantOut]


def may_take_part(p: Principal, consult: Consult) -> bool:
    return (
        requester_side(p, consult.requester_institution_id)
        or centre_side(p, consult.centre)
        or can_work_on(p, consult)
    )


async def _may_be_invited(db: AsyncSession, user_id: uuid.UUID, consult: Consult) -> bool:
    """As the policy says (:func:`server.policy.call_invitee_clause`): the requesting station's
    doctors, the centre's specialists and coordinators, and the specialists of the partner
    hospital the consult was escalated to."""
    found = await db.scalar(select(User.id).where(User.id == user_id, call_invitee_clause(consult)))
    return found is not None


async def _out(db: AsyncSession, call: VideoCall) -> CallOut:
    people = list(
        await db.scalars(
            select(CallParticipant)
            .where(CallParticipant.call_id == call.id)
            .order_by(CallParticipant.invited_at, CallParticipant.user_id)
        )
    )
    names = await display_names(db, [p.user_id for p in people])
    return CallOut(
        id=call.id,
        consult_id=call.consult_id,
        state=call.state,
        created_by_user_id=call.created_by_user_id,
        created_at=call.created_at,
        accepted_at=call.accepted_at,
        connected_at=call.connected_at,
        ended_at=call.ended_at,
        participants=[
            ParticipantOut(
                user_id=p.user_id,
                display_name=names.get(p.user_id, ""),
                answer=p.answer,
                invited_at=p.invited_at,
                joined_at=p.joined_at,
                left_at=p.left_at,
            )
            for p in people
        ],
    )


def timeline(call: Call[Any, Any], consult: Consult, action: str, **detail: Any) -> None:
    note_in_timeline(
        call.session,
        consult,
        action,
        call.principal.user_id,
        detail={k: str(v) for k, v in detail.items()},
    )


def call_payload(video: VideoCall, centre: Centre, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": str(video.id),
        "consult_id": str(video.consult_id),
        "centre": centre.value,
        "state": video.state.value,
        **extra,
    }


async def participants(db: AsyncSession, call_id: uuid.UUID) -> list[CallParticipant]:
    return list(await db.scalars(select(CallParticipant).where(CallParticipant.call_id == call_id)))


async def load_call(
    call: Call[Any, Any], call_id: uuid.UUID
) -> tuple[VideoCall, Consult, CallParticipant]:
    video = await call.session.get(VideoCall, call_id)
    if video is None:
        raise NotFound("no such call")
    consult, _ = await load_consult(call, video.consult_id)
    me = await call.session.get(CallParticipant, (video.id, call.principal.user_id))
    if me is None:
        raise NotFound("no such call")
    return video, consult, me


async def _move(call: Call[Any, Any], video: VideoCall, action: CallAction, **changes: Any) -> None:
    new = advance_call(video.state, action)
    await guarded_update(call.session, video, "call", state=new, **changes)


def _announce(
    call: Call[Any, Any],
    video: VideoCall,
    consult: Consult,
    people: list[CallParticipant],
    type_: str,
) -> None:
    call.publish(
        [user_stream(p.user_id) for p in people],
        type_,
        consult_id=video.consult_id,
        # `by`: who did it (accepted, declined, hung up...), so a mesh knows whom to connect.
        payload=call_payload(video, consult.centre, by=str(call.principal.user_id)),
    )


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/calls",
    action=Action.CALL,
    summary="Start a video call on a consult: ring the invitees",
    tags=["calls"],
    body=CallCreate,
    response=CallOut,
    status=201,
    errors=[409],
)
async def start_call(call: Call[CallCreate, None]) -> CallOut:
    """One live call per consult. Invitees must be able to take part in the consult."""
    consult, _ = await load_consult(call, call.path["consult_id"])
    p = call.principal
    if not may_take_part(p, consult):
        raise Forbidden("only the requesting station and the centre call on a consult")
    live = await call.session.scalar(
        select(VideoCall.id).where(
            VideoCall.consult_id == consult.id, VideoCall.state.in_(LIVE_CALL_STATES)
        )
    )
    if live is not None:
        raise Conflict("this consult already has a call in progress", call_id=str(live))
    invitees = list(dict.fromkeys(i for i in call.body.invitee_ids if i != p.user_id))
    if not invitees:
        raise ValidationFailed("invite someone other than yourself", field="invitee_ids")
    for invitee in invitees:
        if not await _may_be_invited(call.session, invitee, consult):
            raise ValidationFailed(
                "an invitee cannot take part in this consult", field="invitee_ids"
            )
    now = utcnow()
    video = VideoCall(
        id=uuid.uuid4(),
        consult_id=consult.id,
        state=CallState.RINGING,
        created_by_user_id=p.user_id,
        created_at=now,
    )
    call.session.add(video)
    await call.session.flush()
    people = [
        CallParticipant(
            call_id=video.id, user_id=p.user_id, invited_by_user_id=p.user_id, answer="accepted"
        )
    ] + [
        CallParticipant(call_id=video.id, user_id=i, invited_by_user_id=p.user_id) for i in invitees
    ]
    call.session.add_all(people)
    timeline(call, consult, "call.start", call_id=video.id)
    await call.session.flush()
    await call.audit(
        Entry(
            action="call.start",
            object_type="call",
            object_id=str(video.id),
            patient_id=consult.patient_id,
        )
    )
    call.publish(
        [user_stream(i) for i in invitees],
        "call.ringing",
        consult_id=consult.id,
        payload=call_payload(video, consult.centre, caller_id=str(p.user_id)),
    )
    return await _out(call.session, video)


@router.route(
    "GET",
    "/api/v1/calls/{call_id}",
    action=Action.CALL,
    summary="One call and its participants (participants only)",
    tags=["calls"],
    response=CallOut,
)
async def get_call(call: Call[None, None]) -> CallOut:
    video, _, _ = await load_call(call, call.path["call_id"])
    return await _out(call.session, video)


@router.route(
    "GET",
    "/api/v1/calls/{call_id}/invitees",
    action=Action.CALL,
    summary="The experts who may be invited into this call (participants only)",
    tags=["calls"],
    response=Invitees,
)
async def invitees(call: Call[None, None]) -> Invitees:
    """The specialists the policy lets take part in the consult: the centre's at the lead
    hospital and, once the consult is escalated, the partner hospital's; not those already
    invited (an invitation is made once per call)."""
    video, consult, _ = await load_call(call, call.path["call_id"])
    invited = select(CallParticipant.user_id).where(CallParticipant.call_id == video.id)
    rows = await call.session.execute(
        select(User.id, User.display_name, Institution)
        .join(Institution, Institution.id == User.institution_id)
        .where(
            call_invitee_clause(consult),
            User.roles.any(UserRole.role == Role.SPECIALIST),
            User.id.not_in(invited),
        )
        # The centre's own first, then the partner's.
        .order_by(User.institution_id == consult.escalated_to_institution_id, User.display_name)
    )
    return Invitees(
        items=[
            InviteeOut(
                id=user_id,
                display_name=name,
                institution_id=institution.id,
                institution_name_zh=institution.name_zh,
                institution_name_en=institution.name_en,
                partner=institution.id == consult.escalated_to_institution_id,
            )
            for user_id, name, institution in rows
        ]
    )


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/invite",
    action=Action.CALL,
    summary="Invite another expert into a call (up to four participants)",
    tags=["calls"],
    body=InviteBody,
    response=CallOut,
    errors=[409],
)
async def invite(call: Call[InviteBody, None]) -> CallOut:
    video, consult, _ = await load_call(call, call.path["call_id"])
    if video.state not in LIVE_CALL_STATES:
        raise Conflict(f"a {video.state.value} call takes no one new")
    people = await participants(call.session, video.id)
    if any(p.user_id == call.body.user_id for p in people):
        raise Conflict("already invited")
    if len(people) >= MAX_PARTICIPANTS:
        raise CallFull(f"a call holds at most {MAX_PARTICIPANTS} participants (a mesh)")
    if not await _may_be_invited(call.session, call.body.user_id, consult):
        raise ValidationFailed("this person cannot take part in this consult", field="user_id")
    call.session.add(
        CallParticipant(
            call_id=video.id, user_id=call.body.user_id, invited_by_user_id=call.principal.user_id
        )
    )
    timeline(call, consult, "call.invite", call_id=video.id, user_id=call.body.user_id)
    await call.session.flush()
    call.publish(
        [user_stream(call.body.user_id)],
        "call.ringing",
        consult_id=consult.id,
        payload=call_payload(video, consult.centre, caller_id=str(call.principal.user_id)),
    )
    return await _out(call.session, video)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/accept",
    action=Action.CALL,
    summary="Answer a ringing call",
    tags=["calls"],
    response=CallOut,
    errors=[409],
)
async def accept(call: Call[None, None]) -> CallOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    if me.answer != "invited":
        raise Conflict(f"you have already {me.answer}")
    if video.state is CallState.RINGING:
        await _move(call, video, CallAction.ACCEPT, accepted_at=utcnow())
    elif video.state not in LIVE_CALL_STATES:
        raise Conflict(f"the call is {video.state.value}")
    me.answer = "accepted"
    timeline(call, consult, "call.accept", call_id=video.id)
    await call.session.flush()
    _announce(call, video, consult, await participants(call.session, video.id), "call.accepted")
    return await _out(call.session, video)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/decline",
    action=Action.CALL,
    summary="Decline a ringing call",
    tags=["calls"],
    response=CallOut,
    errors=[409],
)
async def decline(call: Call[None, None]) -> CallOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    if me.answer != "invited":
        raise Conflict(f"you have already {me.answer}")
    me.answer = "declined"
    timeline(call, consult, "call.decline", call_id=video.id)
    await call.session.flush()
    people = await participants(call.session, video.id)
    if video.state is CallState.RINGING and all(
        p.answer == "declined" for p in people if p.user_id != video.created_by_user_id
    ):
        await _move(call, video, CallAction.DECLINE, ended_at=utcnow())
    _announce(call, video, consult, people, "call.declined")
    return await _out(call.session, video)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/connected",
    action=Action.CALL,
    summary="Report that this participant's media is flowing",
    tags=["calls"],
    response=CallOut,
    errors=[409],
)
async def connected(call: Call[None, None]) -> CallOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    if me.answer != "accepted":
        raise Conflict("answer the call first")
    first = video.connected_at is None
    await _move(call, video, CallAction.CONNECT, connected_at=video.connected_at or utcnow())
    if me.joined_at is None or me.left_at is not None:
        me.joined_at, me.left_at = utcnow(), None
        timeline(call, consult, "call.join", call_id=video.id)
    await call.session.flush()
    if first:
        _announce(
            call, video, consult, await participants(call.session, video.id), "call.connected"
        )
    return await _out(call.session, video)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/hangup",
    action=Action.CALL,
    summary="Leave the call; it ends when fewer than two remain",
    tags=["calls"],
    response=CallOut,
    errors=[409],
)
async def hangup(call: Call[None, None]) -> CallOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    if video.state not in LIVE_CALL_STATES:
        raise Conflict(f"the call is {video.state.value}")
    now = utcnow()
    me.left_at = now
    if me.answer == "invited":
        me.answer = "declined"
    timeline(call, consult, "call.leave", call_id=video.id)
    await call.session.flush()
    people = await participants(call.session, video.id)
    # The recording participant keeps no call going on its own.
    recorders = set(
        await call.session.scalars(
            select(CallRecording.recorder_user_id).where(CallRecording.call_id == video.id)
        )
    )
    remaining = [
        p
        for p in people
        if p.answer == "accepted" and p.left_at is None and p.user_id not in recorders
    ]
    ringing = [p for p in people if p.answer == "invited"]
    if len(remaining) + (len(ringing) if video.state is CallState.RINGING else 0) < 2:
        await _move(call, video, CallAction.END, ended_at=now)
        timeline(call, consult, "call.end", call_id=video.id)
        _announce(call, video, consult, people, "call.ended")
    return await _out(call.session, video)


async def is_member(db: AsyncSession, call_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """May this user signal to this call now? (A participant who has not declined or left.)"""
    row = (
        await db.execute(
            select(VideoCall.state, CallParticipant.answer, CallParticipant.left_at)
            .join(CallParticipant, CallParticipant.call_id == VideoCall.id)
            .where(VideoCall.id == call_id, CallParticipant.user_id == user_id)
        )
    ).first()
    if row is None:
        return False
    state, answer, left_at = row[0], row[1], row[2]
    return state in LIVE_CALL_STATES and answer != "declined" and left_at is None
