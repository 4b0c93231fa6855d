"""The audit trail: one typed record per read or change of protected data, through one function.

Records are written in the same transaction as the read or change they describe, so a response
carrying patient data is never sent without its record. The table is append-only in the database
(triggers refuse UPDATE and DELETE), and the API offers no way to change it.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from imaging.steps import Step, Work, run_async
from server.models import AuditEvent, utcnow


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted, and from where. ``user_id`` is ``None`` for an unauthenticated attempt."""

    user_id: uuid.UUID | None
    username: str
    institution_id: uuid.UUID | None
    client_address: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Entry:
    action: str
    object_type: str
    object_id: str = ""
    patient_id: uuid.UUID | None = None
    outcome: Outcome = Outcome.OK
    #: Field names and counts only, never patient values.
    detail: dict[str, Any] = field(default_factory=dict)


_INSERT = insert(cast(Table, AuditEvent.__table__))


async def record(session: AsyncSession, actor: Actor, entries: Iterable[Entry]) -> int:
    """Stage audit records in ``session``'s transaction. Returns how many were written."""
    return await run_async(await session.connection(), writing(actor, entries))


def writing(actor: Actor, entries: Iterable[Entry]) -> Work[int]:
    """The work of writing audit records, for a caller that runs it in its own transaction
    (:mod:`imaging.steps`). Returns how many were written."""
    now = utcnow()
    rows = [_row(actor, entry, now) for entry in entries]
    if rows:  # a Core insert of the table: no ORM bulk-insert machinery for a log row
        yield Step(_INSERT, rows)
    return len(rows)


def _row(actor: Actor, entry: Entry, at: dt.datetime) -> dict[str, Any]:
    return {
        "at": at,
        "request_id": actor.request_id,
        "actor_user_id": actor.user_id,
        "actor_username": actor.username,
        "actor_institution_id": actor.institution_id,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "patient_id": entry.patient_id,
        "client_address": actor.client_address,
        "outcome": entry.outcome.value,
        "detail": entry.detail,
    }


class ReadWindow:
    """Which (session, object) reads were audited lately, in this process.

    Pixel data is audited once per session and series in a window, not once per frame: a viewer
    fetches hundreds of frames to show one series, and the record that matters is who looked at
    which series when. Metadata and whole-instance retrievals are audited every time.
    """

    def __init__(self, window_seconds: float = 600.0, size: int = 10_000) -> None:
        self.window = window_seconds
        self.size = size
        self._seen: OrderedDict[tuple[uuid.UUID, str], float] = OrderedDict()

    def first_in_window(self, session_id: uuid.UUID, object_id: str) -> bool:
        now = time.monotonic()
        key = (session_id, object_id)
        last = self._seen.get(key)
        if last is not None and now - last < self.window:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
