"""The index of stored DICOM instances: studies, series and instances in three SQL tables.

The tables are defined onto a :class:`~sqlalchemy.MetaData` the caller owns (the server puts them
beside its own, so one migration history covers both); this package knows nothing of the server.
Two columns are opaque to it: ``owner_id``, the institution a study came from, and
``patient_ref``, the patient it was linked to. Query code takes an extra SQL condition for
visibility, which the server's policy layer builds.

Each instance row keeps its DICOM JSON model (bulk data as ``BulkDataURI`` paths), so WADO-RS
metadata is served from the index, never by re-reading files. Study and series rows keep the
JSON of their own-level attributes as first seen, for QIDO responses, and the columns that
queries match on.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    Update,
    Uuid,
    bindparam,
    case,
    delete,
    func,
    null,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from imaging.ingest import Instance
from imaging.steps import Step, Work, run_async

__all__ = [
    "SERIES_TAGS",
    "STUDY_TAGS",
    "AddOutcome",
    "DicomIndex",
    "Removed",
    "StoredRef",
    "person_name_groups",
]

# Attributes kept at study level (patient module + general study), as DICOM JSON tags.
STUDY_TAGS = (
    "00080005",  # SpecificCharacterSet
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    "00081030",  # StudyDescription
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100021",  # IssuerOfPatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
)
SERIES_TAGS = (
    "00080005",  # SpecificCharacterSet
    "00080060",  # Modality
    "0008103E",  # SeriesDescription
    "00180015",  # BodyPartExamined
    "0020000D",  # StudyInstanceUID
    "0020000E",  # SeriesInstanceUID
    "00200011",  # SeriesNumber
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AddOutcome(enum.Enum):
    STORED = "stored"
    ALREADY_STORED = "already-stored"  # the same SOP instance with the same bytes: idempotent
    CONFLICT = "conflict"  # the same SOP Instance UID with other bytes, or another owner's study


@dataclass(frozen=True, slots=True)
class Removed:
    instances: int
    orphaned_sha256: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredRef:
    """Where an indexed instance's bytes are, and what a retrieval needs to know."""

    study_uid: str
    series_uid: str
    instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    sha256: str
    size: int
    frames: int | None


def _first(meta: Mapping[str, Any], tag: str) -> Any:
    values = meta.get(tag, {}).get("Value") or []
    return values[0] if values else None


def _text(meta: Mapping[str, Any], tag: str) -> str:
    value = _first(meta, tag)
    if value is None:
        return ""
    if isinstance(value, dict):  # PN
        return str(value.get("Alphabetic") or value.get("Ideographic") or "")
    return str(value)


def _int(meta: Mapping[str, Any], tag: str) -> int | None:
    value = _first(meta, tag)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def person_name_groups(meta: Mapping[str, Any], tag: str) -> tuple[str, str, str]:
    """The alphabetic, ideographic and phonetic groups of a PN value, lower-cased for matching."""
    value = _first(meta, tag)
    if not isinstance(value, dict):
        return "", "", ""
    return (
        str(value.get("Alphabetic", "")).lower(),
        str(value.get("Ideographic", "")).lower(),
        str(value.get("Phonetic", "")).lower(),
    )


def _insert_or_nothing(dialect: str, table: Table) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING in ``dialect`` (PostgreSQL or SQLite)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no ON CONFLICT for {dialect}")


