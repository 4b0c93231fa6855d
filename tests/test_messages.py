"""The consult's message thread between the requesting station and the centre."""

from __future__ import annotations

from tests.helpers import Api


async def _consult(api: Api) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    status, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": found["items"][0]["id"], "centre": "ecg", "question": "心电图请会诊"},
    )
    assert status == 201
    return str(consult["id"])


async def test_thread_between_station_and_centre(api: Api) -> None:
    cid = await _consult(api)
    status, first = await api.post(
        f"/api/v1/consults/{cid}/messages", "chengguan", json={"body": "患者胸闷两小时"}
    )
    assert status == 201
    assert first["author_name"] == "城关镇 刘医生"
    _, ecg_feed = await api.get("/api/v1/events", "ecg")
    assert "consult.message" in [e["type"] for e in ecg_feed["items"]]
    status, _ = await api.post(
        f"/api/v1/consults/{cid}/messages", "ecg", json={"body": "请加做右胸导联"}
    )
    assert status == 201
    _, station_feed = await api.get("/api/v1/events", "chengguan")
    assert [e["type"] for e in station_feed["items"]].count("consult.message") == 1
    status, thread = await api.get(f"/api/v1/consults/{cid}/messages", "ecg")
    assert status == 200
    assert [m["body"] for m in thread["items"]] == ["患者胸闷两小时", "请加做右胸导联"]


async def test_outsiders_neither_read_nor_write(api: Api) -> None:
    cid = await _consult(api)
    for user in ("baji", "radiology"):
        assert (await api.get(f"/api/v1/consults/{cid}/messages", user))[0] == 404
        status, _ = await api.post(f"/api/v1/consults/{cid}/messages", user, json={"body": "x"})
        assert status == 404
    assert (await api.post(f"/api/v1/consults/{cid}/messages", "supervisor", json={"body": "x"}))[
        0
    ] == 403
    assert (await api.post(f"/api/v1/consults/{cid}/messages", "chengguan", json={"body": ""}))[
        0
    ] == 422
    _, thread = await api.get(f"/api/v1/consults/{cid}/messages", "chengguan")
    assert thread["items"] == []


async def test_a_message_carries_the_authors_files(api: Api) -> None:
    cid = await _consult(api)

    async def upload(user: str) -> str:
        resp = await api.client.post(
            f"/api/v1/consults/{cid}/attachments?filename=ecg.png",
            data=b"\x89PNG fake",
            headers={**await api.headers(user), "Content-Type": "image/png"},
        )
        assert resp.status == 201
        return str((await resp.json())["id"])

    mine = await upload("chengguan")
    theirs = await upload("ecg")
    status, problem = await api.post(
        f"/api/v1/consults/{cid}/messages",
        "chengguan",
        json={"body": "见附图", "attachment_ids": [theirs]},
    )
    assert status == 422
    assert problem["field"] == "attachment_ids"
    status, message = await api.post(
        f"/api/v1/consults/{cid}/messages",
        "chengguan",
        json={"body": "见附图", "attachment_ids": [mine]},
    )
    assert status == 201
    assert message["attachment_ids"] == [mine]
    # A file belongs to one message.
    status, _ = await api.post(
        f"/api/v1/consults/{cid}/messages",
        "chengguan",
        json={"body": "再发", "attachment_ids": [mine]},
    )
    assert status == 422
    _, thread = await api.get(f"/api/v1/consults/{cid}/messages", "ecg")
    assert [m["attachment_ids"] for m in thread["items"]] == [[mine]]
