"""Durable, ordered, per-recipient event streams (Zulip's event queue, in the database).

A handler *stages* events on its unit of work; the router writes them last, just before commit,
in the same transaction as the change they announce. So an event exists if and only if its change
was committed, and a crash between the two cannot lose one.

Ids must increase in commit order, or a reader that saw id N could later miss a smaller id that
committed after it. On PostgreSQL, writers of events take a transaction-scoped advisory lock
before inserting (held only for the insert and the commit, as events are written last); SQLite has
a single writer already.

Streams are named ``user:<id>``, ``inst:<id>``, ``centre:<code>`` and ``coord:<code>``. A user's
feed is the union of the streams they belong to, one row per logical event (its ``key``) even when
it reached several of their streams; they acknowledge it up to an id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from server.models import Centre, Consult, Event, Role, utcnow
from server.policy import Principal

_EVENTS_LOCK_KEY = 0x48555A45


def user_stream(user_id: uuid.UUID) -> str:
    return f"user:{user_id.hex}"


def institution_stream(institution_id: uuid.UUID) -> str:
    return f"inst:{institution_id.hex}"


def centre_stream(centre: Centre) -> str:
    return f"centre:{centre.value}"


def coordinator_stream(centre: Centre) -> str:
    return f"coord:{centre.value}"


def streams_of(principal: Principal) -> list[str]:
    """Every stream whose events this user receives."""
    streams = [user_stream(principal.user_id), institution_stream(principal.institution_id)]
    if Role.GRASSROOTS_DOCTOR in principal.roles:
        # A township health centre oversees its village clinics' consults, and hears of them.
        streams += [
            institution_stream(i)
            for i in sorted(principal.care_institutions - {principal.institution_id})
        ]
    if principal.roles & {Role.SPECIALIST, Role.CENTRE_COORDINATOR}:
        streams += [centre_stream(c) for c in sorted(principal.centres)]
    if Role.CENTRE_COORDINATOR in principal.roles:
        streams += [coordinator_stream(c) for c in sorted(principal.centres)]
    return streams


#: Every event type there is; docs/events.md describes each (a test checks).
EVENT_TYPES = frozenset(
    {
        "consult.submitted",
        "consult.cancelled",
        "consult.claimed",
        "consult.released",
        "consult.returned",
        "consult.assigned",
        "consult.escalated",
        "consult.acknowledged",
        "consult.overdue",
        "consult.message",
        "consult.attachment",
        "consult.images",
        "report.signed",
        "report.critical",
        "critical.unacknowledged",
        "critical.acknowledged",
        "lab.results",
        "referral.requested",
        "referral.accepted",
        "referral.declined",
        "referral.cancelled",
        "referral.completed",
        "call.ringing",
        "call.accepted",
        "call.declined",
        "call.connected",
        "call.ended",
        "call.timed_out",
        "call.recording_requested",
        "call.recording_refused",
        "call.recording_consented",
        "call.recording_started",
        "call.recording_stopped",
        "call.recording_saved",
        "call.recording_failed",
    }
)


def event_payload(consult: Consult, **extra: Any) -> dict[str, Any]:
    """What an event says of a consult: ids and states, never patient data."""
    return {
        "consult_id": str(consult.id),
        "centre": consult.centre.value,
        "state": consult.state.value,
        "priority": consult.priority.value,
        **extra,
    }


@dataclass(frozen=True, slots=True)
class PendingEvent:
    streams: tuple[str, ...]
    type: str
    consult_id: uuid.UUID | None
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}: add it to EVENT_TYPES and docs")
        if not self.streams:
            raise ValueError("an event needs at least one stream")


def feed_clause(streams: list[str]) -> ColumnElement[bool]:
    """Rows of these streams, one per logical event: the first row of each key among them."""
    other = aliased(Event)
    first = (
        select(func.min(other.id))
        .where(other.key == Event.key, other.stream.in_(streams))
        .scalar_subquery()
    )
    return and_(Event.stream.in_(streams), Event.id == first)


async def write(session: AsyncSession, pending: list[PendingEvent]) -> list[int]:
    """Insert staged events, last thing in the transaction. Returns the new ids."""
    if not pending:
        return []
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENTS_LOCK_KEY})
    now = utcnow()
    keys = [uuid.uuid4() for _ in pending]
    rows = [
        {
            "key": key,
            "stream": stream,
            "type": ev.type,
            "consult_id": ev.consult_id,
            "payload": ev.payload,
            "created_at": now,
        }
        for ev, key in zip(pending, keys, strict=True)
        for stream in dict.fromkeys(ev.streams)
    ]
    result = await session.execute(insert(Event).returning(Event.id), rows)
    return [int(i) for i in result.scalars()]
