"""Presence: who is online, on this node and others; dead nodes drop off."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import socketio

from signalling.bus import Handler
from signalling.presence import Presence
from tests.helpers import Api


class SharedBus:
    """Several nodes' view of one pub/sub (the same interface as LocalBus and RedisBus)."""

    def __init__(self, hub: dict[str, list[Handler]]) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self.hub = hub

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for handler in list(self.hub[channel]):
            await handler({**message, "node": self.node_id})

    def subscribe(self, channel: str, handler: Handler) -> None:
        self.hub[channel].append(handler)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_presence_across_nodes_and_dead_nodes() -> None:
    hub: dict[str, list[Handler]] = defaultdict(list)
    changes: list[tuple[str, bool]] = []

    async def record(user: str, inst: str, online: bool) -> None:
        changes.append((user, online))

    a = Presence(SharedBus(hub), heartbeat=0.05, on_change=record)
    b_bus = SharedBus(hub)
    b = Presence(b_bus, heartbeat=0.05)
    await a.start()
    await b.start()
    try:
        await b.connected("u1", "i1", "sid-1")
        await b.connected("u1", "i1", "sid-2")  # a second device
        assert [o.user_id for o in a.online()] == ["u1"]
        await b.disconnected("u1", "sid-1")
        assert a.is_online("u1")
        await b.disconnected("u1", "sid-2")
        assert not a.is_online("u1")
        assert changes == [("u1", True), ("u1", False)]
        # A node that dies without a word: its users drop off after three silent heartbeats.
        await b.connected("u2", "i1", "sid-3")
        assert a.is_online("u2")
        hub["presence"].remove(b._on_message)
        await b.close()
        b_bus.hub = defaultdict(list)  # and says nothing more
        async with asyncio.timeout(5):
            while a.is_online("u2"):  # noqa: ASYNC110 - waiting on a clock, not an event
                await asyncio.sleep(0.05)
        # A node that starts learns who is already online elsewhere.
        await a.connected("u3", "i2", "sid-4")
        c = Presence(SharedBus(hub), heartbeat=0.05)
        await c.start()
        assert [o.user_id for o in c.online()] == ["u3"]
        await c.close()
    finally:
        await a.close()


async def test_presence_over_the_realtime_channel(api: Api) -> None:
    doctor = await api.login("chengguan")
    specialist = await api.login("radiology")
    url = str(api.client.make_url("/"))
    seen: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_presence(message: dict[str, Any]) -> None:
        seen.extend(message["changes"])  # batched: one message carries every change meanwhile
        arrived.set()

    watcher = socketio.AsyncClient(reconnection=False)
    watcher.on("presence", on_presence)
    station = socketio.AsyncClient(reconnection=False)
    try:
        await watcher.connect(url, auth={"token": specialist["token"]}, transports=["websocket"])
        await station.connect(url, auth={"token": doctor["token"]}, transports=["websocket"])
        _, online = await api.get("/api/v1/presence", "radiology")
        assert doctor["user"]["id"] in [o["user_id"] for o in online["items"]]
        async with asyncio.timeout(10):
            while not any(m["user_id"] == doctor["user"]["id"] for m in seen):
                arrived.clear()
                await arrived.wait()
        await station.disconnect()
        async with asyncio.timeout(10):
            while not any(m["online"] is False for m in seen):
                arrived.clear()
                await arrived.wait()
        _, online = await api.get("/api/v1/presence", "radiology")
        assert doctor["user"]["id"] not in [o["user_id"] for o in online["items"]]
    finally:
        for client in (watcher, station):
            if client.connected:
                await client.disconnect()
