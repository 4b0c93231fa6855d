"""Two server processes sharing PostgreSQL and Redis: a station connected to node A hears what
a specialist does through node B, live, and nothing is lost if it reconnects to node B."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from signalling.peer import HeadlessPeer
from tests.conftest import SECRET
from tests.services import HuizhenProcess, Redis


def node_processes(
    tmp_path: Path, database_url: str, redis_server: Redis, names: tuple[str, ...] = ("a", "b")
) -> list[HuizhenProcess]:
    """Servers on one PostgreSQL database and one Redis, each with its own data folder; only
    the first migrates on start."""
    env = {
        "HUIZHEN_DATABASE_URL": database_url,
        "HUIZHEN_REDIS_URL": redis_server.url,
        "HUIZHEN_SECRET_KEY": SECRET,
        "HUIZHEN_LOG_LEVEL": "WARNING",
    }
    return [
        HuizhenProcess(
            env={
                **env,
                "HUIZHEN_DATA_DIR": str(tmp_path / name),
                **({} if i == 0 else {"HUIZHEN_MIGRATE_ON_START": "false"}),
            }
        )
        for i, name in enumerate(names)
    ]


class Node:
    def __init__(self, process: HuizhenProcess, http: aiohttp.ClientSession) -> None:
        self.url = process.url
        self.http = http

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json()

    async def login(self, username: str) -> str:
        async with self.http.post(
            self.url + "/api/v1/auth/login", json={"username": username, "password": "huizhen-demo"}
        ) as resp:
            assert resp.status == 200
            return str((await resp.json())["token"])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_events_cross_nodes_through_redis(
    tmp_path: Path, database_url: str, redis_server: Redis
) -> None:
    a, b = node_processes(tmp_path, database_url, redis_server)
    a.start()
    b.start()
    received: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        received.append(event)
        arrived.set()

    sio = socketio.AsyncClient(reconnection=False)
    sio.on("event", on_event)
    try:
        async with aiohttp.ClientSession() as http:
            node_a, node_b = Node(a, http), Node(b, http)
            doctor = await node_a.login("chengguan")
            radiology = await node_b.login("radiology")
            await sio.connect(
                a.url, auth={"token": doctor}, transports=["websocket"], wait_timeout=10
            )
            last = (await sio.call("sync", {"after": 0}, timeout=10))["last_id"]
            # Presence crosses nodes too: node B learns that the doctor is online on node A.
            _, me = await node_a.call("GET", "/api/v1/auth/me", doctor)
            async with asyncio.timeout(10):
                while True:
                    _, online = await node_b.call("GET", "/api/v1/presence", radiology)
                    if me["id"] in [o["user_id"] for o in online["items"]]:
                        break
                    await asyncio.sleep(0.05)

            _, found = await node_a.call("GET", "/api/v1/patients?name=张桂兰", doctor)
            status, consult = await node_a.call(
                "POST",
                "/api/v1/consults",
                doctor,
                {"patient_id": found["items"][0]["id"], "centre": "imaging", "question": "胸片"},
            )
            assert status == 201
            cid = consult["id"]
            # The specialist works on node B; the doctor's socket is on node A.
            assert (await node_b.call("POST", f"/api/v1/consults/{cid}/claim", radiology, {}))[
                0
            ] == 200
            async with asyncio.timeout(10):
                while not any(e["type"] == "consult.claimed" for e in received):
                    arrived.clear()
                    await arrived.wait()

            # The station drops, the report is signed meanwhile, it comes back on node B.
            await sio.disconnect()
            _, draft = await node_b.call(
                "POST",
                f"/api/v1/consults/{cid}/reports",
                radiology,
                {"content": {"kind": "imaging"}},
            )
            assert (await node_b.call("POST", f"/api/v1/reports/{draft['id']}/sign", radiology))[
                0
            ] == 200
            received.clear()
            sio2 = socketio.AsyncClient(reconnection=False)
            sio2.on("event", on_event)
            await sio2.connect(
                b.url, auth={"token": doctor}, transports=["websocket"], wait_timeout=10
            )
            await sio2.call("sync", {"after": last}, timeout=10)
            assert [e["type"] for e in received if e["consult_id"] == cid] == [
                "consult.claimed",
                "report.signed",
            ]
            await sio2.disconnect()
    finally:
        if sio.connected:
            await sio.disconnect()
        a.stop()
        b.stop()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_video_consult_between_two_nodes(
    tmp_path: Path, database_url: str, redis_server: Redis
) -> None:
    """The station on node A and the specialist on node B hold a video consult: the call's
    events reach each side's node, the signals cross through Redis, frames flow both ways."""
    a, b = node_processes(tmp_path, database_url, redis_server)
    a.start()
    b.start()
    station, expert = HeadlessPeer(a.url), HeadlessPeer(b.url)
    rang: list[dict[str, Any]] = []
    ringing = asyncio.Event()

    async def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "call.ringing":
            rang.append(event)
            ringing.set()

    expert.sio.on("event", on_event)
    try:
        await station.sign_in("chengguan", "huizhen-demo")
        await expert.sign_in("consult", "huizhen-demo")
        await expert.sio.connect(
            b.url, auth={"token": expert.token}, transports=["websocket"], wait_timeout=10
        )
        await expert.sio.call("sync", {"after": 0}, timeout=10)
        found = await station.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
        consult = await station.api(
            "POST",
            "/api/v1/consults",
            {"patient_id": found["items"][0]["id"], "centre": "consultation", "question": "视频"},
        )
        await expert.api("POST", f"/api/v1/consults/{consult['id']}/claim", {})
        call = await station.api(
            "POST", f"/api/v1/consults/{consult['id']}/calls", {"invitee_ids": [expert.user_id]}
        )
        async with asyncio.timeout(20):
            await ringing.wait()  # rung on node A, heard live on node B
        assert rang[0]["payload"]["call_id"] == call["id"]
        await expert.accept(call["id"])
        await station.join(call["id"])
        await expert.join(call["id"])
        await station.offer(call["id"])
        async with asyncio.timeout(30):
            await expert.answer_next_offer(call["id"])
            await station.accept_answer()
            await station.frames(10)
            await expert.frames(10)
        assert station.received.video_frames >= 10 and expert.received.video_frames >= 10
    finally:
        await station.close()
        await expert.close()
        a.stop()
        b.stop()
