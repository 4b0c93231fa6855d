"""The DICOM index's writes: idempotence, refusals that write nothing, and concurrent writers.

``DicomIndex.add`` writes with ``ON CONFLICT DO NOTHING`` and no savepoint; these tests hold it to
what the savepoint used to guarantee. The race tests need two open transactions at once, which
SQLite's single writer does not allow: they run on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from imaging.index import AddOutcome
from imaging.ingest import Instance, ingest
from server.db import make_engine, make_sessionmaker
from server.models import DICOM, Institution
from tests.test_dicomweb import CT, MR, with_new_uids

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()


async def _owners(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    async with make_sessionmaker(engine)() as db:
        ids = (await db.execute(select(Institution.id).order_by(Institution.code))).scalars()
        first, second, *_ = ids.all()
    return first, second


def _instance(path: Path = CT) -> Instance:
    return ingest(with_new_uids(path))


def _sibling(inst: Instance, path: Path = CT) -> Instance:
    """Another instance of the same study and series."""
    return ingest(
        with_new_uids(path, StudyInstanceUID=inst.study_uid, SeriesInstanceUID=inst.series_uid)
    )


async def _add(
    db: AsyncSession, inst: Instance, owner: uuid.UUID, sha: str = "a" * 64
) -> AddOutcome:
    return await DICOM.add(db, inst, sha256=sha, size=1, owner_id=owner)


async def _counts(engine: AsyncEngine, study_uid: str) -> tuple[int, int, int, str]:
    s, i = DICOM.studies, DICOM.instances
    async with make_sessionmaker(engine)() as db:
        study = (
            await db.execute(
                select(s.c.instance_count, s.c.series_count, s.c.modalities).where(
                    s.c.study_uid == study_uid
                )
            )
        ).one()
        rows = (
            await db.execute(select(func.count()).where(i.c.study_uid == study_uid))
        ).scalar_one()
    return study.instance_count, study.series_count, rows, study.modalities


async def test_counts_modalities_and_idempotence(engine: AsyncEngine) -> None:
    owner, _ = await _owners(engine)
    ct = _instance()
    mr = ingest(
        with_new_uids(MR, StudyInstanceUID=ct.study_uid)  # a second series, another modality
    )
    async with make_sessionmaker(engine)() as db:
        assert await _add(db, ct, owner) is AddOutcome.STORED
        assert await _add(db, _sibling(ct), owner) is AddOutcome.STORED
        assert await _add(db, mr, owner) is AddOutcome.STORED
        assert await _add(db, ct, owner) is AddOutcome.ALREADY_STORED
        assert await _add(db, ct, owner, sha="b" * 64) is AddOutcome.CONFLICT
        await db.commit()
    assert await _counts(engine, ct.study_uid) == (3, 2, 3, " CT MR ")


async def test_another_institutions_study_is_refused_and_nothing_written(
    engine: AsyncEngine,
) -> None:
    owner, other = await _owners(engine)
    ct = _instance()
    async with make_sessionmaker(engine)() as db:
        assert await _add(db, ct, owner) is AddOutcome.STORED
        await db.commit()
        intruder = _sibling(ct)
        assert await _add(db, intruder, other) is AddOutcome.CONFLICT
        # Its own series (never seen) is not created either.
        stranger = replace(intruder, series_uid=pydicom.uid.generate_uid())
        assert await _add(db, stranger, other) is AddOutcome.CONFLICT
        await db.commit()
        series = (
            await db.execute(select(func.count()).where(DICOM.series.c.study_uid == ct.study_uid))
        ).scalar_one()
    assert series == 1
    assert await _counts(engine, ct.study_uid) == (1, 1, 1, " CT ")


async def _hold_then_race(
    engine: AsyncEngine, first: Instance, second: Instance, owners: tuple[uuid.UUID, uuid.UUID]
) -> tuple[AddOutcome, AddOutcome]:
    """``first`` is added and left uncommitted; ``second`` is added concurrently (it waits on the
    first's rows), then the first commits and the second finishes."""
    sessions = make_sessionmaker(engine)
    async with sessions() as a, sessions() as b:
        got_a = await _add(a, first, owners[0], sha="a" * 64)
        racing = asyncio.create_task(_add(b, second, owners[1], sha="b" * 64))
        await asyncio.sleep(0.3)
        assert not racing.done(), "the second writer should wait on the first's rows"
        await a.commit()
        got_b = await asyncio.wait_for(racing, 10)
        await b.commit()
    return got_a, got_b


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_concurrent_writers_of_one_new_study(engine: AsyncEngine) -> None:
    owner, _ = await _owners(engine)
    ct = _instance()
    got = await _hold_then_race(engine, ct, _sibling(ct), (owner, owner))
    assert got == (AddOutcome.STORED, AddOutcome.STORED)
    assert await _counts(engine, ct.study_uid) == (2, 1, 2, " CT ")


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_concurrent_writers_of_one_instance(engine: AsyncEngine) -> None:
    owner, other = await _owners(engine)
    ct = _instance()
    got = await _hold_then_race(engine, ct, ct, (owner, owner))
    assert got == (AddOutcome.STORED, AddOutcome.CONFLICT)  # same UID, other bytes
    assert await _counts(engine, ct.study_uid) == (1, 1, 1, " CT ")
    # Another institution creating the same new study at the same moment gets nothing in.
    mr = _instance(MR)
    got = await _hold_then_race(engine, mr, _sibling(mr, MR), (owner, other))
    assert got == (AddOutcome.STORED, AddOutcome.CONFLICT)
    assert await _counts(engine, mr.study_uid) == (1, 1, 1, " MR ")
