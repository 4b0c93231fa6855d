"""Every input can be wrong: each bad request gets a clear 4xx problem and changes nothing."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from server.db import make_engine, make_sessionmaker, unit_of_work
from server.models import AuditEvent, AuthSession, Institution, Patient, PatientLink, User
from server.settings import Settings
from tests.helpers import Api

VALID = {"national_id": "11010519491231002X", "name": "钱小红"}


async def _counts(settings: Settings) -> dict[str, int]:
    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            return {
                model.__tablename__: int(
                    await db.scalar(select(func.count()).select_from(model)) or 0
                )
                for model in (Patient, PatientLink, User, Institution, AuthSession, AuditEvent)
            }
    finally:
        await engine.dispose()


BAD_PATIENT_BODIES: list[tuple[str, bytes, str, int, str]] = [
    ("not json", b"{national_id: 1", "application/json", 400, "malformed-json"),
    ("empty body", b"", "application/json", 400, "malformed-json"),
    ("invalid utf-8", b'{"name": "\xff\xfe"}', "application/json", 400, "malformed-json"),
    ("a list", b"[]", "application/json", 422, "validation"),
    (
        "wrong type",
        json.dumps({**VALID, "name": 42}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "numeric id",
        json.dumps({**VALID, "national_id": 110105194912310020}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "unknown field",
        json.dumps({**VALID, "is_vip": True}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "bad checksum",
        json.dumps({**VALID, "national_id": "110105194912310021"}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "short id",
        json.dumps({**VALID, "national_id": "11010519491231"}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "impossible date",
        json.dumps({**VALID, "national_id": "110105194902300024"}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "name with digits",
        json.dumps({**VALID, "name": "钱1"}).encode(),
        "application/json",
        422,
        "validation",
    ),
    (
        "missing name",
        json.dumps({"national_id": VALID["national_id"]}).encode(),
        "application/json",
        422,
        "validation",
    ),
    ("form encoded", b"name=x", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
    (
        "control chars",
        json.dumps({**VALID, "name": "钱\u0000"}).encode(),
        "application/json",
        422,
        "validation",
    ),
]


@pytest.mark.parametrize(
    ("case", "raw", "ctype", "status", "code"),
    BAD_PATIENT_BODIES,
    ids=[c[0] for c in BAD_PATIENT_BODIES],
)
async def test_bad_patient_bodies(
    api: Api, settings: Settings, case: str, raw: bytes, ctype: str, status: int, code: str
) -> None:
    headers = {**await api.headers("jiaji"), "Content-Type": ctype}
    before = await _counts(settings)
    resp = await api.client.post("/api/v1/patients", data=raw, headers=headers)
    assert resp.status == status, case
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    problem = await resp.json()
    assert problem["code"] == code and problem["status"] == status
    assert problem["request_id"] == resp.headers["X-Request-ID"]
    # The problem never echoes the submitted values (they may be patient data).
    assert "钱小红" not in json.dumps(problem, ensure_ascii=False)
    assert await _counts(settings) == before


async def test_oversized_body_is_refused(api: Api, settings: Settings) -> None:
    headers = await api.headers("jiaji")
    before = await _counts(settings)
    big = json.dumps({**VALID, "phone": "1" * (settings.max_body_bytes + 10)}).encode()
    status, problem = await api.post(
        "/api/v1/patients",
        headers={**headers, "Content-Type": "application/json"},
        data=io.BytesIO(big),
    )
    assert status == 413
    assert problem["code"] == "payload-too-large"
    assert await _counts(settings) == before
    # The server keeps serving.
    assert (await api.get("/api/v1/auth/me", headers=headers))[0] == 200


async def test_unknown_institution_is_refused(api: Api, settings: Settings) -> None:
    await api.headers("admin")  # sign in before counting
    before = await _counts(settings)
    status, problem = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "ghost",
            "display_name": "幽灵",
            "institution_id": "00000000-0000-4000-8000-000000000000",
            "password": "a-long-password-1",
            "roles": ["grassroots_doctor"],
        },
    )
    assert status == 422 and problem["field"] == "institution_id"
    status, problem = await api.post(
        "/api/v1/institutions",
        "admin",
        json={
            "code": "orphan",
            "name_zh": "孤儿村卫生室",
            "kind": "village_clinic",
            "parent_id": "00000000-0000-4000-8000-000000000000",
        },
    )
    assert status == 422 and problem["field"] == "parent_id"
    assert (await api.get("/api/v1/institutions/00000000-0000-4000-8000-000000000000", "admin"))[
        0
    ] == 404
    assert await _counts(settings) == before


async def test_tier_rules_for_institutions_and_roles(api: Api, settings: Settings) -> None:
    lead = await api.institution_id("xrmyy")
    jiaji = await api.institution_id("jiaji")
    before = await _counts(settings)
    bad: list[dict[str, Any]] = [
        {"code": "v1", "name_zh": "村卫生室", "kind": "village_clinic", "parent_id": lead},
        {"code": "l2", "name_zh": "医院", "kind": "lead_hospital", "parent_id": lead},
        {"code": "t3", "name_zh": "卫生院", "kind": "township_health_centre"},
    ]
    for body in bad:
        assert (await api.post("/api/v1/institutions", "admin", json=body))[0] == 422, body
    users: list[dict[str, Any]] = [
        {"roles": ["specialist"], "centres": ["ecg"], "institution_id": jiaji},
        {"roles": ["specialist"], "institution_id": lead},
        {"roles": ["grassroots_doctor"], "institution_id": lead},
        {"roles": ["supervisor"], "centres": ["lab"], "institution_id": lead},
    ]
    for extra in users:
        body = {
            "username": "wrong",
            "display_name": "错误",
            "password": "a-long-password-1",
            **extra,
        }
        assert (await api.post("/api/v1/users", "admin", json=body))[0] == 422, extra
    assert await _counts(settings) == before


async def test_bad_query_and_path_values(api: Api) -> None:
    assert (await api.get("/api/v1/patients?limit=0", "jiaji"))[0] == 422
    assert (await api.get("/api/v1/patients?limit=abc", "jiaji"))[0] == 422
    assert (await api.get("/api/v1/patients?colour=red", "jiaji"))[0] == 422
    assert (await api.get("/api/v1/audit?outcome=maybe", "admin"))[0] == 422
    assert (await api.get("/api/v1/audit?since=yesterday", "admin"))[0] == 422
    status, problem = await api.get("/api/v1/patients/not-a-uuid", "jiaji")
    assert status == 404 and problem["code"] == "not-found"
    assert (await api.get("/api/v1/auth/me?x=1", "jiaji"))[0] == 422


async def test_duplicate_username_and_code(api: Api, settings: Settings) -> None:
    lead = await api.institution_id("xrmyy")
    before = await _counts(settings)
    status, problem = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "jiaji",
            "display_name": "重复",
            "institution_id": lead,
            "password": "a-long-password-1",
            "roles": ["supervisor"],
        },
    )
    assert status == 409 and problem["code"] == "conflict"
    status, _ = await api.post(
        "/api/v1/institutions",
        "admin",
        json={"code": "xrmyy", "name_zh": "重复医院", "kind": "partner_hospital"},
    )
    assert status == 409
    assert await _counts(settings) == before


async def test_login_body_errors(api: Api) -> None:
    for raw in (b"{", b'{"username": "a"}', b'{"username": 1, "password": "x"}'):
        resp = await api.client.post(
            "/api/v1/auth/login", data=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status in (400, 422)
        assert resp.headers["Content-Type"].startswith("application/problem+json")
