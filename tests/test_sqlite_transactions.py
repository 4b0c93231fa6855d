"""On SQLite a unit of work asks aiosqlite's thread to commit or roll back only when it opened
a transaction (``server.db._skip_idle_ends``): each such request is a trip to that thread. The
trips are counted on aiosqlite's connection; what SQLite executes is watched with its trace hook."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from server.db import make_engine, make_sessionmaker, unit_of_work


async def test_only_open_transactions_are_ended(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    executed: list[str] = []
    trips: list[str] = []

    @event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        driver = dbapi_connection.driver_connection  # aiosqlite's Connection
        inner = driver._conn
        assert isinstance(inner, sqlite3.Connection)
        inner.set_trace_callback(executed.append)
        for name in ("commit", "rollback"):
            original = getattr(driver, name)

            async def counted(original: Any = original, name: str = name) -> None:
                trips.append(name)
                await original()

            setattr(driver, name, counted)

    def ends() -> tuple[list[str], list[str]]:
        found = [s for s in executed if s.split()[0].upper() in {"BEGIN", "COMMIT", "ROLLBACK"}]
        taken = list(trips)
        executed.clear()
        trips.clear()
        return [s.split()[0].upper() for s in found], taken

    factory = make_sessionmaker(engine)
    try:
        async with unit_of_work(factory) as db:
            await db.execute(text("CREATE TABLE t (x INTEGER)"))
        ends()

        async with unit_of_work(factory) as db:  # reads only: nothing to end
            assert (await db.execute(text("SELECT count(*) FROM t"))).scalar() == 0
        assert ends() == ([], [])  # no trip to commit, none for the pool's reset

        async with unit_of_work(factory) as db:  # writes: one BEGIN, one COMMIT, one trip
            await db.execute(text("INSERT INTO t VALUES (1)"))
        assert ends() == (["BEGIN", "COMMIT"], ["commit"])

        async def failing() -> None:
            async with unit_of_work(factory) as db:  # fails after writing: rolled back
                await db.execute(text("INSERT INTO t VALUES (2)"))
                raise RuntimeError("the handler failed")

        with pytest.raises(RuntimeError):
            await failing()
        assert ends() == (["BEGIN", "ROLLBACK"], ["rollback"])

        async with engine.connect() as conn:  # a plain connection that read
            rows = (await conn.execute(text("SELECT x FROM t"))).scalars().all()
        assert rows == [1]
        assert ends() == ([], [])
    finally:
        await engine.dispose()
