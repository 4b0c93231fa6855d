"""SQL work written once (imaging.steps): the SQLite runner in a worker thread writes and reads
what the awaited path does, with the same type processing, defaults and row counts."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from imaging.steps import SqliteRunner, Step, Work, run_async
from server.db import make_engine, make_sessionmaker, sqlite_connection, write

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(20), nullable=False),
    Column("count", Integer, nullable=False, default=0),
    Column("token", String(32), nullable=False, default=lambda: uuid.uuid4().hex),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("note", JSON, nullable=True),
)
INSERT = sqlite.insert(things).on_conflict_do_nothing()
BUMP = (
    update(things)
    .where(things.c.name == bindparam("k_name"))
    .values(count=things.c.count + bindparam("k_by", type_=Integer))
)
LOOK = select(things.c.id, things.c.at, things.c.detail, things.c.count).where(
    things.c.name == bindparam("k_name")
)
AT = dt.datetime(2026, 11, 23, 8, 30, 15, 123456, tzinfo=dt.UTC)


def work(ident: uuid.UUID, name: str) -> Work[dict[str, Any]]:
    """Insert a row (twice: the second does nothing), bump it, add two more, read it back."""
    row = {"id": ident, "name": name, "at": AT, "detail": {"中文": [1, 2.5, None]}, "note": None}
    first = yield Step(INSERT, row)
    again = yield Step(INSERT, row)
    bumped = yield Step(BUMP, {"k_name": name, "k_by": 3})
    none = yield Step(BUMP, {"k_name": "nobody", "k_by": 1})
    many = yield Step(
        INSERT,
        [
            {"id": uuid.uuid4(), "name": f"{name}-a", "at": AT, "detail": {}},
            {"id": uuid.uuid4(), "name": f"{name}-b", "at": AT, "detail": {}},
        ],
    )
    seen = yield Step(LOOK, {"k_name": name}, fetch=True)
    missing = yield Step(LOOK, {"k_name": "nobody"}, fetch=True)
    return {
        "counts": (first, again, bumped, none, many),
        "seen": tuple(seen),
        "names": seen._fields,
        "missing": missing,
    }


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'steps.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _stored(engine: AsyncEngine, name: str) -> tuple[Any, ...]:
    """The row as SQLAlchemy reads it, and the raw text of its time and JSON columns."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(things).where(things.c.name == name))).one()
        raw = (
            await conn.execute(
                text("SELECT at, detail, note FROM things WHERE name = :n"), {"n": name}
            )
        ).one()
    return (*row, *raw)


async def test_the_sqlite_runner_does_what_the_awaited_path_does(engine: AsyncEngine) -> None:
    factory = make_sessionmaker(engine)
    one, two = uuid.uuid4(), uuid.uuid4()
    async with factory() as session:
        awaited = await run_async(await session.connection(), work(one, "awaited"))
        await session.commit()
    async with factory() as session:
        connection = await session.connection()
        raw = await sqlite_connection(connection)
        assert raw is not None, "the session's sqlite3 connection is not reachable"
        runner = SqliteRunner(connection.dialect)
        in_thread = await asyncio.to_thread(runner.run, raw, work(two, "threaded"))
        await session.commit()  # the session owns the transaction the thread wrote in

    assert awaited["counts"] == in_thread["counts"] == (1, 0, 1, 0, 2)
    assert awaited["names"] == in_thread["names"] == ("id", "at", "detail", "count")
    assert awaited["seen"][0] == one and in_thread["seen"][0] == two  # UUIDs read back
    assert awaited["seen"][1:] == in_thread["seen"][1:]
    assert awaited["missing"] is None and in_thread["missing"] is None
    a, t = await _stored(engine, "awaited"), await _stored(engine, "threaded")
    # Same columns stored alike: defaults filled (a callable's value differs), JSON and time.
    assert a[2:3] + a[4:] == t[2:3] + t[4:]
    assert a[2] == 3 and a[4] == AT.replace(tzinfo=None) and a[5] == {"中文": [1, 2.5, None]}
    assert a[-3] == "2026-11-23 08:30:15.123456" and a[-1] == "null"  # as SQLAlchemy binds them
    assert len(a[3]) == len(t[3]) == 32 and a[3] != t[3]


async def test_what_the_thread_wrote_is_rolled_back_with_the_session(engine: AsyncEngine) -> None:
    factory = make_sessionmaker(engine)
    async with factory() as session:
        connection = await session.connection()
        raw = await sqlite_connection(connection)
        assert raw is not None
        runner = SqliteRunner(connection.dialect)
        await asyncio.to_thread(runner.run, raw, work(uuid.uuid4(), "undone"))
        await session.rollback()
    async with engine.connect() as conn:
        assert (await conn.execute(select(things.c.name))).all() == []


async def test_a_required_parameter_left_out_is_refused_before_any_sql(
    engine: AsyncEngine,
) -> None:
    def careless() -> Work[int]:
        count: int = yield Step(BUMP, {"k_name": "x"})  # no k_by
        return count

    async with make_sessionmaker(engine)() as session:
        connection = await session.connection()
        raw = await sqlite_connection(connection)
        assert raw is not None
        with pytest.raises(KeyError, match="k_by"):
            SqliteRunner(connection.dialect).run(raw, careless())


def test_a_runner_needs_sqlite_placeholders() -> None:
    from sqlalchemy.dialects import postgresql

    with pytest.raises(ValueError, match="postgresql"):
        SqliteRunner(postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]


async def test_a_cancelled_caller_waits_for_the_thread_to_let_go(engine: AsyncEngine) -> None:
    """The connection is the session's: cancelling the request must not hand it on while the
    worker thread is still writing on it."""
    done = threading.Event()

    def slow() -> Work[int]:
        time.sleep(0.3)
        count: int = yield Step(
            INSERT, {"id": uuid.uuid4(), "name": "slow", "at": AT, "detail": {}}
        )
        done.set()
        return count

    async with make_sessionmaker(engine)() as session:
        connection = await session.connection()
        raw = await sqlite_connection(connection)
        assert raw is not None
        task = asyncio.create_task(write(session, slow()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert done.is_set()  # the thread had finished before the caller saw the cancellation
        await session.rollback()
