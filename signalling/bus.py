"""The bus: wakes every node when something happened. It is not the record.

Backends implement only ``publish`` and ``subscribe``. Messages are small JSON documents tagged
with the publishing node's id. :class:`LocalBus` serves a single process (the embedded default);
:class:`RedisBus` serves several, and reconnects with backoff if Redis goes away — a node that
missed a wake-up loses nothing, because clients resynchronise from the durable feed.

A node hears only the channels it subscribed to. Most are heard by every node (the wake-up of
events, presence); a channel named after one node (``signalling.realtime.node_channel``) is heard
by that node alone, which is how a point-to-point signal reaches only the node of its recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Bus(Protocol):
    node_id: str

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Handlers:
    def __init__(self) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self.handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, channel: str, handler: Handler) -> None:
        self.handlers[channel].append(handler)

    async def _dispatch(self, channel: str, message: dict[str, Any]) -> None:
        for handler in self.handlers.get(channel, ()):
            try:
                await handler(message)
            except Exception:
                log.exception("bus handler for %s failed", channel)


class LocalBus(_Handlers):
    """In-process delivery, for one node."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self._dispatch(channel, {**message, "node": self.node_id})

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisBus(_Handlers):
    """Redis pub/sub between nodes. Every node subscribed to a channel, the publisher included,
    receives each message on it. Subscribe before :meth:`start`."""

    def __init__(self, url: str, *, prefix: str = "huizhen:") -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        body = json.dumps({**message, "node": self.node_id}, separators=(",", ":"))
        await self._redis.publish(self.prefix + channel, body)

    def subscribe(self, channel: str, handler: Handler) -> None:
        if self._task is not None:
            raise RuntimeError("subscribe to the bus before starting it")
        super().subscribe(channel, handler)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="huizhen-bus")
        async with asyncio.timeout(10):
            await self._ready.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(*(self.prefix + c for c in self.handlers))
                self._ready.set()
                delay = 0.1
                async for item in pubsub.listen():
                    if item.get("type") != "message":
                        continue
                    channel = item["channel"].decode()[len(self.prefix) :]
                    try:
                        message = json.loads(item["data"])
                    except ValueError:
                        log.warning("bus: dropped a malformed message on %s", channel)
                        continue
                    await self._dispatch(channel, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("bus: lost Redis, reconnecting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
