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
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

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


async def read_feed(
    db: AsyncSession, streams: list[str], after: int, limit: int
) -> tuple[list[Event], bool]:
    """A page of a feed after an id; shared by HTTP and the realtime channel."""
    rows = list(
        await db.scalars(
            select(Event)
            .where(feed_clause(streams), Event.id > after)
            .order_by(Event.id)
            .limit(limit + 1)
        )
    )
    return rows[:limit], len(rows) > limit


async def acknowledge(db: AsyncSession, user_id: uuid.UUID, streams: list[str], up_to: int) -> int:
    """Move a user's cursor to ``up_to``, never back; it must be an event of their streams.

    One atomic upsert, so concurrent acknowledgements by the same user (two devices) neither
    collide on the first insert nor move the cursor back."""
    mine = await db.scalar(select(func.count()).where(Event.id == up_to, Event.stream.in_(streams)))
    if not mine:
        raise NotFound("no such event in your feed")
    now = utcnow()
    dialect = db.get_bind().dialect.name
    upsert: Any = pg_insert(EventCursor) if dialect == "postgresql" else sqlite_insert(EventCursor)
    upsert = upsert.values(user_id=user_id, acked_id=up_to, updated_at=now)
    highest = func.greatest if dialect == "postgresql" else func.max
    upsert = upsert.on_conflict_do_update(
        index_elements=[EventCursor.user_id],
        set_={
            "acked_id": highest(EventCursor.acked_id, upsert.excluded.acked_id),
            "updated_at": now,
        },
    ).returning(EventCursor.acked_id)
    return int((await db.execute(upsert)).scalar_one())


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
    cursor = await call.session.get(EventCursor, call.principal.user_id)
    acked = cursor.acked_id if cursor else 0
    after = call.query.after if call.query.after is not None else acked
    rows, more = await read_feed(call.session, streams_of(call.principal), after, call.query.limit)
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
    p = call.principal
    acked = await acknowledge(call.session, p.user_id, streams_of(p), call.body.up_to)
    return AckResult(acked_id=acked)
