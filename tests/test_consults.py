"""The consult journey end to end through the API, its state machine, claims and reports."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import Api


async def _patient(api: Api, user: str = "chengguan", name: str = "张桂兰") -> str:
    status, body = await api.get(f"/api/v1/patients?name={name}", user)
    assert status == 200
    assert body["total"] == 1
    return str(body["items"][0]["id"])


async def _open(
    api: Api, centre: str = "imaging", priority: str = "urgent", **extra: Any
) -> dict[str, Any]:
    patient = await _patient(api)
    status, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={
            "patient_id": patient,
            "centre": centre,
            "priority": priority,
            "question": "胸片示右下肺阴影，请协助诊断",
            **extra,
        },
    )
    assert status == 201, consult
    return dict(consult)


IMAGING_REPORT = {
    "content": {
        "kind": "imaging",
        "modality": "DX",
        "body_part": "胸部",
        "findings": "右下肺见斑片状高密度影，边界模糊。",
        "impression": "右下肺炎，建议抗感染治疗后复查。",
        "recommendation": "两周后复查胸片。",
    }
}


async def test_full_journey_with_events(api: Api) -> None:
    consult = await _open(api)
    cid = consult["id"]
    assert consult["state"] == "submitted"
    assert consult["due_at"] is not None
    assert [t["action"] for t in consult["timeline"]] == ["create", "submit"]

    # The imaging centre sees it on its worklist with the urgent target (30 minutes).
    status, worklist = await api.get("/api/v1/centres/imaging/worklist", "radiology")
    assert status == 200
    item = next(i for i in worklist["items"] if i["consult"]["id"] == cid)
    assert item["target_minutes"] == 30
    assert 0 < item["seconds_left"] <= 30 * 60
    assert item["overdue"] is False

    status, claimed = await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    assert status == 200, claimed
    assert claimed["state"] == "claimed"

    status, draft = await api.post(
        f"/api/v1/consults/{cid}/reports", "radiology", json=IMAGING_REPORT
    )
    assert status == 201, draft
    assert draft["state"] == "draft"
    # A draft stays inside the centre.
    assert (await api.get(f"/api/v1/reports/{draft['id']}", "chengguan"))[0] == 404
    edited = {"content": {**IMAGING_REPORT["content"], "impression": "右下肺炎。"}}
    status, draft = await api.patch(f"/api/v1/reports/{draft['id']}", "radiology", json=edited)
    assert status == 200
    status, signed = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    assert status == 200, signed
    assert signed["state"] == "signed"
    assert len(signed["sha256"]) == 64

    # The requesting doctor's feed has the signed report, in order, once.
    status, feed = await api.get("/api/v1/events", "chengguan")
    assert status == 200
    mine = [e for e in feed["items"] if e["consult_id"] == cid]
    # Each once, though each reached both the doctor's own and the station's stream.
    assert [e["type"] for e in mine] == ["consult.claimed", "report.signed"]
    assert "张桂兰" not in str(feed)
    last = feed["items"][-1]["id"]
    status, ack = await api.post("/api/v1/events/ack", "chengguan", json={"up_to": last})
    assert status == 200
    assert ack["acked_id"] == last
    status, again = await api.get("/api/v1/events", "chengguan")
    assert again["items"] == []

    # The doctor reads and acknowledges the report.
    status, report = await api.get(f"/api/v1/reports/{signed['id']}", "chengguan")
    assert status == 200
    assert report["content"]["impression"] == "右下肺炎。"
    status, done = await api.post(f"/api/v1/consults/{cid}/acknowledge", "chengguan", json={})
    assert status == 200
    assert done["state"] == "acknowledged"
    assert [t["action"] for t in done["timeline"]] == [
        "create",
        "submit",
        "claim",
        "report",
        "acknowledge",
    ]
    # It has left the worklist.
    status, worklist = await api.get("/api/v1/centres/imaging/worklist", "radiology")
    assert cid not in {i["consult"]["id"] for i in worklist["items"]}


async def test_worklist_orders_by_priority_then_waiting_time(api: Api) -> None:
    routine = await _open(api, priority="routine")
    stat = await _open(api, priority="stat")
    urgent1 = await _open(api, priority="urgent")
    urgent2 = await _open(api, priority="urgent")
    _status, worklist = await api.get("/api/v1/centres/imaging/worklist", "radiology")
    order = [i["consult"]["id"] for i in worklist["items"]]
    assert order == [stat["id"], urgent1["id"], urgent2["id"], routine["id"]]


async def test_illegal_transitions_are_409_and_change_nothing(api: Api) -> None:
    consult = await _open(api)
    cid = consult["id"]
    status, problem = await api.post(f"/api/v1/consults/{cid}/acknowledge", "chengguan", json={})
    assert status == 409
    assert problem["code"] == "illegal-transition"
    assert problem["state"] == "submitted"
    assert "claim" in problem["allowed"]
    # A report on an unclaimed consult.
    status, _ = await api.post(f"/api/v1/consults/{cid}/reports", "radiology", json=IMAGING_REPORT)
    assert status == 409
    status, now = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert now["state"] == "submitted"
    assert now["version"] == consult["version"]


async def test_claims_belong_to_their_specialist(api: Api) -> None:
    consult = await _open(api, centre="consultation")
    cid = consult["id"]
    assert (await api.post(f"/api/v1/consults/{cid}/claim", "consult", json={}))[0] == 200
    # neuro is also a consultation-centre specialist, but the claim is consult's.
    status, _ = await api.post(f"/api/v1/consults/{cid}/claim", "neuro", json={})
    assert status == 409
    status, _ = await api.post(f"/api/v1/consults/{cid}/release", "neuro", json={})
    assert status == 403
    body = {"content": {"kind": "consultation", "assessment": "x"}}
    assert (await api.post(f"/api/v1/consults/{cid}/reports", "neuro", json=body))[0] == 403
    # Another centre's specialist does not even see it.
    assert (await api.get(f"/api/v1/consults/{cid}", "radiology"))[0] == 404
    # The wrong kind of report for the centre.
    status, _problem = await api.post(
        f"/api/v1/consults/{cid}/reports", "consult", json=IMAGING_REPORT
    )
    assert status == 422
    # Release, then neuro may claim; the requesting station hears of the release.
    assert (await api.post(f"/api/v1/consults/{cid}/release", "consult", json={}))[0] == 200
    _, station_feed = await api.get("/api/v1/events?after=0", "chengguan")
    assert "consult.released" in [e["type"] for e in station_feed["items"]]
    assert (await api.post(f"/api/v1/consults/{cid}/claim", "neuro", json={}))[0] == 200


async def test_concurrent_claims_one_wins(api: Api) -> None:
    consult = await _open(api, centre="consultation")
    cid = consult["id"]
    await api.headers("consult")
    await api.headers("neuro")
    results = await asyncio.gather(
        api.post(f"/api/v1/consults/{cid}/claim", "consult", json={}),
        api.post(f"/api/v1/consults/{cid}/claim", "neuro", json={}),
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409]
    _status, now = await api.get(f"/api/v1/consults/{cid}", "coordinator")
    winner = next(body for status, body in results if status == 200)
    assert now["assignee_user_id"] == winner["assignee_user_id"]
    assert [t["action"] for t in now["timeline"]].count("claim") == 1


async def test_return_for_information_and_resubmit(api: Api) -> None:
    cid = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    assert (await api.post(f"/api/v1/consults/{cid}/return", "radiology", json={}))[0] == 422
    status, returned = await api.post(
        f"/api/v1/consults/{cid}/return", "radiology", json={"note": "请补充侧位片"}
    )
    assert status == 200
    assert returned["state"] == "returned"
    status, feed = await api.get("/api/v1/events", "chengguan")
    assert "consult.returned" in [e["type"] for e in feed["items"]]
    status, again = await api.post(f"/api/v1/consults/{cid}/submit", "chengguan", json={})
    assert status == 200
    assert again["state"] == "submitted"
    assert again["assignee_user_id"] is None


async def test_cancel_only_before_claim_and_only_by_requester(api: Api) -> None:
    cid = (await _open(api))["id"]
    assert (await api.post(f"/api/v1/consults/{cid}/cancel", "radiology", json={}))[0] == 403
    assert (await api.post(f"/api/v1/consults/{cid}/cancel", "chengguan", json={}))[0] == 200
    cid2 = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid2}/claim", "radiology", json={})
    assert (await api.post(f"/api/v1/consults/{cid2}/cancel", "chengguan", json={}))[0] == 409


async def test_reassign_by_coordinator(api: Api) -> None:
    cid = (await _open(api, centre="consultation"))["id"]
    status, users = await api.get("/api/v1/users?role=specialist", "admin")
    neuro = next(u["id"] for u in users["items"] if u["username"] == "neuro")
    radiology = next(u["id"] for u in users["items"] if u["username"] == "radiology")
    assert (
        await api.post(
            f"/api/v1/consults/{cid}/reassign", "coordinator", json={"assignee_id": radiology}
        )
    )[0] == 422
    assert (
        await api.post(f"/api/v1/consults/{cid}/reassign", "consult", json={"assignee_id": neuro})
    )[0] == 403
    status, moved = await api.post(
        f"/api/v1/consults/{cid}/reassign", "coordinator", json={"assignee_id": neuro}
    )
    assert status == 200
    assert moved["assignee_user_id"] == neuro
    status, feed = await api.get("/api/v1/events", "neuro")
    assert "consult.assigned" in [e["type"] for e in feed["items"]]


async def test_signed_report_is_frozen_and_amended_as_a_new_version(api: Api) -> None:
    cid = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    _, draft = await api.post(f"/api/v1/consults/{cid}/reports", "radiology", json=IMAGING_REPORT)
    _, signed = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    assert (await api.patch(f"/api/v1/reports/{signed['id']}", "radiology", json=IMAGING_REPORT))[
        0
    ] == 409
    assert (await api.post(f"/api/v1/reports/{signed['id']}/sign", "radiology"))[0] == 409
    await api.post(f"/api/v1/consults/{cid}/acknowledge", "chengguan", json={})
    status, amendment = await api.post(f"/api/v1/reports/{signed['id']}/amend", "radiology")
    assert status == 201
    assert amendment["version"] == 2
    assert amendment["previous_id"] == signed["id"]
    changed = {"content": {**IMAGING_REPORT["content"], "impression": "更正：右下肺结核可能。"}}
    assert (await api.patch(f"/api/v1/reports/{amendment['id']}", "radiology", json=changed))[
        0
    ] == 200
    status, v2 = await api.post(f"/api/v1/reports/{amendment['id']}/sign", "radiology")
    assert status == 200
    assert [h["version"] for h in v2["history"]] == [1, 2]
    assert v2["history"][0]["sha256"] == signed["sha256"]
    assert v2["sha256"] != signed["sha256"]
    # The amendment reopens the consult for acknowledgement.
    status, consult = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert consult["state"] == "reported"


async def test_critical_value_is_announced(api: Api) -> None:
    patient = await _patient(api)
    _, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": patient, "centre": "lab", "priority": "stat", "question": "血钾？"},
    )
    cid = consult["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "lab", json={})
    body = {
        "content": {
            "kind": "lab",
            "results": [
                {
                    "code": "K",
                    "name": "钾",
                    "value": "6.9",
                    "unit": "mmol/L",
                    "reference_range": "3.5-5.5",
                    "flag": "critical_high",
                },
            ],
        }
    }
    _, draft = await api.post(f"/api/v1/consults/{cid}/reports", "lab", json=body)
    assert draft["critical"] is True
    await api.post(f"/api/v1/reports/{draft['id']}/sign", "lab")
    _status, feed = await api.get("/api/v1/events", "chengguan")
    types = [e["type"] for e in feed["items"] if e["consult_id"] == cid]
    assert "report.critical" in types


async def test_acknowledging_someone_elses_event_is_refused(api: Api) -> None:
    cid = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    status, feed = await api.get("/api/v1/events", "chengguan")
    theirs = feed["items"][-1]["id"]
    status, _problem = await api.post("/api/v1/events/ack", "baji", json={"up_to": theirs})
    assert status == 404
    status, baji = await api.get("/api/v1/events", "baji")
    assert baji["acked_id"] == 0
    # The cursor never moves back.
    await api.post("/api/v1/events/ack", "chengguan", json={"up_to": theirs})
    status, first = await api.get("/api/v1/events?after=0", "chengguan")
    await api.post("/api/v1/events/ack", "chengguan", json={"up_to": first["items"][0]["id"]})
    status, now = await api.get("/api/v1/events", "chengguan")
    assert now["acked_id"] == theirs


async def test_specialist_sees_the_patient_of_a_consult_in_their_centre(api: Api) -> None:
    consult = await _open(api)
    pid = consult["patient"]["id"]
    assert (await api.get(f"/api/v1/patients/{pid}", "radiology"))[0] == 200
    assert (await api.get(f"/api/v1/patients/{pid}", "ecg"))[0] == 404


async def test_offline_station_gets_everything_once_in_order(api: Api) -> None:
    """A station offline for many events pages through them in order, with no gaps or repeats."""
    ids = []
    for _ in range(5):
        cid = (await _open(api))["id"]
        await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
        await api.post(f"/api/v1/consults/{cid}/return", "radiology", json={"note": "补充资料"})
        ids.append(cid)
    seen: list[int] = []
    after = 0
    while True:
        _status, page = await api.get(f"/api/v1/events?after={after}&limit=3", "chengguan")
        seen += [e["id"] for e in page["items"]]
        after = page["next_after"]
        if not page["more"]:
            break
    assert seen == sorted(set(seen))
    assert len(seen) == 5 * 2  # claimed and returned, each once


async def test_drafts_never_reach_the_requesting_station(api: Api) -> None:
    """Neither the draft of a first report nor an amendment in progress is shown outside the
    centre: not in the consult, not in a signed report's history."""
    cid = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    _, draft = await api.post(f"/api/v1/consults/{cid}/reports", "radiology", json=IMAGING_REPORT)
    _, consult = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert consult["reports"] == []
    _, signed = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    _, amendment = await api.post(f"/api/v1/reports/{signed['id']}/amend", "radiology")
    _, seen = await api.get(f"/api/v1/reports/{signed['id']}", "chengguan")
    assert [h["version"] for h in seen["history"]] == [1]
    _, consult = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert [r["version"] for r in consult["reports"]] == [1]
    _, centre_view = await api.get(f"/api/v1/reports/{signed['id']}", "radiology")
    assert [h["version"] for h in centre_view["history"]] == [1, 2]
    assert (await api.get(f"/api/v1/reports/{amendment['id']}", "chengguan"))[0] == 404


