"""The realtime channel: socket.io over aiohttp, pushing each user's durable feed.

python-socketio has no connection-state recovery of its own; this is ours. A client connects
with ``auth={"token": ...}`` (or the session cookie), then emits ``sync`` with the last event id it
holds. The server replays everything after it from the durable feed, joins the client to its
streams' rooms, replays once more what committed meanwhile, and answers ``{"last_id": N}``. From
then on, events are pushed live as ``event`` messages. Ids only grow; a client ignores an id it
has already seen (the second replay may overlap a live push). ``ack`` moves the user's cursor.

This package does not import ``server``: the server hands it an authenticate callable, the feed
queries and the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from signalling.bus import Bus
from signalling.presence import Presence
from signalling.signals import InvalidSignal, parse_signal

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"
REPLAY_PAGE = 200
#: Rows read per wake-up; a backlog beyond it reaches clients through their next sync.
PUSH_BATCH = 2000
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    username: str
    institution_id: str
    streams: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stream's row of a logical event (``key``), with the client-facing document."""

    id: int
    key: str
    stream: str
    document: dict[str, Any] = field(default_factory=dict)


class Refused(Exception):
    """The server says no: authentication failed, or a request was not allowed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Authenticate = Callable[[str | None, str | None], Awaitable[Identity]]
#: (identity, after, limit) → (events in feed order, more waiting)
FetchFeed = Callable[[Identity, int, int], Awaitable[tuple[list[dict[str, Any]], bool]]]
#: (after, limit) → every stream's rows with a greater id, in id order
LoadEvents = Callable[[int, int], Awaitable[list[EventRow]]]
#: The greatest event id now
LatestEvent = Callable[[], Awaitable[int]]
AckFeed = Callable[[Identity, int], Awaitable[int]]
#: (identity, call id) → may this user signal to this call now?
IsMember = Callable[[Identity, str], Awaitable[bool]]
SIGNAL_CHANNEL = "signal"


class Realtime:
    def __init__(
        self,
        *,
        authenticate: Authenticate,
        fetch: FetchFeed,
        load: LoadEvents,
        ack: AckFeed,
        bus: Bus,
        latest: LatestEvent,
        is_member: IsMember | None = None,
    ) -> None:
        self.authenticate = authenticate
        self.fetch = fetch
        self.load = load
        self.ack_feed = ack
        self.bus = bus
        self.is_member = is_member
        self.latest = latest
        #: Every event up to this id has been pushed by this node (or had nobody here to hear it).
        self.pushed_up_to = 0
        self._push_lock = asyncio.Lock()
        #: this node's connections: sid → user id
        self.users: dict[str, str] = {}
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=[],
            max_http_buffer_size=MAX_MESSAGE_BYTES,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("sync", self._sync)
        self.sio.on("ack", self._ack)
        self.sio.on("call.join", self._call_join)
        self.sio.on("call.leave", self._call_leave)
        self.sio.on("call.signal", self._call_signal)
        bus.subscribe(EVENTS_CHANNEL, self._on_wake)
        bus.subscribe(SIGNAL_CHANNEL, self._on_signal)
        self.presence = Presence(bus, on_change=self._presence_changed)

    async def start(self) -> None:
        """After the bus has started."""
        self.pushed_up_to = await self.latest()
        await self.presence.start()

    async def close(self) -> None:
        await self.presence.close()

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app)

    async def announce(self, event_ids: Sequence[int]) -> None:
        """After a commit: wake every node to push these events to its clients."""
        if event_ids:
            await self.bus.publish(EVENTS_CHANNEL, {"ids": list(event_ids)})

    # -- socket.io handlers -----------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is not None and not isinstance(token, str):
            raise socketio.exceptions.ConnectionRefusedError(
                {"code": "bad-request", "message": "token must be a string"}
            )
        try:
            identity = await self.authenticate(token, environ.get("HTTP_COOKIE"))
        except Refused as refused:
            raise socketio.exceptions.ConnectionRefusedError(
                {"code": refused.code, "message": refused.message}
            ) from None
        await self.sio.save_session(sid, {"identity": identity})
        self.users[sid] = identity.user_id
        await self.presence.connected(identity.user_id, identity.institution_id, sid)
        log.info("realtime: user %s connected", identity.user_id)

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        session = await self.sio.get_session(sid)
        identity: Identity | None = session.get("identity")
        self.users.pop(sid, None)
        if identity is not None:
            await self.presence.disconnected(identity.user_id, sid)

    async def _presence_changed(self, user_id: str, institution_id: str, online: bool) -> None:
        """Tell every connection on this node (presence is directory-level, not patient data)."""
        await self.sio.emit(
            "presence", {"user_id": user_id, "institution_id": institution_id, "online": online}
        )

    async def _identity(self, sid: str) -> Identity:
        session = await self.sio.get_session(sid)
        identity: Identity = session["identity"]
        return identity

    async def _sync(self, sid: str, data: Any = None) -> dict[str, Any]:
        after = data.get("after", 0) if isinstance(data, dict) else None
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**62:
            return _error("bad-request", "sync takes {'after': <event id, 0 or more>}")
        identity = await self._identity(sid)
        after = await self._replay(sid, identity, after)
        for stream in identity.streams:
            await self.sio.enter_room(sid, stream)
        # What committed between the last page and joining the rooms.
        after = await self._replay(sid, identity, after)
        return {"last_id": after}

    async def _replay(self, sid: str, identity: Identity, after: int) -> int:
        while True:
            events, more = await self.fetch(identity, after, REPLAY_PAGE)
            for event in events:
                await self.sio.emit("event", event, to=sid)
                after = max(after, int(event["id"]))
            if not more:
                return after

    async def _ack(self, sid: str, data: Any = None) -> dict[str, Any]:
        up_to = data.get("up_to") if isinstance(data, dict) else None
        if not isinstance(up_to, int) or isinstance(up_to, bool) or not 1 <= up_to < 2**62:
            return _error("bad-request", "ack takes {'up_to': <event id>}")
        try:
            acked = await self.ack_feed(await self._identity(sid), up_to)
        except Refused as refused:
            return _error(refused.code, refused.message)
        return {"acked_id": acked}

    # -- WebRTC signalling -------------------------------------------------------------------

    async def _member(self, sid: str, call_id: str) -> bool:
        if self.is_member is None:
            return False
        return await self.is_member(await self._identity(sid), call_id)

    async def _call_join(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id = data.get("call_id") if isinstance(data, dict) else None
        try:
            call_id = parse_signal({"call_id": call_id, "kind": "hangup"}).call_id
        except InvalidSignal as exc:
            return _error("bad-request", str(exc))
        if not await self._member(sid, call_id):
            return _error("forbidden", "you are not a member of this call")
        await self.sio.enter_room(sid, f"call:{call_id}")
        # Tell the others: a caller waits for this before sending its offer.
        await self.bus.publish(
            SIGNAL_CHANNEL,
            {
                "call_id": call_id,
                "from": self.users[sid],
                "to": None,
                "message": {"call_id": call_id, "kind": "joined"},
            },
        )
        return {"joined": call_id}

    async def _call_leave(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id = data.get("call_id") if isinstance(data, dict) else None
        if isinstance(call_id, str):
            await self.sio.leave_room(sid, f"call:{call_id}")
        return {"left": call_id}

    async def _call_signal(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Validate, check membership, then relay through the bus to the call's other members
        on every node. A bad message is answered with an error and never relayed."""
        try:
            signal = parse_signal(data)
        except InvalidSignal as exc:
            return _error("bad-request", str(exc))
        if f"call:{signal.call_id}" not in self.sio.rooms(sid) or not await self._member(
            sid, signal.call_id
        ):
            return _error("forbidden", "join the call before signalling to it")
        await self.bus.publish(
            SIGNAL_CHANNEL,
            {
                "call_id": signal.call_id,
                "from": self.users[sid],
                "to": signal.to,
                "message": {"call_id": signal.call_id, "kind": signal.kind, **signal.body},
            },
        )
        return {"relayed": True}

    async def _on_signal(self, message: dict[str, Any]) -> None:
        call_id, sender, to = message.get("call_id"), message.get("from"), message.get("to")
        body = message.get("message")
        if (
            not isinstance(call_id, str)
            or not isinstance(sender, str)
            or not isinstance(body, dict)
        ):
            return
        for sid, _ in list(self.sio.manager.get_participants("/", f"call:{call_id}")):
            user = self.users.get(sid)
            if user is None or user == sender or (to is not None and user != to):
                continue
            await self.sio.emit("call.signal", {**body, "from": sender}, to=sid)

    # -- live push ------------------------------------------------------------------------------

    async def _on_wake(self, message: dict[str, Any]) -> None:
        """Push, in id order, everything committed after what this node pushed last.

        Wake-ups may arrive out of commit order (two requests announce concurrently); reading
        from ``pushed_up_to`` rather than the announced ids fills any gap, because ids follow
        commit order. A node with no connections only moves its mark."""
        ids = message.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            log.warning("realtime: ignored a malformed wake-up")
            return
        async with self._push_lock:
            newest = max(ids)
            if newest <= self.pushed_up_to:
                return
            if not self.users:
                self.pushed_up_to = newest
                return
            rows = await self.load(self.pushed_up_to, PUSH_BATCH)
            by_key: dict[str, list[EventRow]] = defaultdict(list)
            for row in rows:  # in id order
                by_key[row.key].append(row)
            for group in by_key.values():
                await self._push(group)
            self.pushed_up_to = max([newest, *(row.id for row in rows)])

    async def _push(self, rows: list[EventRow]) -> None:
        """One logical event: each connected client once, with its own feed's id (the first row
        of the event among that client's streams)."""
        sent: set[str] = set()
        for row in rows:
            for sid, _ in list(self.sio.manager.get_participants("/", row.stream)):
                if sid in sent:
                    continue
                sent.add(sid)
                await self.sio.emit(
                    "event", {**row.document, "id": row.id, "stream": row.stream}, to=sid
                )


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
