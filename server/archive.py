"""The DICOM archive: how an instance gets in, whichever door it came through.

STOW-RS parts, resumable uploads and DIMSE C-STOREs all end here: the bytes stream to a
temporary file while hashed (never held whole in memory); in one trip to a worker thread
:func:`imaging.ingest.ingest` checks them, the file is synced and moves to its content address;
then the index row is written in the caller's transaction. An instance refused at any step
leaves no file and no row behind.

Linking: a study is tied to a patient when its Patient ID is the national ID of a patient known
at the sending institution, or when it is attached to a consult (whose patient it then is). The
first such attachment also teaches the server what that institution's modalities call the
patient (``dicom_patient_ids``): later studies from there with the same Patient ID are tied to
the same patient on arrival. A study already tied to one patient cannot be attached to another
patient's consult.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import String, Uuid, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from imaging.index import AddOutcome, DicomIndex
from imaging.ingest import IngestError, Instance
from imaging.intake import WrongStudy, check_and_place
from imaging.steps import Work
from imaging.store import InstanceStore
from server.db import write
from server.models import DICOM, Consult, ConsultStudy, DicomPatientId, Patient, PatientLink
from server.problems import Conflict

# STOW-RS / DIMSE failure reasons (PS3.18 Table I.2-1; PS3.4 Annex B).
FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DOES_NOT_MATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000


class Verdict(enum.Enum):
    STORED = "stored"
    ALREADY_STORED = "already-stored"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Received:
    """A file streamed in, not yet checked nor synced."""

    path: Path
    sha256: str
    size: int


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the instance exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Accepted:
    verdict: Verdict
    instance: Instance | None = None
    reason: int = 0  # failure reason when refused
    code: str = ""  # a stable code for the refusal ("dicom-truncated", "duplicate"...)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is not Verdict.REFUSED


log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


@dataclass(slots=True)
class Archive:
    index: DicomIndex
    store: InstanceStore
    max_instance_bytes: int
    #: Key of the UIDs and pseudonyms of studies shared outside the consortium.
    pseudonym_key: bytes = b"\x00" * 32
    #: Ingest processes for when several instances arrive at once (None: threads only).
    processes: Executor | None = None
    #: How many instances were checked in an ingest process.
    checked_in_processes: int = 0
    _checking: int = 0

    # -- receiving ---------------------------------------------------------------------

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream ``chunks`` to a temporary file, hashing as they come; over the limit or
        broken off, nothing is left behind. The file is synced when accepted, not here."""
        tmp = self.store.temp_path()
        digest = hashlib.sha256()
        size = 0
        fh: BinaryIO = tmp.open("wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_instance_bytes:
                    raise TooLarge(self.max_instance_bytes)
                digest.update(chunk)
                fh.write(chunk)  # page-cache writes; accept() syncs what it keeps
            fh.close()
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
        return Received(tmp, digest.hexdigest(), size)

    async def receive_file(self, path: Path) -> Received:
        """Take a file another component wrote (the DIMSE listener's), hashing it."""

        def run() -> Received:
            digest = hashlib.sha256()
            size = 0
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
                    digest.update(chunk)
            if size > self.max_instance_bytes:
                path.unlink(missing_ok=True)
                raise TooLarge(self.max_instance_bytes)
            return Received(path, digest.hexdigest(), size)

        return await asyncio.to_thread(run)

    # -- accepting ---------------------------------------------------------------------

    async def accept(
        self,
        session: AsyncSession,
        received: Received,
        *,
        owner_id: uuid.UUID,
        expect_study_uid: str | None = None,
        then: Callable[[Instance], Work[Any] | None] | None = None,
    ) -> Accepted:
        """Check, place and index one received file in the caller's transaction.

        The file is checked (:func:`imaging.ingest.ingest`), synced and moved to its content
        address away from the event loop and before the database is touched: in a worker
        thread, or in an ingest process while another instance is being checked (the checking
        is Python, and one process runs Python on one core at a time). Then the index row is
        written, the patient found in the index's own look-up
        (:meth:`imaging.index.DicomIndex.link_patients_by`), and ``then`` (given the instance,
        stored now or before) may add work to the same transaction, such as its audit record.
        On SQLite those statements run in one trip to a worker thread on the session's own
        connection (:func:`server.db.write`); elsewhere they are awaited. The caller commits.
        """
        try:
            instance = await self._check_and_place(received, expect_study_uid)
        except IngestError as exc:
            return Accepted(
                Verdict.REFUSED,
                reason=FAILURE_CANNOT_UNDERSTAND,
                code=f"dicom-{exc.code}",
                message=exc.message,
            )
        except WrongStudy as exc:
            return Accepted(
                Verdict.REFUSED,
                exc.instance,
                reason=FAILURE_DOES_NOT_MATCH,
                code="study-mismatch",
                message="the instance belongs to another study than the one in the URL",
            )
        work = _and_then(
            self.index.adding(
                session.get_bind().dialect.name,
                instance,
                sha256=received.sha256,
                size=received.size,
                owner_id=owner_id,
                patient_params=_patient_params(instance, owner_id),
            ),
            then,
            instance,
        )
        outcome = await write(session, work)
        if outcome is AddOutcome.CONFLICT:
            # The file stays: content-addressed, it may be another instance's bytes too.
            return Accepted(
                Verdict.REFUSED,
                instance,
                reason=FAILURE_DUPLICATE,
                code="duplicate",
                message="an instance with this SOP Instance UID is stored with other content",
            )
        verdict = Verdict.STORED if outcome is AddOutcome.STORED else Verdict.ALREADY_STORED
        return Accepted(verdict, instance)

    async def _check_and_place(self, received: Received, expect_study_uid: str | None) -> Instance:
        args = (self.store, received.path, received.sha256, received.size, expect_study_uid)
        self._checking += 1
        try:
            if self.processes is not None and self._checking > 1:
                try:
                    loop = asyncio.get_running_loop()
                    instance = await loop.run_in_executor(self.processes, check_and_place, *args)
                except BrokenProcessPool:
                    # An ingest process died (killed, out of memory): check this instance and
                    # the next ones in threads rather than fail every instance from now on.
                    log.error("the ingest processes broke; checking DICOM in threads from now on")
                    self.processes = None
                else:
                    self.checked_in_processes += 1
                    return instance
            return await asyncio.to_thread(check_and_place, *args)
        finally:
            self._checking -= 1

    def discard(self, received: Received) -> None:
        received.path.unlink(missing_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.store.path(sha256)


def _patient_of_study() -> ColumnElement[Any]:
    """The patient whose national ID is the instance's Patient ID, if known at the sender; else
    the one the sender's modalities call by this Patient ID (learnt from an earlier study). SQL
    over the parameters :func:`_patient_params` gives: the index evaluates it in its look-up."""
    owner = bindparam("p_owner", None, type_=Uuid, required=False)
    by_national_id = (
        select(Patient.id)
        .join(PatientLink, PatientLink.patient_id == Patient.id)
        .where(
            Patient.national_id == bindparam("p_national_id", None, type_=String, required=False),
            PatientLink.institution_id == owner,
        )
        .scalar_subquery()
    )
    learnt = (
        select(DicomPatientId.patient_id)
        .where(
            DicomPatientId.institution_id == owner,
            DicomPatientId.dicom_patient_id
            == bindparam("p_dicom_id", None, type_=String, required=False),
        )
        .scalar_subquery()
    )
    return func.coalesce(by_national_id, learnt)


DICOM.link_patients_by(_patient_of_study())


def _and_then(
    indexing: Work[AddOutcome],
    then: Callable[[Instance], Work[Any] | None] | None,
    instance: Instance,
) -> Work[AddOutcome]:
    outcome = yield from indexing
    more = then(instance) if then is not None and outcome is not AddOutcome.CONFLICT else None
    if more is not None:
        yield from more
    return outcome


def _patient_params(instance: Instance, owner_id: uuid.UUID) -> dict[str, Any]:
    dicom_id = instance.patient_id.strip()
    if not dicom_id:
        return {}  # every parameter NULL: no patient
    return {
        "p_owner": owner_id,
        "p_dicom_id": dicom_id[:64],
        "p_national_id": dicom_id.upper() if len(dicom_id) == 18 else None,
    }


async def link_to_consult(
    session: AsyncSession, consult: Consult, study_uid: str, user_id: uuid.UUID | None
) -> bool:
    """Attach a study to a consult; False when it was attached already.

    The study's patient becomes the consult's; a study of another patient is refused (409).
    """
    studies = DICOM.studies
    ref = (
        await session.execute(
            select(studies.c.patient_ref, studies.c.owner_id, studies.c.patient_id).where(
                studies.c.study_uid == study_uid
            )
        )
    ).first()
    if ref is None:
        raise Conflict("no such study", code="no-such-study")
    if ref.patient_ref is not None and ref.patient_ref != consult.patient_id:
        raise Conflict(
            "this study belongs to another patient than the consult's",
            code="patient-mismatch",
        )
    exists = await session.get(ConsultStudy, (consult.id, study_uid))
    if exists is not None:
        return False
    if ref.patient_ref is None:
        await session.execute(
            update(studies)
            .where(studies.c.study_uid == study_uid)
            .values(patient_ref=consult.patient_id)
        )
        await _learn_patient_id(session, ref.owner_id, ref.patient_id, consult.patient_id)
    session.add(ConsultStudy(consult_id=consult.id, study_uid=study_uid, linked_by_user_id=user_id))
    await session.flush()
    return True


async def _learn_patient_id(
    session: AsyncSession, owner_id: uuid.UUID, dicom_id: str, patient_id: uuid.UUID
) -> None:
    """Remember what the sender's modalities call this patient (first attachment wins)."""
    if not dicom_id or await session.get(DicomPatientId, (owner_id, dicom_id)) is not None:
        return
    session.add(
        DicomPatientId(institution_id=owner_id, dicom_patient_id=dicom_id, patient_id=patient_id)
    )
