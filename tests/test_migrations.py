"""Migrations match the models, the audit table refuses change at the database itself, and data
migrations rewrite what they must and nothing else."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from server.db import current_revision, head_revision, make_engine, migrate
from server.models import AuditEvent, Base
from server.settings import Settings
from tests.services import Postgres


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


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database (no schema) of the test's backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    name = "m_" + uuid.uuid4().hex[:12]
    pg.psql(f"CREATE DATABASE {name}")
    return pg.url(name)


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def test_stored_metadata_with_nan_is_rewritten_as_null(empty_database_url: str) -> None:
    """Migration 0009: instances stored before ingest wrote null for a DS of NaN or an infinity
    held the bare constants, which are not JSON; they are rewritten. Rows where the words are
    only inside strings, or absent, are left exactly as they were."""
    studies, series, instances = (
        Base.metadata.tables[name] for name in ("dicom_studies", "dicom_series", "dicom_instances")
    )
    now = dt.datetime.now(dt.UTC)
    broken = (
        '{"00100010":{"vr":"PN","Value":[{"Alphabetic":"NaN^Infinity"}]},'
        '"00181050":{"vr":"DS","Value":[-Infinity]},'
        '"00281050":{"vr":"DS","Value":[NaN,40]},'
        '"00281051":{"vr":"DS","Value":[Infinity]}}'
    )
    in_strings = '{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "NaN"}]}, "x": "Infinity"}'
    clean = '{"00281050": {"vr": "DS", "Value": [40.5]}}'
    engine = make_engine(empty_database_url)
    try:
        await migrate(engine, "0008")
        async with engine.begin() as conn:
            await conn.execute(
                insert(studies).values(
                    study_uid="1.2",
                    owner_id=uuid.uuid4(),
                    attributes="{}",
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                insert(series).values(
                    series_uid="1.2.1", study_uid="1.2", attributes="{}", created_at=now
                )
            )
            for uid, text in (("1.2.1.1", broken), ("1.2.1.2", in_strings), ("1.2.1.3", clean)):
                await conn.execute(
                    insert(instances).values(
                        sop_instance_uid=uid,
                        series_uid="1.2.1",
                        study_uid="1.2",
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        sha256="0" * 64,
                        size=1,
                        metadata=text,
                        created_at=now,
                    )
                )
        await migrate(engine)
        async with engine.connect() as conn:
            result = await conn.execute(select(instances.c.sop_instance_uid, instances.c.metadata))
            rows: dict[str, str] = dict(result.all())
    finally:
        await engine.dispose()
    assert _strict(rows["1.2.1.1"]) == {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "NaN^Infinity"}]},
        "00181050": {"vr": "DS", "Value": [None]},
        "00281050": {"vr": "DS", "Value": [None, 40]},
        "00281051": {"vr": "DS", "Value": [None]},
    }
    assert rows["1.2.1.2"] == in_strings
    assert rows["1.2.1.3"] == clean
