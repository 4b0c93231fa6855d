"""``python -m bench.probe``: ``huizhen serve`` with a record of every request's database work.

Used by ``python -m bench.cycles --profile``. The server's code is not changed, only wrapped at
start-up: each route's endpoint, SQLAlchemy's cursor events (every SQL statement, with the time it
was sent and the time its answer was back in Python), ``AsyncSession.commit`` and ``rollback``,
and on PostgreSQL the round trips the asyncpg adapter makes outside statements (``BEGIN``, the
pool's pre-ping, statement preparation); on SQLite aiosqlite's hand-offs to its thread.

Requests are told apart by their asyncio task (SQLAlchemy runs the statements of a request in a
greenlet inside that task). Times are ``time.monotonic()``, the clock of the harness and of the
clients. ``SIGUSR1`` writes the requests finished since the last dump, as JSON, to
``$HZBENCH_PROBE_OUT.<n>`` (n = 1, 2, ...) and forgets them, with the SQL of one request
of each route.

The wrapping costs CPU: figures taken with the probe are for finding where the time goes, not
for the headline.

``HZBENCH_WHATIF`` (comma-separated) changes the server for an experiment, never for a figure of
record: ``no-events-lock`` sends ``SELECT $1::bigint`` where ``server.events`` sends
``SELECT pg_advisory_xact_lock($1)`` (the same round trip, without the lock: what the lock's
serialisation costs); ``no-pre-ping`` builds the engine with ``pool_pre_ping=False``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: One request: its route, times, statements and round trips.
Record = dict[str, Any]

_LOCK_CALL = re.compile(r"pg_advisory_xact_lock\((\$\d+)\)")
_TABLES = re.compile(r'\b(?:FROM|JOIN|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


_KEYS: dict[str, str] = {}


def statement_key(sql: str) -> str:
    """A short, stable name for a SQL statement: its verb and the tables it names."""
    key = _KEYS.get(sql)
    if key is None:
        key = _KEYS[sql] = _statement_key(sql)
    return key


def _statement_key(sql: str) -> str:
    text = " ".join(sql.split())
    if "pg_advisory_xact_lock" in text:
        return "SELECT pg_advisory_xact_lock (events lock)"
    verb = text.split(" ", 1)[0].upper()
    tables = list(dict.fromkeys(t.lower() for t in _TABLES.findall(text)))
    returning = " RETURNING" if " RETURNING " in text.upper() else ""
    return f"{verb} {', '.join(tables) or text[:60]}{returning}"


@dataclass
class Request:
    route: str
    start: float
    end: float = 0.0
    ok: bool = True
    #: Main-thread CPU seconds from the endpoint's start to its end: the request's own CPU
    #: only when requests run one at a time.
    cpu_start: float = field(default_factory=time.thread_time)
    cpu: float = 0.0
    #: The SQL text of every statement (references to SQLAlchemy's cached strings).
    texts: list[str] = field(default_factory=list)
    #: (key, sent, answered): every statement, in order.
    statements: list[tuple[str, float, float]] = field(default_factory=list)
    pending: tuple[str, float] | None = None
    #: COMMITs sent on the request's connections (any transaction, as the engine saw them).
    commits: int = 0
    rollbacks: int = 0
    #: The first COMMIT sent, and the end of the first ``AsyncSession.commit`` (the router's).
    commit_sent: float = 0.0
    commit_done: float = 0.0
    #: Round trips outside statements: BEGIN, pre-ping, prepare; or aiosqlite hand-offs.
    extra: dict[str, int] = field(default_factory=dict)
    lock_sent: float = 0.0
    lock_got: float = 0.0

    def bump(self, what: str) -> None:
        self.extra[what] = self.extra.get(what, 0) + 1

    def as_json(self) -> Record:
        return {
            "route": self.route,
            "start": self.start,
            "end": self.end,
            "ok": self.ok,
            "cpu": self.cpu,
            "statements": self.statements,
            "commits": self.commits,
            "rollbacks": self.rollbacks,
            "commit_sent": self.commit_sent,
            "commit_done": self.commit_done,
            "extra": self.extra,
            "lock_sent": self.lock_sent,
            "lock_got": self.lock_got,
        }


ACTIVE: dict[asyncio.Task[Any], Request] = {}
DONE: list[Request] = []
BACKGROUND = "background (watchdog, pool)"


def _current() -> Request:
    """The request of the running task; background work gets a record of its own per task."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None and task in ACTIVE:
        return ACTIVE[task]
    rec = Request(BACKGROUND, time.monotonic())
    if task is not None:
        ACTIVE[task] = rec
        task.add_done_callback(_finish_background)
    else:
        DONE.append(rec)
    return rec


def _finish_background(task: asyncio.Task[Any]) -> None:
    rec = ACTIVE.pop(task, None)
    if rec is not None:
        rec.end = time.monotonic()
        DONE.append(rec)


