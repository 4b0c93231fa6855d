"""Studies shared with a partner hospital outside the consortium go pseudonymised.

When a consult is escalated to a partner hospital, every study attached to it (then, or later)
is copied with the DICOM PS3.15 basic confidentiality profile (:mod:`imaging.deid`): names, IDs,
dates of birth, institutions and the like removed or replaced, UIDs replaced by ones derived with
a key only this server holds (the same study shared twice gives the same copy), the patient
called by a pseudonym. The copy belongs to the partner hospital, which sees only copies and never
the originals; the mapping between them stays here (``shared_studies``). Instances whose pixels
carry burned-in annotation are left out and counted, not sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from imaging.deid import DeidError, Pseudonymised, pseudonymise
from server.archive import Archive, Received
from server.models import DICOM, Consult, Institution, InstitutionKind, SharedStudy

log = logging.getLogger(__name__)


def pseudonym_for(key: bytes, consult: Consult) -> str:
    """The patient's name towards the partner: stable per patient, meaningless outside."""
    digest = hmac.new(key, b"patient:" + consult.patient_id.bytes, hashlib.sha256).hexdigest()
    return f"HZ-{digest[:12].upper()}"


async def _partner(session: AsyncSession, consult: Consult) -> Institution | None:
    if consult.escalated_to_institution_id is None:
        return None
    partner = await session.get(Institution, consult.escalated_to_institution_id)
    if partner is None or partner.kind is not InstitutionKind.PARTNER_HOSPITAL:
        return None
    return partner


async def share_study(
    session: AsyncSession, archive: Archive, consult: Consult, study_uid: str
) -> SharedStudy | None:
    """Copy one attached study for the consult's partner hospital, once; ``None`` when the consult
    is not escalated to a partner. Runs in the caller's transaction."""
    partner = await _partner(session, consult)
    if partner is None:
        return None
    existing = await session.scalar(
        select(SharedStudy).where(
            SharedStudy.consult_id == consult.id, SharedStudy.original_study_uid == study_uid
        )
    )
    if existing is not None:
        return existing
    i = DICOM.instances
    rows = (
        await session.execute(
            select(i.c.sop_instance_uid, i.c.sha256).where(i.c.study_uid == study_uid)
        )
    ).all()
    pseudonym = pseudonym_for(archive.pseudonym_key, consult)
    uid_map: dict[str, Any] = {}
    copy_uid = ""
    skipped = 0
    for row in rows:
        try:
            done = await asyncio.to_thread(
                _pseudonymised, archive.path_of(row.sha256), archive.pseudonym_key, pseudonym
            )
        except DeidError as exc:
            log.info("sharing: an instance was left out (%s)", exc.code)
            skipped += 1
            continue
        received = await _stage(archive, done.data)
        accepted = await archive.accept(session, received, owner_id=partner.id)
        if not accepted.ok or accepted.instance is None:
            skipped += 1
            continue
        uid_map.update(done.uid_map)
        copy_uid = accepted.instance.study_uid
    if not copy_uid:
        return None
    shared = SharedStudy(
        consult_id=consult.id,
        original_study_uid=study_uid,
        copy_study_uid=copy_uid,
        partner_institution_id=partner.id,
        pseudonym=pseudonym,
        uid_map=uid_map,
        skipped=skipped,
    )
    session.add(shared)
    await session.flush()
    return shared


def _pseudonymised(path: Path, key: bytes, pseudonym: str) -> Pseudonymised:
    return pseudonymise(path.read_bytes(), key=key, pseudonym=pseudonym)


async def _stage(archive: Archive, data: bytes) -> Received:
    tmp = archive.store.temp_path()
    await asyncio.to_thread(tmp.write_bytes, data)
    return Received(tmp, hashlib.sha256(data).hexdigest(), len(data))
