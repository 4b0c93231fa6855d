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
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from signalling.bus import Bus
from signalling.presence import Presence
from signalling.roster import Roster, Seat
from signalling.signals import InvalidSignal, parse_signal

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "events"
REPLAY_PAGE = 200
#: Rows read per wake-up; a backlog beyond it reaches clients through their next sync.
PUSH_BATCH = 2000
MAX_MESSAGE_BYTES = 64 * 1024
#: Presence changes are sent to every connection in batches at most this often: a sign-in storm
#: of N users then costs each connection a few messages, not N (which made it O(N²) in all).
PRESENCE_BATCH_SECONDS = 0.5


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
#: Joins, leaves and membership re-checks of calls, to every node.
CALLS_CHANNEL = "calls"
#: Events whose call has ended: its connections are re-checked.
CALL_CLOSED = frozenset({"call.ended", "call.declined", "call.timed_out"})


def node_channel(node_id: str) -> str:
    """The channel that only this node listens to: signals for its connections."""
    return f"node.{node_id}"


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
        #: calls: who is in which, on which node (this node's entries are checked members)
        self.roster = Roster(bus.node_id)
        #: counters for /metrics: signals delivered to connections here, sent to other nodes,
        #: received from other nodes
        self.stats: Counter[str] = Counter()
        bus.subscribe(EVENTS_CHANNEL, self._on_wake)
        bus.subscribe(CALLS_CHANNEL, self._on_calls)
        bus.subscribe(node_channel(bus.node_id), self._on_node)
        self.presence = Presence(bus, on_change=self._presence_changed)
        #: presence changes not yet sent: user id → (institution id, online); the last one wins
        self._presence_pending: dict[str, tuple[str, bool]] = {}
        self._presence_flush: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """After the bus has started."""
        self.pushed_up_to = await self.latest()
        await self.presence.start()

    async def close(self) -> None:
        if self._presence_flush is not None:
            self._presence_flush.cancel()
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
        for call_id in self.roster.calls_of(sid):
            await self._drop(call_id, sid)
        if identity is not None:
            await self.presence.disconnected(identity.user_id, sid)

    async def _presence_changed(self, user_id: str, institution_id: str, online: bool) -> None:
        """Tell every connection on this node (presence is directory-level, not patient data),
        in one batch per :data:`PRESENCE_BATCH_SECONDS`."""
        self._presence_pending[user_id] = (institution_id, online)
        if self._presence_flush is None or self._presence_flush.done():
            self._presence_flush = asyncio.create_task(self._send_presence())

    async def _send_presence(self) -> None:
        await asyncio.sleep(PRESENCE_BATCH_SECONDS)
        pending, self._presence_pending = self._presence_pending, {}
        if pending and self.users:
            changes = [
                {"user_id": user, "institution_id": institution, "online": online}
                for user, (institution, online) in pending.items()
            ]
            await self.sio.emit("presence", {"changes": changes})

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
    #
    # Membership is checked against the database once, when a connection joins a call; the
    # roster then remembers it, and a signal is checked against the roster alone (no query per
    # message). A member who leaves is taken out of the roster: by ``call.leave``, by
    # disconnecting, and by :meth:`membership_changed`, which the server calls after a hangup or
    # a decline and which re-checks the call's connections on every node; the call's closing
    # events (ended, declined, timed out) re-check them too.

    async def _call_join(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id = data.get("call_id") if isinstance(data, dict) else None
        try:
            call_id = parse_signal({"call_id": call_id, "kind": "hangup"}).call_id
        except InvalidSignal as exc:
            return _error("bad-request", str(exc))
        identity = await self._identity(sid)
        if self.is_member is None or not await self.is_member(identity, call_id):
            return _error("forbidden", "you are not a member of this call")
        seat = Seat(sid, identity.user_id, self.bus.node_id)
        self.roster.add(call_id, seat)
        # Tell the others (a caller waits for this before sending its offer): here directly,
        # elsewhere through the bus, which also fills the other nodes' rosters.
        await self._joined(call_id, seat)
        await self.bus.publish(
            CALLS_CHANNEL, {"op": "join", "call_id": call_id, "sid": sid, "user": seat.user_id}
        )
        return {"joined": call_id}

    async def _call_leave(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id = data.get("call_id") if isinstance(data, dict) else None
        if isinstance(call_id, str):
            await self._drop(call_id, sid)
        return {"left": call_id}

    async def _drop(self, call_id: str, sid: str) -> None:
        seat = self.roster.remove(call_id, sid)
        if seat is not None:
            await self._left(call_id, seat)
            await self.bus.publish(CALLS_CHANNEL, {"op": "leave", "call_id": call_id, "sid": sid})

    async def _call_signal(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Validate, check the roster, then relay to the call's other members: directly to
        those on this node, through each other node's own channel to the rest. A bad message is
        answered with an error and never relayed."""
        try:
            signal = parse_signal(data)
        except InvalidSignal as exc:
            return _error("bad-request", str(exc))
        if not self.roster.joined(sid, signal.call_id):
            return _error("forbidden", "join the call before signalling to it")
        sender = self.users[sid]
        body = {"call_id": signal.call_id, "kind": signal.kind, **signal.body, "from": sender}
        nodes: set[str] = set()
        for seat in self.roster.recipients(signal.call_id, sender, signal.to):
            if seat.node_id == self.bus.node_id:
                await self.sio.emit("call.signal", body, to=seat.sid)
                self.stats["signals_delivered"] += 1
            else:
                nodes.add(seat.node_id)
        for node in nodes:
            await self.bus.publish(
                node_channel(node),
                {"op": "signal", "call_id": signal.call_id, "to": signal.to, "message": body},
            )
            self.stats["signals_routed"] += 1
        return {"relayed": True}

    async def _joined(self, call_id: str, seat: Seat) -> None:
        """Tell this node's other members of the call that someone joined it."""
        message = {"call_id": call_id, "kind": "joined", "from": seat.user_id}
        for other in self.roster.local(call_id):
            if other.user_id != seat.user_id:
                await self.sio.emit("call.signal", message, to=other.sid)

    async def _left(self, call_id: str, seat: Seat) -> None:
        """Tell this node's other members that someone's last connection left the call (closed
        the page, lost the network for good): their tile can go."""
        if any(s.user_id == seat.user_id for s in self.roster.seats(call_id)):
            return  # still there through another connection
        message = {"call_id": call_id, "kind": "left", "from": seat.user_id}
        for other in self.roster.local(call_id):
            await self.sio.emit("call.signal", message, to=other.sid)

    async def _on_node(self, message: dict[str, Any]) -> None:
        """A message for this node only: a signal for its connections, or another node's
        members of a call that one of ours has just joined."""
        op, call_id = message.get("op"), message.get("call_id")
        if not isinstance(call_id, str):
            return
        if op == "signal":
            body, to = message.get("message"), message.get("to")
            if not isinstance(body, dict) or not isinstance(body.get("from"), str):
                return
            self.stats["signals_received"] += 1
            for seat in self.roster.recipients(call_id, body["from"], to):
                if seat.node_id == self.bus.node_id:
                    await self.sio.emit("call.signal", body, to=seat.sid)
                    self.stats["signals_delivered"] += 1
        elif op == "seats" and isinstance(message.get("seats"), list):
            node = message.get("node")
            for entry in message["seats"]:
                if isinstance(node, str) and _pair(entry):
                    self.roster.add(call_id, Seat(entry[0], entry[1], node))

    async def _on_calls(self, message: dict[str, Any]) -> None:
        """Another node's connection joined or left a call, or a call's membership changed."""
        node, op, call_id = message.get("node"), message.get("op"), message.get("call_id")
        if not isinstance(node, str) or node == self.bus.node_id or not isinstance(call_id, str):
            return
        sid, user = message.get("sid"), message.get("user")
        if op == "join" and isinstance(sid, str) and isinstance(user, str):
            for gone in self.presence.gone_nodes():
                self.roster.forget_node(gone)
            seat = Seat(sid, user, node)
            self.roster.add(call_id, seat)
            ours = self.roster.local(call_id)
            if ours:
                await self.bus.publish(
                    node_channel(node),
                    {
                        "op": "seats",
                        "call_id": call_id,
                        "seats": [[s.sid, s.user_id] for s in ours],
                    },
                )
                await self._joined(call_id, seat)
        elif op == "leave" and isinstance(sid, str):
            left_seat = self.roster.remove(call_id, sid)
            if left_seat is not None:
                await self._left(call_id, left_seat)
        elif op == "check":
            await self._recheck(call_id)

    async def membership_changed(self, call_id: str) -> None:
        """After someone left or declined a call (committed): re-check its connections here,
        then on the other nodes."""
        await self._recheck(call_id)
        await self.bus.publish(CALLS_CHANNEL, {"op": "check", "call_id": call_id})

    async def _recheck(self, call_id: str) -> None:
        for seat in self.roster.local(call_id):
            try:
                identity = await self._identity(seat.sid)
                member = self.is_member is not None and await self.is_member(identity, call_id)
            except KeyError:  # gone meanwhile
                member = False
            if not member:
                await self._drop(call_id, seat.sid)
                log.info("realtime: a connection left call %s (no longer a member)", call_id)

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
        for call_id in {c for row in rows if (c := _closed_call(row)) is not None}:
            await self._recheck(call_id)

    async def _push(self, rows: list[EventRow]) -> None:
        """One logical event: each connected client once, with its own feed's id (the first row
        of the event among that client's streams). Each row is encoded once for its room."""
        sent: set[str] = set()
        for row in rows:
            sids = [sid for sid, _ in self.sio.manager.get_participants("/", row.stream)]
            skip = [sid for sid in sids if sid in sent]
            if len(skip) < len(sids):
                await self.sio.emit(
                    "event",
                    {**row.document, "id": row.id, "stream": row.stream},
                    to=row.stream,
                    skip_sid=skip or None,
                )
            sent.update(sids)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _pair(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, str) for v in entry)


def _closed_call(row: EventRow) -> str | None:
    if row.document.get("type") not in CALL_CLOSED:
        return None
    payload = row.document.get("payload")
    call_id = payload.get("call_id") if isinstance(payload, dict) else None
    return call_id if isinstance(call_id, str) else None
