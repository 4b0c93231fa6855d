"""The realtime channel with real socket.io clients: auth, replay, live push, reconnect, ack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio

from server.db import unit_of_work
from server.events import PendingEvent
from server.events import write as write_events
from server.keys import REALTIME, SESSIONS
from tests.helpers import Api


class Station:
    """A socket.io client that records the events it receives, as a station app would."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[dict[str, Any]] = []
        #: Every id as it arrived, before the client-side de-duplication.
        self.raw: list[int] = []
        self.arrived = asyncio.Condition()
        self.sio.on("event", self._on_event)

    async def _on_event(self, event: dict[str, Any]) -> None:
        async with self.arrived:
            self.raw.append(event["id"])
            if not self.events or event["id"] > self.events[-1]["id"]:  # ids only grow
                self.events.append(event)
            self.arrived.notify_all()

    async def connect(self, api: Api, **kwargs: Any) -> None:
        url = str(api.client.make_url("/"))
        await self.sio.connect(url, transports=["websocket"], wait_timeout=10, **kwargs)

    async def sync(self, after: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self.sio.call("sync", {"after": after}, timeout=10)
        return answer

    async def wait_for(self, type_: str, consult_id: str) -> dict[str, Any]:
        async with asyncio.timeout(10), self.arrived:
            while True:
                for event in self.events:
                    if event["type"] == type_ and event["consult_id"] == consult_id:
                        return event
                await self.arrived.wait()


@pytest.fixture
async def station() -> AsyncIterator[Station]:
    s = Station()
    yield s
    if s.sio.connected:
        await s.sio.disconnect()


async def _consult(api: Api) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    status, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": found["items"][0]["id"], "centre": "imaging", "question": "胸片"},
    )
    assert status == 201
    return str(consult["id"])


async def _sign(api: Api, cid: str) -> None:
    _, draft = await api.post(
        f"/api/v1/consults/{cid}/reports", "radiology", json={"content": {"kind": "imaging"}}
    )
    status, _ = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    assert status == 200


async def test_unauthenticated_connections_are_refused(api: Api, station: Station) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await station.connect(api)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await station.connect(api, auth={"token": "0" * 32 + ".forged"})


async def test_replay_then_live_then_reconnect(api: Api, station: Station) -> None:
    token = (await api.login("chengguan"))["token"]
    cid = await _consult(api)
    await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})

    await station.connect(api, auth={"token": token})
    synced = await station.sync(0)
    claimed = await station.wait_for("consult.claimed", cid)
    assert synced["last_id"] == claimed["id"]

    # Live: the report is pushed as soon as it is signed.
    await _sign(api, cid)
    signed = await station.wait_for("report.signed", cid)
    assert signed["payload"]["state"] == "reported"
    assert "张桂兰" not in str(signed)

    # Offline: nothing is lost; on reconnect it comes from the durable feed, once.
    await station.sio.disconnect()
    await api.post(f"/api/v1/consults/{cid}/acknowledge", "chengguan", json={})
    cid2 = await _consult(api)
    await api.post(f"/api/v1/consults/{cid2}/claim", "radiology", json={})
    station.sio = socketio.AsyncClient(reconnection=False)
    station.sio.on("event", station._on_event)
    await station.connect(api, auth={"token": token})
    await station.sync(signed["id"])
    await station.wait_for("consult.claimed", cid2)
    ids = [e["id"] for e in station.events]
    assert station.raw == ids  # nothing arrived twice
    assert ids == sorted(set(ids))

    # Acknowledge over the socket; the REST feed agrees.
    answer = await station.sio.call("ack", {"up_to": ids[-1]}, timeout=10)
    assert answer == {"acked_id": ids[-1]}
    _, feed = await api.get("/api/v1/events", "chengguan")
    assert feed["acked_id"] == ids[-1]
    assert feed["items"] == []


async def test_cookie_authentication_and_bad_messages(api: Api, station: Station) -> None:
    login = await api.login("radiology")
    await station.connect(api, headers={"Cookie": f"huizhen_session={login['token']}"})
    for bad in (None, {"after": -1}, {"after": "3"}, {"after": True}, [1, 2]):
        answer = await station.sio.call("sync", bad, timeout=10)
        assert answer["error"]["code"] == "bad-request"
    answer = await station.sio.call("ack", {"up_to": 10**9}, timeout=10)
    assert answer["error"]["code"] == "not-found"
    # Still serving.
    assert (await station.sync(0))["last_id"] >= 0


async def test_each_client_gets_an_event_once_with_its_own_feed_id(api: Api) -> None:
    """The doctor is in both their own and their station's stream; a claim notice reaches
    both, yet each of the doctor's devices gets it once, with an id of the doctor's own feed."""
    token = (await api.login("chengguan"))["token"]
    a, b = Station(), Station()
    try:
        await a.connect(api, auth={"token": token})
        await a.sync(0)
        await b.connect(api, auth={"token": token})  # the same doctor on a second device
        await b.sync(0)
        cid = await _consult(api)
        await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
        for s in (a, b):
            event = await s.wait_for("consult.claimed", cid)
            assert s.raw.count(event["id"]) == 1
            assert [e["type"] for e in s.events].count("consult.claimed") == 1
            _, feed = await api.get(f"/api/v1/events?after={event['id'] - 1}", "chengguan")
            assert feed["items"][0]["id"] == event["id"]
    finally:
        for s in (a, b):
            await s.sio.disconnect()


async def test_concurrent_acknowledgements_never_collide_nor_move_back(api: Api) -> None:
    """Two devices of one doctor acknowledging at once: no error, and the cursor ends at the
    highest id acknowledged."""
    for _ in range(4):
        cid = await _consult(api)
        await api.post(f"/api/v1/consults/{cid}/claim", "radiology", json={})
    _, feed = await api.get("/api/v1/events", "chengguan")
    ids = [e["id"] for e in feed["items"]]
    assert len(ids) >= 4
    answers = await asyncio.gather(
        *(api.post("/api/v1/events/ack", "chengguan", json={"up_to": i}) for i in ids * 5)
    )
    assert {status for status, _ in answers} == {200}
    _, after = await api.get("/api/v1/events", "chengguan")
    assert after["acked_id"] == max(ids)


async def test_wake_ups_out_of_commit_order_still_push_in_order(api: Api, station: Station) -> None:
    """Two events commit in order but their wake-ups arrive reversed: the node pushes both,
    in id order, because it reads everything after what it pushed last."""
    token = (await api.login("chengguan"))["token"]
    await station.connect(api, auth={"token": token})
    await station.sync(0)
    app = api.client.app
    assert app is not None
    _, me = await api.get("/api/v1/auth/me", "chengguan")
    stream = "user:" + me["id"].replace("-", "")
    async with unit_of_work(app[SESSIONS]) as db:  # two commits, nobody announced
        first = await write_events(db, [PendingEvent((stream,), "consult.message", None, {})])
    async with unit_of_work(app[SESSIONS]) as db:
        second = await write_events(db, [PendingEvent((stream,), "consult.message", None, {})])
    realtime = app[REALTIME]
    await realtime.announce(second)  # the later one is heard first
    await realtime.announce(first)
    async with asyncio.timeout(10), station.arrived:
        while len([e for e in station.events if e["type"] == "consult.message"]) < 2:
            await station.arrived.wait()
    pushed = [e["id"] for e in station.events if e["type"] == "consult.message"]
    assert pushed == [first[0], second[0]]
    assert station.raw.count(first[0]) == 1
