"""Studies go to a partner hospital outside the consortium only as pseudonymised copies."""

from __future__ import annotations

import io
import json
import uuid

import pydicom
from sqlalchemy import select

from server.keys import SESSIONS
from server.models import SharedStudy
from tests.helpers import Api
from tests.imaging.dicomfiles import bundled
from tests.test_consults import _open
from tests.test_dicomweb import multipart, split_multipart, stow, uid, with_new_uids

NAME = "Zhang^San=张三"


async def _partner_specialist(api: Api) -> str:
    status, body = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "shengyi-doc",
            "display_name": "省医院 周教授",
            "institution_id": await api.institution_id("shengyi"),
            "password": "partner-password-1",
            "roles": ["specialist"],
            "centres": ["imaging"],
        },
    )
    assert status == 201, body
    await api.login("shengyi-doc", "partner-password-1")
    return str(await api.institution_id("shengyi"))


def _ct(national_id: str) -> bytes:
    return with_new_uids(
        bundled("CT_small.dcm"),
        PatientName=NAME,
        PatientID=national_id,
        SpecificCharacterSet="ISO_IR 192",
        InstitutionName="城关镇卫生院",
    )


async def test_escalation_shares_pseudonymised_copies_only(api: Api) -> None:
    await _partner_specialist(api)
    consult = await _open(api)
    cid = consult["id"]
    status, patient = await api.get(f"/api/v1/patients/{consult['patient']['id']}", "chengguan")
    national_id = patient["national_id"]
    first = _ct(national_id)
    original = pydicom.dcmread(io.BytesIO(first))
    assert (await stow(api, "chengguan", multipart(first), params={"consult": cid}))[0] == 200
    await api.post(f"/api/v1/consults/{cid}/submit", "chengguan")
    assert (await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={}))[0] == 200
    shengyi = await api.institution_id("shengyi")
    status, body = await api.post(
        f"/api/v1/consults/{cid}/escalate",
        "radiology",
        json={"institution_id": shengyi, "note": "请省医院会诊"},
    )
    assert status == 200, body

    status, listing = await api.get(f"/api/v1/consults/{cid}/studies", "shengyi-doc")
    assert status == 200, listing
    (shared,) = listing["items"]
    assert shared["study_uid"] != original.StudyInstanceUID
    status, found = await api.get("/dicomweb/studies", "shengyi-doc")
    assert [uid(s, "0020000D") for s in found] == [shared["study_uid"]]
    status, _ = await api.get(
        f"/dicomweb/studies/{original.StudyInstanceUID}/metadata", "shengyi-doc"
    )
    assert status == 404  # never the original

    status, meta = await api.get(f"/dicomweb/studies/{shared['study_uid']}/metadata", "shengyi-doc")
    assert status == 200
    text = json.dumps(meta, ensure_ascii=False)
    for secret in ("张三", "Zhang", national_id, "城关镇", original.SOPInstanceUID):
        assert secret not in text, secret
    pseudonym = meta[0]["00100010"]["Value"][0]["Alphabetic"]
    assert pseudonym.startswith("HZ-")
    assert meta[0]["00120062"]["Value"] == ["YES"]  # Patient Identity Removed

    series = meta[0]["0020000E"]["Value"][0]
    sop = meta[0]["00080018"]["Value"][0]
    resp = await api.client.get(
        f"/dicomweb/studies/{shared['study_uid']}/series/{series}/instances/{sop}",
        headers=await api.headers("shengyi-doc"),
    )
    (data,) = split_multipart(await resp.read(), resp.headers["Content-Type"])
    for secret in (
        "张三".encode(),
        b"Zhang",
        national_id.encode(),
        original.SOPInstanceUID.encode(),
    ):
        assert secret not in data

    # A study attached after the escalation is shared too, under the same pseudonym.
    later = _ct(national_id)
    assert (await stow(api, "chengguan", multipart(later), params={"consult": cid}))[0] == 200
    status, listing = await api.get(f"/api/v1/consults/{cid}/studies", "shengyi-doc")
    assert len(listing["items"]) == 2
    # The consortium side keeps seeing the originals only.
    status, found = await api.get("/dicomweb/studies", "chengguan")
    assert shared["study_uid"] not in [uid(s, "0020000D") for s in found]
    status, listing = await api.get(f"/api/v1/consults/{cid}/studies", "radiology")
    assert original.StudyInstanceUID in [s["study_uid"] for s in listing["items"]]

    # The mapping back stays with us.
    async with api.client.app[SESSIONS]() as db:
        rows = list(
            await db.scalars(select(SharedStudy).where(SharedStudy.consult_id == uuid.UUID(cid)))
        )
    assert {r.original_study_uid for r in rows} >= {original.StudyInstanceUID}
    mapping = next(r for r in rows if r.original_study_uid == original.StudyInstanceUID)
    assert mapping.copy_study_uid == shared["study_uid"]
    assert mapping.uid_map[original.SOPInstanceUID] == sop
    assert {r.pseudonym for r in rows} == {pseudonym}
