"""The watchdog: cases past their turnaround target, and critical values nobody acknowledged.

Every ``HUIZHEN_WATCH_INTERVAL_SECONDS`` one sweep, in one transaction:

* a submitted, claimed or escalated consult past its ``due_at`` is flagged overdue once: a
  timeline entry, and an event to the centre's coordinators (and to its assignee);
* a video call still ringing after ``HUIZHEN_RING_SECONDS`` times out;
* a signed critical value (危急值) that the requesting station has not acknowledged within
  ``HUIZHEN_CRITICAL_ACK_SECONDS`` is announced again to the station, and escalated to the centre's
  coordinators and, for a village clinic, to the township health centre that supervises it; it
  repeats every such interval until a doctor there acknowledges.

Several nodes may sweep at once: each flag is a guarded update, so one node wins each notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import events
from server.consultflow import (
    OPEN_STATES,
    CallAction,
    CallState,
    ConsultState,
    advance_call,
)
from server.consults import note_in_timeline
from server.db import unit_of_work
from server.events import PendingEvent
from server.keys import ANNOUNCE, SESSIONS, SETTINGS
from server.models import (
    CallParticipant,
    Consult,
    Institution,
    InstitutionKind,
    VideoCall,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sweep:
    overdue: int
    critical_reminders: int
    event_ids: tuple[int, ...] = ()
    calls_timed_out: int = 0


async def sweep(
    factory: async_sessionmaker[AsyncSession],
    *,
    critical_ack_seconds: int,
    ring_seconds: int = 60,
    now: dt.datetime | None = None,
) -> Sweep:
    now = now or utcnow()
    async with unit_of_work(factory) as db:
        pending: list[PendingEvent] = []
        overdue = await _overdue(db, now, pending)
        reminders = await _critical(db, now, dt.timedelta(seconds=critical_ack_seconds), pending)
        unanswered = await _unanswered_calls(db, now - dt.timedelta(seconds=ring_seconds), pending)
        ids = await events.write(db, pending)
    if overdue or reminders or unanswered:
        log.info(
            "watchdog: %d overdue, %d critical-value reminders, %d calls unanswered",
            overdue,
            reminders,
            unanswered,
        )
    return Sweep(overdue, reminders, tuple(ids), unanswered)


async def _unanswered_calls(
    db: AsyncSession, rang_before: dt.datetime, pending: list[PendingEvent]
) -> int:
    """Calls still ringing after ``HUIZHEN_RING_SECONDS`` time out (once, whichever node)."""
    stale = list(
        await db.scalars(
            select(VideoCall).where(
                VideoCall.state == CallState.RINGING, VideoCall.created_at < rang_before
            )
        )
    )
    done = 0
    for video in stale:
        new = advance_call(video.state, CallAction.TIME_OUT)
        result = await db.execute(
            update(VideoCall)
            .where(VideoCall.id == video.id, VideoCall.version == video.version)
            .values(state=new, version=video.version + 1, ended_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        done += 1
        consult = await db.get(Consult, video.consult_id)
        if consult is not None:
            note_in_timeline(db, consult, "call.timeout", None, detail={"call_id": str(video.id)})
        people = await db.scalars(
            select(CallParticipant.user_id).where(CallParticipant.call_id == video.id)
        )
        pending.append(
            PendingEvent(
                tuple(events.user_stream(u) for u in people),
                "call.timed_out",
                video.consult_id,
                {
                    "call_id": str(video.id),
                    "consult_id": str(video.consult_id),
                    "centre": consult.centre.value if consult else None,
                    "state": new.value,
                },
            )
        )
    return done


async def _overdue(db: AsyncSession, now: dt.datetime, pending: list[PendingEvent]) -> int:
    late = list(
        await db.scalars(
            select(Consult).where(
                Consult.state.in_(OPEN_STATES),
                Consult.due_at < now,
                Consult.overdue_notified_at.is_(None),
            )
        )
    )
    flagged = 0
    for consult in late:
        result = await db.execute(
            update(Consult)
            .where(Consult.id == consult.id, Consult.overdue_notified_at.is_(None))
            .values(overdue_notified_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another node flagged it
        flagged += 1
        note_in_timeline(
            db,
            consult,
            "overdue",
            None,
            at=now,
            detail={"due_at": consult.due_at.isoformat() if consult.due_at else None},
        )
        streams = [events.coordinator_stream(consult.centre), events.centre_stream(consult.centre)]
        if consult.assignee_user_id is not None:
            streams.append(events.user_stream(consult.assignee_user_id))
        pending.append(
            PendingEvent(
                tuple(streams), "consult.overdue", consult.id, events.event_payload(consult)
            )
        )
    return flagged


async def _critical(
    db: AsyncSession, now: dt.datetime, every: dt.timedelta, pending: list[PendingEvent]
) -> int:
    candidates = list(
        await db.scalars(
            select(Consult).where(
                Consult.state == ConsultState.REPORTED,
                Consult.critical_since.is_not(None),
                Consult.critical_since <= now - every,
            )
        )
    )
    sent = 0
    for consult in candidates:
        last = consult.critical_reminded_at or consult.critical_since
        if last is None or last > now - every:
            continue
        guard = (
            Consult.critical_reminded_at.is_(None)
            if consult.critical_reminded_at is None
            else Consult.critical_reminded_at == consult.critical_reminded_at
        )
        result = await db.execute(
            update(Consult)
            .where(Consult.id == consult.id, guard)
            .values(critical_reminded_at=now, critical_reminders=consult.critical_reminders + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        sent += 1
        streams = [
            events.user_stream(consult.requester_user_id),
            events.institution_stream(consult.requester_institution_id),
            events.coordinator_stream(consult.centre),
        ]
        station = await db.get(Institution, consult.requester_institution_id)
        if (
            station is not None
            and station.kind is InstitutionKind.VILLAGE_CLINIC
            and station.parent_id
        ):
            streams.append(events.institution_stream(station.parent_id))
        pending.append(
            PendingEvent(
                tuple(streams),
                "critical.unacknowledged",
                consult.id,
                events.event_payload(
                    consult,
                    reminder=consult.critical_reminders + 1,
                    critical_since=consult.critical_since.isoformat()
                    if consult.critical_since
                    else None,
                ),
            )
        )
    return sent


async def watchdog(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the sweep loop, cancelled and awaited on shutdown."""
    settings = app[SETTINGS]

    async def loop() -> None:
        while True:
            try:
                done = await sweep(
                    app[SESSIONS], critical_ack_seconds=settings.critical_ack_seconds
                )
                if done.event_ids and ANNOUNCE in app:
                    await app[ANNOUNCE](done.event_ids)
            except Exception:
                log.exception("watchdog sweep failed; trying again next interval")
            await asyncio.sleep(settings.watch_interval_seconds)

    task = asyncio.create_task(loop(), name="huizhen-watchdog")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