def _subset(meta: Mapping[str, Any], tags: Sequence[str]) -> str:
    return json.dumps({t: meta[t] for t in tags if t in meta}, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Writes:
    """The statements :meth:`DicomIndex.add` runs, built once per SQL dialect: SQLAlchemy then
    neither rebuilds them nor recomputes their cache keys for each instance."""

    look: Select[Any]
    insert_study: Insert
    insert_series: Insert
    insert_instance: Insert
    bump_series: Update
    bump_study: Update

    @classmethod
    def build(cls, index: DicomIndex, dialect: str) -> _Writes:
        s, se, i = index.studies, index.series, index.instances
        same_sop = i.c.sop_instance_uid == bindparam("k_sop")
        this_study = s.c.study_uid == bindparam("k_study")
        look = select(
            select(i.c.sha256).where(same_sop).scalar_subquery().label("sha256"),
            select(s.c.owner_id)
            .join(i, i.c.study_uid == s.c.study_uid)
            .where(same_sop)
            .scalar_subquery()
            .label("instance_owner"),
            select(s.c.owner_id).where(this_study).scalar_subquery().label("study_owner"),
            select(se.c.series_uid)
            .where(se.c.series_uid == bindparam("k_series"))
            .scalar_subquery()
            .label("series_uid"),
            type_coerce(index._patient, Uuid).label("patient"),
        )
        modality = bindparam("k_modality", type_=String)
        position = func.strpos if dialect == "postgresql" else func.instr
        bump_study = (
            update(s)
            .where(this_study)
            .values(
                instance_count=s.c.instance_count + 1,
                series_count=s.c.series_count + bindparam("k_new_series", type_=Integer),
                updated_at=bindparam("k_now", type_=DateTime(timezone=True)),
                patient_ref=func.coalesce(bindparam("k_patient", type_=Uuid), s.c.patient_ref),
                modalities=case(
                    (
                        (modality == " ")
                        | (position(s.c.modalities, modality) > 0)
                        | (func.length(s.c.modalities) + func.length(modality) > 201),
                        s.c.modalities,
                    ),
                    else_=s.c.modalities + bindparam("k_append", type_=String),
                ),
            )
        )
        return cls(
            look=look,
            insert_study=_insert_or_nothing(dialect, s),
            insert_series=_insert_or_nothing(dialect, se),
            insert_instance=_insert_or_nothing(dialect, i),
            bump_series=update(se)
            .where(se.c.series_uid == bindparam("k_series"))
            .values(instance_count=se.c.instance_count + 1),
            bump_study=bump_study,
        )


class DicomIndex:
    """The three index tables, defined onto ``metadata``, and the operations on them."""

    def __init__(self, metadata: MetaData) -> None:
        self.studies = Table(
            "dicom_studies",
            metadata,
            Column("study_uid", String(64), primary_key=True),
            Column("owner_id", Uuid, nullable=False, index=True),
            Column("patient_ref", Uuid, nullable=True, index=True),
            Column("patient_id", String(64), nullable=False, default=""),
            Column("pn_alphabetic", String(324), nullable=False, default=""),
            Column("pn_ideographic", String(324), nullable=False, default=""),
            Column("pn_phonetic", String(324), nullable=False, default=""),
            Column("patient_birth_date", String(8), nullable=False, default=""),
            Column("study_date", String(8), nullable=False, default=""),
            Column("study_time", String(16), nullable=False, default=""),
            Column("accession_number", String(16), nullable=False, default=""),
            Column("study_id", String(16), nullable=False, default=""),
            Column("referring_physician", String(324), nullable=False, default=""),
            Column("study_description", String(64), nullable=False, default=""),
            # " CT MR " — each modality between spaces, so that one can be matched with LIKE.
            Column("modalities", String(200), nullable=False, default=" "),
            Column("series_count", Integer, nullable=False, default=0),
            Column("instance_count", Integer, nullable=False, default=0),
            Column("attributes", Text, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )
        Index("ix_dicom_studies_patient_id", self.studies.c.patient_id)
        Index("ix_dicom_studies_study_date", self.studies.c.study_date)
        Index("ix_dicom_studies_accession_number", self.studies.c.accession_number)
        self.series = Table(
            "dicom_series",
            metadata,
            Column("series_uid", String(64), primary_key=True),
            Column(
                "study_uid",
                String(64),
                ForeignKey("dicom_studies.study_uid", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            Column("modality", String(16), nullable=False, default=""),
            Column("series_number", Integer, nullable=True),
            Column("series_description", String(64), nullable=False, default=""),
            Column("performed_date", String(8), nullable=False, default=""),
            Column("instance_count", Integer, nullable=False, default=0),
            Column("attributes", Text, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
        )
        self.instances = Table(
            "dicom_instances",
            metadata,
            Column("sop_instance_uid", String(64), primary_key=True),
            Column(
                "series_uid",
                String(64),
                ForeignKey("dicom_series.series_uid", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            Column("study_uid", String(64), nullable=False, index=True),
            Column("sop_class_uid", String(64), nullable=False),
            Column("instance_number", Integer, nullable=True),
            Column("transfer_syntax_uid", String(64), nullable=False),
            Column("frames", Integer, nullable=True),
            Column("rows", Integer, nullable=True),
            Column("columns", Integer, nullable=True),
            Column("sha256", String(64), nullable=False, index=True),
            Column("size", BigInteger, nullable=False),
            Column("metadata", Text, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
        )

        self._patient: ColumnElement[Any] = null()
        self._writes: dict[str, _Writes] = {}

    def link_patients_by(self, expression: ColumnElement[Any]) -> None:
        """How a new instance finds its patient: a SQL expression (a scalar subquery of the
        caller's tables) whose bound parameters the caller passes to :meth:`add` as
        ``patient_params``. It is evaluated in the look-up that :meth:`add` makes anyway."""
        self._patient = expression
        self._writes.clear()

    def _statements(self, dialect: str) -> _Writes:
        writes = self._writes.get(dialect)
        if writes is None:
            writes = self._writes[dialect] = _Writes.build(self, dialect)
        return writes

    # -- writing -----------------------------------------------------------------------

    async def add(
        self,
        session: AsyncSession,
        instance: Instance,
        *,
        sha256: str,
        size: int,
        owner_id: uuid.UUID,
        patient_params: Mapping[str, Any] | None = None,
    ) -> AddOutcome:
        """Index one stored instance, idempotently by SOP Instance UID (see :meth:`adding`)."""
        connection = await session.connection()
        return await run_async(
            connection,
            self.adding(
                connection.dialect.name,
                instance,
                sha256=sha256,
                size=size,
                owner_id=owner_id,
                patient_params=patient_params,
            ),
        )

    def adding(
        self,
        dialect: str,
        instance: Instance,
        *,
        sha256: str,
        size: int,
        owner_id: uuid.UUID,
        patient_params: Mapping[str, Any] | None = None,
    ) -> Work[AddOutcome]:
        """The work of indexing one stored instance, as :mod:`imaging.steps` (run it with
        :func:`~imaging.steps.run_async`, or on SQLite with a :class:`~imaging.steps.SqliteRunner`
        in a worker thread).

        A new instance of a known series costs four statements, built once: one look-up (the
        instance, the study's owner, the series, the patient), the instance row and the two
        counters. Rows go in with ``ON CONFLICT DO NOTHING`` and nothing is written before the
        checks that can refuse, so a concurrent writer of the same study, series or instance
        makes this one look again instead of failing the caller's transaction (no savepoint).
        """
        writes = self._statements(dialect)
        for _attempt in range(3):
            outcome = yield from _attempt_add(
                writes,
                instance,
                sha256=sha256,
                size=size,
                owner_id=owner_id,
                patient_params=patient_params or {},
            )
            if outcome is not None:
                return outcome
        return AddOutcome.CONFLICT

    async def remove(
        self,
        session: AsyncSession,
        *,
        study_uid: str,
        series_uid: str | None = None,
        instance_uid: str | None = None,
    ) -> Removed:
        """Remove a study, a series or an instance from the index. The result counts the removed
        instances and lists their SHA-256 digests that no remaining row refers to (their files
        may be deleted once the transaction has committed)."""
        s, se, i = self.studies, self.series, self.instances
        where = [i.c.study_uid == study_uid]
        if series_uid is not None:
            where.append(i.c.series_uid == series_uid)
        if instance_uid is not None:
            where.append(i.c.sop_instance_uid == instance_uid)
        rows = (
            await session.execute(
                select(i.c.sop_instance_uid, i.c.series_uid, i.c.sha256).where(*where)
            )
        ).all()
        if not rows:
            return Removed(0, ())
        await session.execute(delete(i).where(*where))
        # Recount what remains; drop empty series and studies.
        for series in {r.series_uid for r in rows}:
            left = (
                await session.execute(select(func.count()).where(i.c.series_uid == series))
            ).scalar_one()
            if left:
                await session.execute(
                    update(se).where(se.c.series_uid == series).values(instance_count=left)
                )
            else:
                await session.execute(delete(se).where(se.c.series_uid == series))
        counts = (
            await session.execute(
                select(func.count(), func.count(func.distinct(i.c.series_uid))).where(
                    i.c.study_uid == study_uid
                )
            )
        ).one()
        if counts[0]:
            mods = (
                await session.execute(
                    select(func.distinct(se.c.modality)).where(se.c.study_uid == study_uid)
                )
            ).scalars()
            await session.execute(
                update(s)
                .where(s.c.study_uid == study_uid)
                .values(
                    instance_count=counts[0],
                    series_count=counts[1],
                    modalities=" " + "".join(f"{m} " for m in sorted(mods) if m),
                    updated_at=utcnow(),
                )
            )
        else:
            await session.execute(delete(s).where(s.c.study_uid == study_uid))
        digests = {r.sha256 for r in rows}
        still = (
            await session.execute(select(func.distinct(i.c.sha256)).where(i.c.sha256.in_(digests)))
        ).scalars()
        return Removed(len(rows), tuple(sorted(digests - set(still))))

    # -- reading -----------------------------------------------------------------------

    async def ref(self, session: AsyncSession, instance_uid: str) -> StoredRef | None:
        i = self.instances
        row = (
            await session.execute(
                select(
                    i.c.study_uid,
                    i.c.series_uid,
                    i.c.sop_instance_uid,
                    i.c.sop_class_uid,
                    i.c.transfer_syntax_uid,
                    i.c.sha256,
                    i.c.size,
                    i.c.frames,
                ).where(i.c.sop_instance_uid == instance_uid)
            )
        ).first()
        if row is None:
            return None
        return StoredRef(*row)


def _attempt_add(
    writes: _Writes,
    inst: Instance,
    *,
    sha256: str,
    size: int,
    owner_id: uuid.UUID,
    patient_params: Mapping[str, Any],
) -> Work[AddOutcome | None]:
    """One attempt; None when a concurrent writer got in first (look again)."""
    seen = yield Step(
        writes.look,
        {
            "k_sop": inst.instance_uid,
            "k_study": inst.study_uid,
            "k_series": inst.series_uid,
            **patient_params,
        },
        fetch=True,
    )
    if seen.sha256 is not None:
        same = seen.sha256 == sha256 and seen.instance_owner == owner_id
        return AddOutcome.ALREADY_STORED if same else AddOutcome.CONFLICT
    if seen.study_owner is not None and seen.study_owner != owner_id:
        return AddOutcome.CONFLICT
    meta = inst.metadata
    now = utcnow()
    if seen.study_owner is None:
        alpha, ideo, phon = person_name_groups(meta, "00100010")
        created = yield Step(
            writes.insert_study,
            {
                "study_uid": inst.study_uid,
                "owner_id": owner_id,
                "patient_ref": seen.patient,
                "patient_id": _text(meta, "00100020")[:64],
                "pn_alphabetic": alpha[:324],
                "pn_ideographic": ideo[:324],
                "pn_phonetic": phon[:324],
                "patient_birth_date": _text(meta, "00100030")[:8],
                "study_date": _text(meta, "00080020")[:8],
                "study_time": _text(meta, "00080030")[:16],
                "accession_number": _text(meta, "00080050")[:16],
                "study_id": _text(meta, "00200010")[:16],
                "referring_physician": _text(meta, "00080090").lower()[:324],
                "study_description": _text(meta, "00081030")[:64],
                "modalities": " ",
                "series_count": 0,
                "instance_count": 0,
                "attributes": _subset(meta, STUDY_TAGS),
                "created_at": now,
                "updated_at": now,
            },
        )
        if created != 1:
            return None  # created meanwhile, perhaps by another institution: look again
    new_series = False
    if seen.series_uid is None:
        created = yield Step(
            writes.insert_series,
            {
                "series_uid": inst.series_uid,
                "study_uid": inst.study_uid,
                "modality": inst.modality[:16],
                "series_number": _int(meta, "00200011"),
                "series_description": _text(meta, "0008103E")[:64],
                "performed_date": _text(meta, "00400244")[:8],
                "instance_count": 0,
                "attributes": _subset(meta, SERIES_TAGS),
                "created_at": now,
            },
        )
        new_series = created == 1
    created = yield Step(
        writes.insert_instance,
        {
            "sop_instance_uid": inst.instance_uid,
            "series_uid": inst.series_uid,
            "study_uid": inst.study_uid,
            "sop_class_uid": inst.sop_class_uid,
            "instance_number": _int(meta, "00200013"),
            "transfer_syntax_uid": inst.transfer_syntax_uid,
            "frames": inst.number_of_frames,
            "rows": inst.rows,
            "columns": inst.columns,
            "sha256": sha256,
            "size": size,
            "metadata": inst.metadata_json,
            "created_at": now,
        },
    )
    if created != 1:
        return None  # the same instance arrived meanwhile: look again
    yield Step(writes.bump_series, {"k_series": inst.series_uid})
    modality = inst.modality.strip()[:16]
    yield Step(
        writes.bump_study,
        {
            "k_study": inst.study_uid,
            "k_new_series": 1 if new_series else 0,
            "k_now": now,
            "k_patient": seen.patient,
            # Appended in SQL, so that concurrent writers of one study lose none.
            "k_modality": f" {modality} " if modality else " ",
            "k_append": f"{modality} " if modality else "",
        },
    )
    return AddOutcome.STORED
