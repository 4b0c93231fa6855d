"""Patients: registration, the consortium-wide national ID, visibility, changes and their audit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from server.identity import make_national_id
from tests.helpers import Api


def _nid(seq: int, born: dt.date = dt.date(1980, 2, 29)) -> str:
    return make_national_id("411625", born, seq)


async def _audit(api: Api, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = await api.get(f"/api/v1/audit?{query}", "supervisor")
    assert status == 200
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_register_derives_sex_and_birth_date_from_the_id(api: Api) -> None:
    status, p = await api.post(
        "/api/v1/patients", "jiaji", json={"national_id": _nid(11), "name": "周建华"}
    )
    assert status == 201
    assert p["sex"] == "male" and p["birth_date"] == "1980-02-29"
    assert p["linked_existing"] is False
    jiaji = await api.institution_id("jiaji")
    assert p["institution_ids"] == [jiaji] and p["registered_by_institution_id"] == jiaji
    events = await _audit(api, patient_id=p["id"])
    assert [(e["action"], e["actor_username"], e["outcome"]) for e in events] == [
        ("patient.create", "jiaji", "ok")
    ]


async def test_lower_case_x_is_normalised(api: Api) -> None:
    nid = "11010519491231002X"
    status, p = await api.post(
        "/api/v1/patients", "baji", json={"national_id": nid.lower(), "name": "钱小红"}
    )
    assert status == 201 and p["national_id"] == nid


async def test_same_id_elsewhere_links_the_existing_record(api: Api) -> None:
    body = {"national_id": _nid(13), "name": "周建华"}
    status, first = await api.post("/api/v1/patients", "jiaji", json=body)
    assert status == 201
    status, linked = await api.post("/api/v1/patients", "chengguan", json=body)
    assert status == 201
    assert linked["id"] == first["id"] and linked["linked_existing"] is True
    assert len(linked["institution_ids"]) == 2
    # Registered twice at the same place: a conflict naming the existing record.
    status, problem = await api.post("/api/v1/patients", "chengguan", json=body)
    assert status == 409 and problem["patient_id"] == first["id"]
    # Another name under the same ID: refused without revealing the record.
    status, problem = await api.post(
        "/api/v1/patients", "baji", json={"national_id": _nid(13), "name": "周建国"}
    )
    assert status == 409
    assert "周建华" not in str(problem) and first["id"] not in str(problem)
    status, found = await api.get(f"/api/v1/patients?national_id={_nid(13)}", "baji")
    assert status == 200 and found["total"] == 0


async def test_given_sex_or_birth_date_must_agree_with_the_id(api: Api) -> None:
    for extra in ({"sex": "female"}, {"birth_date": "1980-03-01"}):
        status, problem = await api.post(
            "/api/v1/patients", "jiaji", json={"national_id": _nid(15), "name": "周建华", **extra}
        )
        assert status == 422, extra
        assert problem["code"] == "validation"
    status, _ = await api.post(
        "/api/v1/patients",
        "jiaji",
        json={"national_id": _nid(15), "name": "周建华", "sex": "male", "birth_date": "1980-02-29"},
    )
    assert status == 201


async def test_search_by_name_prefix_is_scoped_and_audited_per_hit(api: Api) -> None:
    status, body = await api.get("/api/v1/patients?name=王", "jiaji")
    assert status == 200
    assert [p["name"] for p in body["items"]] == ["王秀英"]
    status, body = await api.get("/api/v1/patients?name=王", "chengguan")
    assert body["items"] == [] and body["total"] == 0
    # A LIKE wildcard in the query is a literal character, not a pattern.
    status, body = await api.get("/api/v1/patients?name=%25", "jiaji")
    assert status == 200 and body["total"] == 0
    events = await _audit(api, action="patient.search", actor="jiaji")
    assert len(events) == 1


async def test_paging(api: Api) -> None:
    for seq in (21, 23, 25):
        assert (
            await api.post(
                "/api/v1/patients", "jiaji", json={"national_id": _nid(seq), "name": "分页"}
            )
        )[0] == 201
    status, page = await api.get("/api/v1/patients?name=分页&limit=2&offset=0", "jiaji")
    assert status == 200 and page["total"] == 3 and len(page["items"]) == 2
    status, rest = await api.get("/api/v1/patients?name=分页&limit=2&offset=2", "jiaji")
    assert len(rest["items"]) == 1
    ids = {p["id"] for p in page["items"]} | {p["id"] for p in rest["items"]}
    assert len(ids) == 3


async def test_update_with_version_and_audit_of_fields_only(api: Api) -> None:
    status, p = await api.post(
        "/api/v1/patients", "jiaji", json={"national_id": _nid(17), "name": "周建华"}
    )
    status, updated = await api.patch(
        f"/api/v1/patients/{p['id']}",
        "jiaji",
        json={"phone": "13912345678", "version": p["version"]},
    )
    assert status == 200 and updated["phone"] == "13912345678"
    assert updated["version"] == p["version"] + 1
    status, _stale = await api.patch(
        f"/api/v1/patients/{p['id']}",
        "jiaji",
        json={"phone": "13900000000", "version": p["version"]},
    )
    assert status == 409
    status, now = await api.get(f"/api/v1/patients/{p['id']}", "jiaji")
    assert now["phone"] == "13912345678"
    events = await _audit(api, patient_id=p["id"], action="patient.update")
    assert events[0]["detail"] == {
        "fields": [
            "phone",
        ]
    }
    assert "13912345678" not in str(events)


async def test_national_id_cannot_be_changed(api: Api) -> None:
    status, body = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    pid = body["items"][0]["id"]
    status, problem = await api.patch(
        f"/api/v1/patients/{pid}", "jiaji", json={"national_id": _nid(19)}
    )
    assert status == 422
    assert problem["errors"][0]["loc"] == ["body", "national_id"]


async def test_reads_and_refusals_are_audited(api: Api) -> None:
    _status, body = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    pid = body["items"][0]["id"]
    assert (await api.get(f"/api/v1/patients/{pid}", "jiaji"))[0] == 200
    assert (await api.get(f"/api/v1/patients/{pid}", "baji"))[0] == 404
    events = await _audit(api, patient_id=pid, action="patient.read")
    assert sorted((e["actor_username"], e["outcome"]) for e in events) == [
        ("baji", "denied"),
        ("jiaji", "ok"),
    ]
    for e in events:
        assert e["client_address"] and e["request_id"]


async def test_audit_trail_is_searchable_and_paged(api: Api) -> None:
    for _ in range(3):
        await api.get("/api/v1/auth/me", "admin")
    await api.get("/api/v1/patients?name=王", "jiaji")
    status, page = await api.get("/api/v1/audit?limit=1", "admin")
    assert status == 200 and len(page["items"]) == 1 and page["next_before_id"]
    status, older = await api.get(
        f"/api/v1/audit?limit=1&before_id={page['next_before_id']}", "admin"
    )
    assert older["items"][0]["id"] < page["items"][0]["id"]
    # Reading the trail is itself recorded.
    status, searches = await api.get("/api/v1/audit?action=audit.search&actor=admin", "admin")
    assert len(searches["items"]) >= 2