def install() -> None:
    """Wrap the server's request path and database layer (before the app is built)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncSession

    from server import routing

    original_endpoint = routing._endpoint

    def probed_endpoint(route: Any) -> Any:
        inner = original_endpoint(route)
        name = route.operation_id

        async def endpoint(request: Any) -> Any:
            task = asyncio.current_task()
            assert task is not None
            rec = Request(name, time.monotonic())
            ACTIVE[task] = rec
            try:
                return await inner(request)
            except BaseException:
                rec.ok = False
                raise
            finally:
                rec.end = time.monotonic()
                rec.cpu = time.thread_time() - rec.cpu_start
                ACTIVE.pop(task, None)
                DONE.append(rec)

        endpoint.__name__ = inner.__name__
        return endpoint

    routing._endpoint = probed_endpoint

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(*args: Any) -> None:
        statement = args[2]
        rec = _current()
        now = time.monotonic()
        key = statement_key(statement)
        rec.pending = (key, now)
        rec.texts.append(statement)
        if key.startswith("SELECT pg_advisory_xact_lock"):
            rec.lock_sent = now

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(*_args: Any) -> None:
        rec = _current()
        now = time.monotonic()
        if rec.pending is not None:
            key, sent = rec.pending
            rec.statements.append((key, sent, now))
            rec.pending = None
            if key.startswith("SELECT pg_advisory_xact_lock"):
                rec.lock_got = now

    @event.listens_for(Engine, "commit")
    def _commit(*_args: Any) -> None:
        rec = _current()
        rec.commits += 1
        if not rec.commit_sent:
            rec.commit_sent = time.monotonic()

    @event.listens_for(Engine, "rollback")
    def _rollback(*_args: Any) -> None:
        _current().rollbacks += 1

    original_commit = AsyncSession.commit

    async def commit(self: AsyncSession) -> None:
        await original_commit(self)
        rec = _current()
        if not rec.commit_done:
            rec.commit_done = time.monotonic()

    AsyncSession.commit = commit  # type: ignore[method-assign]
    _count_round_trips()
    whatif = {w for w in os.environ.get("HZBENCH_WHATIF", "").split(",") if w}
    if "no-events-lock" in whatif:

        @event.listens_for(Engine, "before_cursor_execute", retval=True)
        def _no_lock(*args: Any) -> tuple[str, Any]:
            statement, parameters = args[2], args[3]
            if "pg_advisory_xact_lock" in statement:
                statement = _LOCK_CALL.sub(r"\1::bigint", statement)
            return statement, parameters

    if "no-pre-ping" in whatif:
        from server import db

        original_engine = db.create_async_engine  # type: ignore[attr-defined]

        def engine_without_pre_ping(url: Any, **kwargs: Any) -> Any:
            kwargs["pool_pre_ping"] = False
            return original_engine(url, **kwargs)

        db.create_async_engine = engine_without_pre_ping  # type: ignore[attr-defined]


def _count_round_trips() -> None:
    """Round trips the drivers make that are not SQLAlchemy statements."""
    import aiosqlite.core
    import asyncpg.connection
    from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg

    adapter = sa_asyncpg.AsyncAdapt_asyncpg_connection

    def counted(owner: Any, attr: str, *what: str) -> None:
        original = getattr(owner, attr)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec = _current()
            for name in what:
                rec.bump(name)
            return await original(*args, **kwargs)

        setattr(owner, attr, wrapper)

    counted(adapter, "_start_transaction", "BEGIN")
    # SQLAlchemy's pre-ping on asyncpg opens a transaction to send ';' in, then rolls it back.
    counted(adapter, "_async_ping", "pre-ping BEGIN", "pre-ping ';'", "pre-ping ROLLBACK")
    counted(asyncpg.connection.Connection, "prepare", "PREPARE (statement cache miss)")
    counted(aiosqlite.core.Connection, "_execute", "aiosqlite thread hand-off")


def _dump(_signum: int, _frame: Any) -> None:
    base = os.environ["HZBENCH_PROBE_OUT"]
    _dump.count += 1  # type: ignore[attr-defined]
    records = [r.as_json() for r in DONE]
    examples: dict[str, list[str]] = {}
    for r in DONE:
        if r.ok and r.texts:
            examples[r.route] = r.texts
    DONE.clear()
    path = Path(f"{base}.{_dump.count}")  # type: ignore[attr-defined]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": records, "examples": examples}))
    tmp.rename(path)


_dump.count = 0  # type: ignore[attr-defined]


def main() -> int:
    install()
    signal.signal(signal.SIGUSR1, _dump)
    from server.cli import main as huizhen

    return huizhen(["serve"])


if __name__ == "__main__":
    raise SystemExit(main())
