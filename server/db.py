"""Database engine, units of work and migrations.

The same code runs on SQLite (aiosqlite, the embedded default) and PostgreSQL (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, event, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm.attributes import set_committed_value

from imaging.steps import Work, run_async, sqlite_runner
from server.problems import Conflict

T = TypeVar("T")

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Held while migrating on PostgreSQL so that two nodes starting together do not race.
_MIGRATION_LOCK_KEY = 0x48555A48


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        # One connection: SQLite has a single writer, and every request here may write
        # (audit records reads too). Serialising in the pool avoids SQLITE_BUSY upgrades.
        # Not bound to aiosqlite's thread: whoever holds it checked out may lend it to a
        # worker thread for a piece of work (see sqlite_connection).
        engine = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _skip_idle_ends(engine)
        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


def _skip_idle_ends(engine: AsyncEngine) -> None:
    """On SQLite, COMMIT and ROLLBACK only when the connection is in a transaction.

    sqlite3 begins a transaction at the first write, so a unit of work that only read has
    nothing to end, and the pool's reset when a connection comes back follows a commit or
    rollback that already ended it. Each of those is otherwise a trip to aiosqlite's thread and
    back: four per STOW-RS request, of which one has anything to do. Whether a transaction is
    open is read from the ``sqlite3.Connection`` (a flag, no statement); where it cannot be
    read, the statement is sent as before.
    """
    dialect = engine.sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        if _may_be_in_transaction(dbapi_connection):
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if _may_be_in_transaction(dbapi_connection):
            rollback(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


def _may_be_in_transaction(dbapi_connection: Any) -> bool:
    """False only when the sqlite3 connection under ``dbapi_connection`` says it is not in a
    transaction."""
    inner = _sqlite3_under(dbapi_connection)
    return True if inner is None else inner.in_transaction


def _sqlite3_under(dbapi_connection: Any) -> sqlite3.Connection | None:
    """The :class:`sqlite3.Connection` under aiosqlite's (the adapted connection, or the pool's
    proxy of it). aiosqlite keeps it private: if a version moves it, this answers None."""
    try:
        inner = dbapi_connection.driver_connection._conn
    except (AttributeError, ValueError):
        return None
    return inner if isinstance(inner, sqlite3.Connection) else None


async def sqlite_connection(connection: AsyncConnection) -> sqlite3.Connection | None:
    """The :class:`sqlite3.Connection` under a session's ``connection`` on SQLite, else None.

    For step work (:mod:`imaging.steps`) to run on it directly, instead of one trip to
    aiosqlite's thread per statement. Safe while the session holds the connection: nothing else
    can use it meanwhile (the pool has one connection, checked out). Where it cannot be found,
    this answers None and callers take the awaited path.
    """
    if connection.dialect.name != "sqlite":
        return None
    return _sqlite3_under(await connection.get_raw_connection())


async def write(session: AsyncSession, work: Work[T]) -> T:
    """Run ``work`` in ``session``'s transaction; the caller commits.

    On SQLite it runs in one trip to a worker thread, on the session's own connection lent to
    it. Cancelled meanwhile, this still waits for the thread to be done with the connection
    before letting go: the session would otherwise roll back and hand the connection on while
    the thread is writing on it. Elsewhere each statement is awaited.
    """
    connection = await session.connection()
    raw = await sqlite_connection(connection)
    if raw is None:
        return await run_async(connection, work)
    runner = sqlite_runner(connection.dialect)
    future = asyncio.get_running_loop().run_in_executor(None, runner.run, raw, work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


async def read(session: AsyncSession, work: Work[T]) -> T:
    """Run ``work``, which only reads, in ``session``'s transaction.

    On SQLite it runs inline on the event loop, on the session's own connection: a read in WAL
    mode never waits for a lock, and an indexed look-up takes microseconds, less than the three
    or four trips to aiosqlite's thread and back that an awaited statement costs. Meant for the
    look-ups every request makes (who is calling); not for searches that may scan.
    """
    connection = await session.connection()
    raw = await sqlite_connection(connection)
    if raw is None:
        return await run_async(connection, work)
    return sqlite_runner(connection.dialect).run(raw, work)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends normally, rolled back otherwise."""
    async with factory() as session, session.begin():
        yield session


async def write_if(
    session: AsyncSession, row: Any, *where: ColumnElement[bool], **values: Any
) -> bool:
    """Write ``values`` to ``row`` in one UPDATE, only while the ``where`` conditions hold.
    True when written: the object then carries the values as already committed, so the session
    does not write them a second time. False when someone got there first."""
    model = type(row)
    result = await session.execute(
        update(model)
        .where(model.id == row.id, *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for key, value in values.items():
        set_committed_value(row, key, value)
    return True


async def guarded_update(
    session: AsyncSession, row: Any, noun: str, *where: ColumnElement[bool], **values: Any
) -> None:
    """Write ``values`` to ``row`` only if nobody changed it since it was read (its ``version``,
    and any further ``where`` conditions); otherwise 409."""
    model = type(row)
    written = await write_if(
        session, row, model.version == row.version, *where, version=row.version + 1, **values
    )
    if not written:
        raise Conflict(f"the {noun} was changed by someone else; reload it")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (all of them by default)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)
    log.info("database migrated to %s", revision)


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        try:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except Exception:
            return None
        row = result.first()
        return None if row is None else str(row[0])
