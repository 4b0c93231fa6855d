"""Migrations match the models, and the audit table refuses change at the database itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from server.db import current_revision, head_revision, make_engine, migrate
from server.models import AuditEvent, Base
from server.settings import Settings


async def test_migrated_schema_matches_the_models(settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == []
        assert await current_revision(engine) == head_revision()
        await migrate(engine)  # applying again is a no-op
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"]
)
async def test_audit_rows_cannot_be_changed_or_deleted(settings: Settings, statement: str) -> None:
    engine = make_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(AuditEvent).values(action="test", object_type="test", detail={})
            )
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar()
        assert count == 1
    finally:
        await engine.dispose()


async def test_fresh_sqlite_database_migrates_from_nothing(tmp_path: Path) -> None:
    """(The PostgreSQL template of every run is itself made by migrating an empty database.)"""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
