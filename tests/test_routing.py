"""Call signals go where their recipients are: no database query per signal, a member who left
can no longer signal, and across server processes a signal reaches only the node that holds its
recipient (watched on Redis itself and on each node's /metrics)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio
from sqlalchemy import event

from server.keys import ENGINE
from tests.helpers import Api
from tests.services import Redis
from tests.test_nodes import Node, node_processes


class Member:
    """A socket.io client in a call, keeping the signals it hears."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio.on("call.signal", self.signals.put)

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(
            url, auth={"token": token}, transports=["websocket"], wait_timeout=10
        )

    async def call(self, event_name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.sio.call(event_name, body, timeout=10)
        return answer

    async def next(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                signal = await self.signals.get()
                if signal["kind"] == kind:
                    return signal

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        # A client whose server went away is no longer "connected", but its HTTP session may
        # still hold a pooled connection (a ResourceWarning later, in some other test).
        http = getattr(self.sio.eio, "http", None)
        if http is not None and not http.closed:
            await http.close()


def _end_of_candidates(call_id: str, to: str | None = None) -> dict[str, Any]:
    return {"call_id": call_id, "kind": "ice", "candidate": None, "to": to}


async def _consult_call(api: Api, invitees: list[str]) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    _, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": found["items"][0]["id"], "centre": "consultation", "question": "会诊"},
    )
    cid = consult["id"]
    assert (await api.post(f"/api/v1/consults/{cid}/claim", "consult", json={}))[0] == 200
    ids = [(await api.get("/api/v1/auth/me", u))[1]["id"] for u in invitees]
    status, call = await api.post(
        f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": ids}
    )
    assert status == 201
    for user in invitees:
        assert (await api.post(f"/api/v1/calls/{call['id']}/accept", user))[0] == 200
    return str(call["id"])


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    made: list[Member] = []
    yield made
    for member in made:
        await member.close()


async def test_signals_need_no_query_and_a_member_who_left_cannot_signal(
    api: Api, members: list[Member]
) -> None:
    """Three in a mesh; the neurologist hangs up over REST (the call goes on, so no event says
    so) without leaving the socket's call: their next signal is refused."""
    call_id = await _consult_call(api, ["consult", "neuro"])
    url = str(api.client.make_url("/"))
    station, expert, neuro = Member(), Member(), Member()
    members += [station, expert, neuro]
    for member, user in ((station, "chengguan"), (expert, "consult"), (neuro, "neuro")):
        await member.connect(url, (await api.login(user))["token"])
        assert await member.call("call.join", {"call_id": call_id}) == {"joined": call_id}

    app = api.client.app
    assert app is not None
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(app[ENGINE].sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(10):
            answer = await neuro.call("call.signal", _end_of_candidates(call_id))
            assert answer == {"relayed": True}
    finally:
        event.remove(app[ENGINE].sync_engine, "before_cursor_execute", count)
    assert statements == []
    _, me = await api.get("/api/v1/auth/me", "neuro")
    for member in (station, expert):
        for _ in range(10):
            assert (await member.next("ice"))["from"] == me["id"]

    status, left = await api.post(f"/api/v1/calls/{call_id}/hangup", "neuro")
    assert status == 200
    assert left["state"] in ("accepted", "ringing")  # the call goes on without them
    refused = await neuro.call("call.signal", _end_of_candidates(call_id))
    assert refused["error"]["code"] == "forbidden"
    # The two others still talk, and the one who left hears nothing more.
    assert await station.call("call.signal", _end_of_candidates(call_id)) == {"relayed": True}
    await expert.next("ice")
    assert neuro.signals.empty()
    # Joining again is checked against the database: refused.
    again = await neuro.call("call.join", {"call_id": call_id})
    assert again["error"]["code"] == "forbidden"


async def _metrics(node: Node) -> dict[str, float]:
    async with node.http.get(node.url + "/metrics") as resp:
        text = await resp.text()
    found = re.findall(r'^huizhen_realtime_signals_total\{path="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    return {path: float(value) for path, value in found}


class Watch:
    """Every message published on the bus, as Redis saw it."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.Redis.from_url(url)
        self.pubsub = self.redis.pubsub()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.psubscribe("huizhen:*")
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.pubsub.listen():
            if item["type"] == "pmessage":
                self.seen.append((item["channel"].decode(), json.loads(item["data"])))

    async def node_of(self, user_id: str) -> str:
        """The node on which this user came online (from its presence message)."""
        async with asyncio.timeout(10):
            while True:
                for channel, message in self.seen:
                    if channel == "huizhen:presence" and message.get("user") == user_id:
                        return str(message["node"])
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_signal_goes_only_to_the_node_of_its_recipient(
    tmp_path: Path, database_url: str, redis_server: Redis, members: list[Member]
) -> None:
    processes = node_processes(tmp_path, database_url, redis_server, ("a", "b", "c"))
    watch = Watch(redis_server.url)
    try:
        processes[0].start()
        processes[1].start()
        await watch.start()
        async with aiohttp.ClientSession() as http:
            a, b, c = (Node(p, http) for p in processes)
            tokens = {u: await a.login(u) for u in ("chengguan", "consult", "radiology")}
            ids = {
                u: (await a.call("GET", "/api/v1/auth/me", t))[1]["id"] for u, t in tokens.items()
            }
            _, found = await a.call("GET", "/api/v1/patients?name=张桂兰", tokens["chengguan"])
            _, consult = await a.call(
                "POST",
                "/api/v1/consults",
                tokens["chengguan"],
                {
                    "patient_id": found["items"][0]["id"],
                    "centre": "consultation",
                    "question": "会诊",
                },
            )
            cid = consult["id"]
            assert (await b.call("POST", f"/api/v1/consults/{cid}/claim", tokens["consult"], {}))[
                0
            ] == 200
            status, call = await a.call(
                "POST",
                f"/api/v1/consults/{cid}/calls",
                tokens["chengguan"],
                {"invitee_ids": [ids["consult"]]},
            )
            assert status == 201
            call_id = call["id"]
            assert (await b.call("POST", f"/api/v1/calls/{call_id}/accept", tokens["consult"]))[
                0
            ] == 200

            station, expert, bystander = Member(), Member(), Member()
            members += [station, expert, bystander]
            await station.connect(a.url, tokens["chengguan"])
            await expert.connect(b.url, tokens["consult"])
            assert await station.call("call.join", {"call_id": call_id}) == {"joined": call_id}
            assert await expert.call("call.join", {"call_id": call_id}) == {"joined": call_id}
            assert (await station.next("joined"))["from"] == ids["consult"]
            node_b = await watch.node_of(ids["consult"])

            # Node C starts once the call is under way; someone unrelated is connected to it.
            processes[2].start()
            await bystander.connect(c.url, tokens["radiology"])
            node_c = await watch.node_of(ids["radiology"])
            assert node_c != node_b

            # The station (node A) signals to the expert (node B), by name and to the whole call.
            watch.seen.clear()
            for to in (ids["consult"], None):
                answer = await station.call("call.signal", _end_of_candidates(call_id, to))
                assert answer == {"relayed": True}
                relayed = await expert.next("ice")
                assert relayed["from"] == ids["chengguan"]
            signals = [(ch, m) for ch, m in watch.seen if m.get("op") == "signal"]
            assert {ch for ch, _ in signals} == {f"huizhen:node.{node_b}"}
            assert len(signals) == 2
            # Nothing on a channel every node hears carried the signal.
            elsewhere = [m for ch, m in watch.seen if ch != f"huizhen:node.{node_b}"]
            assert not [m for m in elsewhere if "candidate" in json.dumps(m)]
            assert (await _metrics(b))["received"] == 2
            assert (await _metrics(c))["received"] == 0
            assert (await _metrics(a))["routed"] == 2

            # The expert moves to node C, which joined late: it learns the station's seat from
            # node A and routes the answer there; node B no longer hears the call.
            await expert.close()
            moved = Member()
            members.append(moved)
            await moved.connect(c.url, tokens["consult"])
            assert await moved.call("call.join", {"call_id": call_id}) == {"joined": call_id}
            assert (await station.next("joined"))["from"] == ids["consult"]
            assert await moved.call("call.signal", _end_of_candidates(call_id)) == {"relayed": True}
            assert (await station.next("ice"))["from"] == ids["consult"]
            assert await station.call("call.signal", _end_of_candidates(call_id)) == {
                "relayed": True
            }
            await moved.next("ice")
            assert (await _metrics(b))["received"] == 2
            assert (await _metrics(c))["received"] == 1
            assert bystander.signals.empty()
    finally:
        for member in members:
            await member.close()  # before their servers stop
        await watch.close()
        for process in processes:
            process.stop()
