"""Wiring the realtime channel (``signalling``) to this server: who a socket is, its feed, the bus.

``signalling`` does not import ``server``; here the composition root hands it an authenticate
callable, the feed queries and the bus, and announces events after each commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from server import calls
from server.db import unit_of_work
from server.events import streams_of
from server.feed import EventOut, acknowledge, read_feed
from server.keys import ANNOUNCE, AUTHENTICATOR, BUS, METRICS, REALTIME, SESSIONS, SETTINGS
from server.models import Event
from server.problems import Problem
from server.sessions import SESSION_COOKIE
from signalling.bus import Bus, LocalBus, RedisBus
from signalling.realtime import EventRow, Identity, Realtime, Refused

log = logging.getLogger(__name__)


def make_bus(redis_url: str | None) -> Bus:
    return RedisBus(redis_url) if redis_url else LocalBus()


def _cookie_token(header: str | None) -> str | None:
    if not header:
        return None
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def make_realtime(app: web.Application, bus: Bus) -> Realtime:
    async def authenticate(token: str | None, cookie_header: str | None) -> Identity:
        token = token or _cookie_token(cookie_header)
        if not token:
            raise Refused("unauthenticated", "send auth={'token': ...} or the session cookie")
        try:
            async with unit_of_work(app[SESSIONS]) as db:
                p = await app[AUTHENTICATOR].principal_for_token(db, token)
        except Problem as problem:
            raise Refused(problem.code, problem.detail or problem.title) from None
        return Identity(
            user_id=str(p.user_id),
            username=p.username,
            institution_id=str(p.institution_id),
            streams=tuple(streams_of(p)),
        )

    async def fetch(
        identity: Identity, after: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        async with unit_of_work(app[SESSIONS]) as db:
            rows, more = await read_feed(db, list(identity.streams), after, limit)
        return [EventOut.model_validate(r).model_dump(mode="json") for r in rows], more

    async def load(after: int, limit: int) -> list[EventRow]:
        async with unit_of_work(app[SESSIONS]) as db:
            rows = await db.scalars(
                select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
            )
            return [
                EventRow(
                    id=r.id,
                    key=r.key.hex,
                    stream=r.stream,
                    document=EventOut.model_validate(r).model_dump(mode="json"),
                )
                for r in rows
            ]

    async def ack(identity: Identity, up_to: int) -> int:
        try:
            async with unit_of_work(app[SESSIONS]) as db:
                return await acknowledge(
                    db, uuid.UUID(identity.user_id), list(identity.streams), up_to
                )
        except Problem as problem:
            raise Refused(problem.code, problem.detail or problem.title) from None

    async def is_member(identity: Identity, call_id: str) -> bool:
        async with unit_of_work(app[SESSIONS]) as db:
            return await calls.is_member(db, uuid.UUID(call_id), uuid.UUID(identity.user_id))

    async def latest() -> int:
        async with unit_of_work(app[SESSIONS]) as db:
            return int(await db.scalar(select(func.max(Event.id))) or 0)

    return Realtime(
        authenticate=authenticate,
        fetch=fetch,
        load=load,
        ack=ack,
        bus=bus,
        latest=latest,
        is_member=is_member,
    )


def install(app: web.Application) -> None:
    """Attach socket.io at ``/socket.io/`` (before the web app's catch-all route)."""
    bus = make_bus(app[SETTINGS].redis_url)
    realtime = make_realtime(app, bus)
    app[BUS] = bus
    app[REALTIME] = realtime

    async def announce_here(event_ids: Sequence[int]) -> None:
        await announce(app, event_ids)

    app[ANNOUNCE] = announce_here
    realtime.attach(app)
    app.cleanup_ctx.append(_bus_lifetime)
    app.on_response_prepare.append(_after_leaving)
    if METRICS in app:
        app[METRICS].local.register(_RealtimeCollector(realtime))


#: Routes after which someone may no longer be a member of the call in the path.
LEAVING = frozenset({"/api/v1/calls/{call_id}/hangup", "/api/v1/calls/{call_id}/decline"})


async def _after_leaving(request: web.Request, response: web.StreamResponse) -> None:
    """After a hangup or a decline has committed, the call's socket connections are checked
    again, here and on the other nodes (signalling checks membership once per join, not once
    per message)."""
    if request.method != "POST" or not 200 <= response.status < 300:
        return
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in LEAVING:
        return
    call_id = request.match_info.get("call_id", "")
    try:
        call_id = str(uuid.UUID(call_id))
    except ValueError:
        return
    try:
        await request.app[REALTIME].membership_changed(call_id)
    except Exception:
        log.warning("could not re-check the connections of call %s", call_id)


class _RealtimeCollector:
    """This node's realtime figures, read when /metrics is scraped."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "huizhen_realtime_connections", "socket.io connections on this node"
        )
        connections.add_metric([], len(self.realtime.users))
        yield connections
        signals = CounterMetricFamily(
            "huizhen_realtime_signals",
            "Call signals: delivered to connections on this node, routed to another node's "
            "channel, received on this node's channel",
            labels=["path"],
        )
        for path in ("delivered", "routed", "received"):
            signals.add_metric([path], self.realtime.stats[f"signals_{path}"])
        yield signals


async def _bus_lifetime(app: web.Application) -> AsyncIterator[None]:
    await app[BUS].start()
    await app[REALTIME].start()
    yield
    await app[REALTIME].close()
    await app[BUS].close()


async def announce(app: web.Application, event_ids: Sequence[int]) -> None:
    """After a commit. A failure here loses nothing: clients resync from the durable feed."""
    if not event_ids or REALTIME not in app:
        return
    try:
        await app[REALTIME].announce(event_ids)
    except Exception:
        log.warning("could not announce %d events; clients will catch up on sync", len(event_ids))
