"""Two-way referral: up from the station, down from the centre; accepted, declined, completed."""

from __future__ import annotations

from typing import Any

from tests.helpers import Api


async def _reported(
    api: Api, direction: str, station: str = "jiaji", name: str = "王秀英"
) -> dict[str, Any]:
    _, found = await api.get(f"/api/v1/patients?name={name}", station)
    _, consult = await api.post(
        "/api/v1/consults",
        station,
        json={"patient_id": found["items"][0]["id"], "centre": "consultation", "question": "?"},
    )
    cid = consult["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "consult", json={})
    content = {
        "kind": "consultation",
        "assessment": "急性冠脉综合征可能",
        "referral": {"direction": direction, "green_channel": direction == "up"},
    }
    _, draft = await api.post(
        f"/api/v1/consults/{cid}/reports", "consult", json={"content": content}
    )
    assert (await api.post(f"/api/v1/reports/{draft['id']}/sign", "consult"))[0] == 200
    return dict(consult)


async def test_upward_referral_accepted_by_the_lead_hospital(api: Api) -> None:
    consult = await _reported(api, "up")
    lead = await api.institution_id("xrmyy")
    status, referral = await api.post(
        f"/api/v1/consults/{consult['id']}/referrals",
        "jiaji",
        json={
            "direction": "up",
            "to_institution_id": lead,
            "reason": "需要急诊PCI",
            "green_channel": True,
        },
    )
    assert status == 201, referral
    assert referral["state"] == "requested"
    _, incoming = await api.get("/api/v1/referrals?box=incoming", "coordinator")
    assert [r["id"] for r in incoming["items"]] == [referral["id"]]
    # The receiving desk sees who is coming and who sent them.
    assert incoming["items"][0]["patient"]["name"] == "王秀英"
    assert incoming["items"][0]["created_by_name"] == "贾集村 张医生"
    # One open referral per direction.
    status, again = await api.post(
        f"/api/v1/consults/{consult['id']}/referrals",
        "jiaji",
        json={"direction": "up", "to_institution_id": lead, "reason": "重复"},
    )
    assert status == 409
    assert again["referral_id"] == referral["id"]
    # A specialist of the lead hospital neither answers nor sees incoming referrals;
    # the coordinators, the admissions desk of the centres, do.
    status, _ = await api.post(f"/api/v1/referrals/{referral['id']}/accept", "consult", json={})
    assert status == 404
    # The sender cannot accept its own referral.
    assert (await api.post(f"/api/v1/referrals/{referral['id']}/accept", "jiaji", json={}))[
        0
    ] == 403
    status, accepted = await api.post(
        f"/api/v1/referrals/{referral['id']}/accept", "coordinator", json={"note": "绿色通道已开放"}
    )
    assert status == 200
    assert accepted["state"] == "accepted"
    _, feed = await api.get("/api/v1/events", "jiaji")
    assert "referral.accepted" in [e["type"] for e in feed["items"]]
    status, done = await api.post(
        f"/api/v1/referrals/{referral['id']}/complete", "coordinator", json={}
    )
    assert status == 200
    assert [s["action"] for s in done["timeline"]] == ["open", "accept", "complete"]
    # Once completed, nothing more.
    assert (await api.post(f"/api/v1/referrals/{referral['id']}/decline", "coordinator", json={}))[
        0
    ] == 409


async def test_downward_referral_links_the_patient_at_the_receiving_station(api: Api) -> None:
    consult = await _reported(api, "down")
    huji = await api.institution_id("huji")
    status, referral = await api.post(
        f"/api/v1/consults/{consult['id']}/referrals",
        "coordinator",
        json={"direction": "down", "to_institution_id": huji, "reason": "病情稳定，下转康复"},
    )
    assert status == 201, referral
    status, _ = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "huji-doc",
            "display_name": "胡集乡 医生",
            "institution_id": huji,
            "password": "huji-password-1",
            "roles": ["grassroots_doctor"],
        },
    )
    await api.login("huji-doc", "huji-password-1")
    # 胡集乡卫生院 already oversees 贾集村卫生室, so it sees 王秀英 and the referral.
    status, _ = await api.post(f"/api/v1/referrals/{referral['id']}/accept", "huji-doc", json={})
    assert status == 200
    pid = consult["patient"]["id"]
    _, patient = await api.get(f"/api/v1/patients/{pid}", "huji-doc")
    assert huji in patient["institution_ids"]


async def test_referral_rules(api: Api) -> None:
    consult = await _reported(api, "up")
    cid = consult["id"]
    lead = await api.institution_id("xrmyy")
    huji = await api.institution_id("huji")
    chengguan = await api.institution_id("chengguan")
    # The report advises up, not down.
    status, _ = await api.post(
        f"/api/v1/consults/{cid}/referrals",
        "coordinator",
        json={"direction": "down", "to_institution_id": huji, "reason": "x"},
    )
    assert status == 409
    # Up from a village clinic: to a hospital or its own township, not another township.
    status, problem = await api.post(
        f"/api/v1/consults/{cid}/referrals",
        "jiaji",
        json={"direction": "up", "to_institution_id": chengguan, "reason": "x"},
    )
    assert status == 422
    assert problem["field"] == "to_institution_id"
    status, to_township = await api.post(
        f"/api/v1/consults/{cid}/referrals",
        "jiaji",
        json={"direction": "up", "to_institution_id": huji, "reason": "转乡卫生院观察"},
    )
    assert status == 201
    # Others do not see it.
    assert (await api.get(f"/api/v1/referrals/{to_township['id']}", "chengguan"))[0] == 404
    # The sender may cancel while requested; then it is final.
    assert (await api.post(f"/api/v1/referrals/{to_township['id']}/cancel", "jiaji", json={}))[
        0
    ] == 200
    assert (await api.post(f"/api/v1/referrals/{to_township['id']}/cancel", "jiaji", json={}))[
        0
    ] == 409
    # A consult without a signed report refers nobody.
    _, found = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    _, fresh = await api.post(
        "/api/v1/consults",
        "jiaji",
        json={"patient_id": found["items"][0]["id"], "centre": "ecg", "question": "?"},
    )
    status, _ = await api.post(
        f"/api/v1/consults/{fresh['id']}/referrals",
        "jiaji",
        json={"direction": "up", "to_institution_id": lead, "reason": "x"},
    )
    assert status == 409
