"""Presence: who is online now, across every node.

Each node knows its own connections exactly. It tells the others through the bus when a user
comes online or goes offline on it, and every ``heartbeat`` seconds it publishes its whole list;
a node silent for three heartbeats is presumed gone and its users drop off. A node that starts
asks the others for their lists. Presence is a hint for people ("the station is online"), never a
condition for delivery: events wait in the durable feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from signalling.bus import Bus

CHANNEL = "presence"

#: Called when a user's presence changes anywhere: (user id, institution id, online).
OnChange = Callable[[str, str, bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Online:
    user_id: str
    institution_id: str


class Presence:
    def __init__(
        self, bus: Bus, *, heartbeat: float = 10.0, on_change: OnChange | None = None
    ) -> None:
        self.bus = bus
        self.heartbeat = heartbeat
        self.on_change = on_change
        #: this node: user id → (institution id, connection ids)
        self.local: dict[str, tuple[str, set[str]]] = {}
        #: other nodes: node id → (last heard, {user id: institution id})
        self.remote: dict[str, tuple[float, dict[str, str]]] = {}
        self._task: asyncio.Task[None] | None = None
        bus.subscribe(CHANNEL, self._on_message)

    # -- this node's connections ------------------------------------------------------------

    async def connected(self, user_id: str, institution_id: str, connection: str) -> None:
        was_online = self.is_online(user_id)
        _, connections = self.local.setdefault(user_id, (institution_id, set()))
        connections.add(connection)
        if len(connections) == 1:
            await self.bus.publish(CHANNEL, {"op": "up", "user": user_id, "inst": institution_id})
        if not was_online:
            await self._changed(user_id, institution_id, True)

    async def disconnected(self, user_id: str, connection: str) -> None:
        entry = self.local.get(user_id)
        if entry is None:
            return
        institution_id, connections = entry
        connections.discard(connection)
        if connections:
            return
        del self.local[user_id]
        await self.bus.publish(CHANNEL, {"op": "down", "user": user_id})
        if not self.is_online(user_id):
            await self._changed(user_id, institution_id, False)

    # -- the view -------------------------------------------------------------------------------

    def _alive(self) -> dict[str, dict[str, str]]:
        horizon = time.monotonic() - 3 * self.heartbeat
        return {node: users for node, (heard, users) in self.remote.items() if heard >= horizon}

    def gone_nodes(self) -> list[str]:
        """Other nodes not heard from for three heartbeats."""
        horizon = time.monotonic() - 3 * self.heartbeat
        return [node for node, (heard, _) in self.remote.items() if heard < horizon]

    def is_online(self, user_id: str) -> bool:
        return user_id in self.local or any(user_id in u for u in self._alive().values())

    def online(self) -> list[Online]:
        seen: dict[str, str] = {u: inst for u, (inst, _) in self.local.items()}
        for users in self._alive().values():
            for user, inst in users.items():
                seen.setdefault(user, inst)
        return [Online(u, i) for u, i in sorted(seen.items())]

    # -- the bus ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.publish(CHANNEL, {"op": "hello"})
        self._task = asyncio.create_task(self._beat(), name="huizhen-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            await self._publish_state()

    async def _publish_state(self) -> None:
        users = {u: inst for u, (inst, _) in self.local.items()}
        await self.bus.publish(CHANNEL, {"op": "state", "users": users})

    async def _on_message(self, message: dict[str, Any]) -> None:
        node = message.get("node")
        if not isinstance(node, str) or node == self.bus.node_id:
            return
        op = message.get("op")
        now = time.monotonic()
        _, users = self.remote.get(node, (now, {}))
        if op == "hello":
            await self._publish_state()
            return
        if op == "state" and isinstance(message.get("users"), dict):
            before = set(users)
            fresh = {str(k): str(v) for k, v in message["users"].items()}
            self.remote[node] = (now, fresh)
            for arrived in set(fresh) - before:
                await self._changed(arrived, fresh[arrived], True)
            return
        user = message.get("user")
        if not isinstance(user, str):
            return
        if op == "up" and isinstance(message.get("inst"), str):
            was_online = self.is_online(user)
            users = {**users, user: message["inst"]}
            self.remote[node] = (now, users)
            if not was_online:
                await self._changed(user, message["inst"], True)
        elif op == "down" and user in users:
            institution_id = users[user]
            users = {k: v for k, v in users.items() if k != user}
            self.remote[node] = (now, users)
            if not self.is_online(user):
                await self._changed(user, institution_id, False)

    async def _changed(self, user_id: str, institution_id: str, online: bool) -> None:
        if self.on_change is not None:
            await self.on_change(user_id, institution_id, online)