async def test_names_roster_and_station_wide_acknowledgement(api: Api) -> None:
    status, roster = await api.get("/api/v1/centres/consultation/specialists", "coordinator")
    assert status == 200
    assert sorted(e["display_name"] for e in roster["items"]) == ["会诊 李主任", "神经内科 马主任"]
    assert (await api.get("/api/v1/centres/consultation/specialists", "chengguan"))[0] == 403
    cid = (await _open(api))["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    _, draft = await api.post(f"/api/v1/consults/{cid}/reports", "radiology", json=IMAGING_REPORT)
    _, signed = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    assert signed["signer_name"] == "影像 王医生"
    _, consult = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert consult["requester_name"] == "城关镇 刘医生"
    assert consult["assignee_name"] == "影像 王医生"
    assert consult["timeline"][2]["actor_name"] == "影像 王医生"
    assert consult["critical_pending"] is False
    await api.post(f"/api/v1/consults/{cid}/acknowledge", "chengguan", json={})
    # Another doctor of the same station would clear the item from their inbox: the station
    # stream carries the acknowledgement.
    _, feed = await api.get("/api/v1/events", "chengguan")
    acks = [e for e in feed["items"] if e["type"] == "consult.acknowledged"]
    assert [e["stream"].split(":")[0] for e in acks] == ["inst"]
