"""Each user's feed: the events of their streams after an id, in order; acknowledged up to an id.

A station that was offline for a day asks ``GET /api/v1/events`` (after its cursor) and gets
everything it missed, once, in order; it then acknowledges up to the last id it processed. The
realtime channel pushes from the same streams.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import func, select

from server.events import feed_clause, streams_of
from server.models import Event, EventCursor, utcnow
from server.policy import Action
from server.problems import NotFound
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router

router = Router()


class EventOut(ResponseModel):
    id: int
    stream: str
    type: str
    consult_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: dt.datetime


class EventPage(ResponseModel):
    items: list[EventOut]
    #: The id acknowledged so far.
    acked_id: int
    #: Pass as ``after`` for the next page (the last id here, or ``after`` if none).
    next_after: int
    #: More events wait beyond this page.
    more: bool


class EventQuery(QueryModel):
    #: Return events with a greater id; default: the acknowledged id.
    after: Annotated[int, Field(ge=0, le=2**62)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


class AckBody(RequestModel):
    up_to: Annotated[int, Field(ge=1, le=2**62)]


class AckResult(ResponseModel):
    acked_id: int


async def _cursor(call: Call[Any, Any]) -> EventCursor | None:
    return await call.session.get(EventCursor, call.principal.user_id)


@router.route(
    "GET",
    "/api/v1/events",
    action=Action.SELF,
    summary="The caller's events after an id, oldest first",
    tags=["events"],
    query=EventQuery,
    response=EventPage,
)
async def list_events(call: Call[None, EventQuery]) -> EventPage:
    cursor = await _cursor(call)
    acked = cursor.acked_id if cursor else 0
    after = call.query.after if call.query.after is not None else acked
    rows = list(
        await call.session.scalars(
            select(Event)
            .where(feed_clause(streams_of(call.principal)), Event.id > after)
            .order_by(Event.id)
            .limit(call.query.limit + 1)
        )
    )
    more = len(rows) > call.query.limit
    rows = rows[: call.query.limit]
    return EventPage(
        items=[EventOut.model_validate(r) for r in rows],
        acked_id=acked,
        next_after=rows[-1].id if rows else after,
        more=more,
    )


@router.route(
    "POST",
    "/api/v1/events/ack",
    action=Action.SELF,
    summary="Acknowledge the caller's events up to an id (never moves back)",
    tags=["events"],
    body=AckBody,
    response=AckResult,
    errors=[404],
)
async def ack_events(call: Call[AckBody, None]) -> AckResult:
    """``up_to`` must be the id of an event in the caller's own streams."""
    streams = streams_of(call.principal)
    mine = await call.session.scalar(
        select(func.count()).where(Event.id == call.body.up_to, Event.stream.in_(streams))
    )
    if not mine:
        raise NotFound("no such event in your feed")
    cursor = await _cursor(call)
    if cursor is None:
        cursor = EventCursor(user_id=call.principal.user_id, acked_id=0)
        call.session.add(cursor)
    cursor.acked_id = max(cursor.acked_id, call.body.up_to)
    cursor.updated_at = utcnow()
    await call.session.flush()
    return AckResult(acked_id=cursor.acked_id)
