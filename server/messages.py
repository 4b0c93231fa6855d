"""The message thread of a consult, between the requesting station and the centre.

Anyone who may see the consult may read its thread; the requesting side and the centre side
(its specialists and coordinators, or the partner hospital it was escalated to) may write.
A new message is announced to the other side in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field
from sqlalchemy import select, update

from server.audit import Entry
from server.consults import load_consult, may_contribute, other_side_streams
from server.events import event_payload
from server.models import Attachment, ConsultMessage, User
from server.policy import Action
from server.problems import Forbidden, ValidationFailed
from server.routing import Call, RequestModel, ResponseModel, Router

router = Router()


class MessageBody(RequestModel):
    body: Annotated[str, Field(min_length=1, max_length=4000)]
    #: Files already uploaded to this consult by the author, to show with the message.
    attachment_ids: Annotated[list[uuid.UUID], Field(max_length=10)] = []


class MessageOut(ResponseModel):
    id: uuid.UUID
    consult_id: uuid.UUID
    author_user_id: uuid.UUID
    author_name: str
    body: str
    created_at: dt.datetime
    attachment_ids: list[uuid.UUID] = []


class MessageList(ResponseModel):
    items: list[MessageOut]


@router.route(
    "GET",
    "/api/v1/consults/{consult_id}/messages",
    action=Action.CONSULT_READ,
    summary="The consult's message thread, oldest first",
    tags=["consults"],
    response=MessageList,
)
async def list_messages(call: Call[None, None]) -> MessageList:
    consult, _ = await load_consult(call, call.path["consult_id"])
    rows = (
        await call.session.execute(
            select(ConsultMessage, User.display_name)
            .join(User, User.id == ConsultMessage.author_user_id)
            .where(ConsultMessage.consult_id == consult.id)
            .order_by(ConsultMessage.created_at, ConsultMessage.id)
        )
    ).all()
    files: dict[uuid.UUID, list[uuid.UUID]] = {}
    for aid, mid in await call.session.execute(
        select(Attachment.id, Attachment.message_id).where(
            Attachment.consult_id == consult.id, Attachment.message_id.is_not(None)
        )
    ):
        if mid is not None:
            files.setdefault(mid, []).append(aid)
    await call.audit(
        Entry(
            action="consult.messages",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
        )
    )
    return MessageList(
        items=[
            MessageOut(
                id=m.id,
                consult_id=m.consult_id,
                author_user_id=m.author_user_id,
                author_name=name,
                body=m.body,
                created_at=m.created_at,
                attachment_ids=files.get(m.id, []),
            )
            for m, name in rows
        ]
    )


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/messages",
    action=Action.CONSULT_READ,
    summary="Write to the consult's thread; the other side is notified",
    tags=["consults"],
    body=MessageBody,
    response=MessageOut,
    status=201,
)
async def post_message(call: Call[MessageBody, None]) -> MessageOut:
    consult, _ = await load_consult(call, call.path["consult_id"])
    p = call.principal
    if not may_contribute(p, consult):
        raise Forbidden("only the requesting station and the centre write in this thread")
    message = ConsultMessage(
        id=uuid.uuid4(), consult_id=consult.id, author_user_id=p.user_id, body=call.body.body
    )
    call.session.add(message)
    await call.session.flush()
    wanted = set(call.body.attachment_ids)
    if wanted:
        result = await call.session.execute(
            update(Attachment)
            .where(
                Attachment.id.in_(wanted),
                Attachment.consult_id == consult.id,
                Attachment.uploaded_by_user_id == p.user_id,
                Attachment.message_id.is_(None),
            )
            .values(message_id=message.id)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != len(wanted):  # type: ignore[attr-defined]
            raise ValidationFailed(
                "attach only your own files of this consult, each to one message",
                field="attachment_ids",
            )
    await call.audit(
        Entry(
            action="consult.message",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
        )
    )
    call.publish(
        other_side_streams(p, consult),
        "consult.message",
        consult_id=consult.id,
        payload=event_payload(consult, message_id=str(message.id)),
    )
    return MessageOut(
        id=message.id,
        consult_id=consult.id,
        author_user_id=p.user_id,
        author_name=p.display_name,
        body=message.body,
        created_at=message.created_at,
        attachment_ids=sorted(wanted),
    )
