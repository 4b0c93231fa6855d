"""Typed keys for everything the application and its requests hold. No string keys elsewhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from server.archive import Archive
from server.audit import ReadWindow
from server.blobs import BlobStore
from server.metrics import Metrics
from server.sessions import Authenticator, Passwords
from server.settings import Settings
from signalling.bus import Bus
from signalling.realtime import Realtime

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
SECRET = web.AppKey("secret", bytes)
PASSWORDS = web.AppKey("passwords", Passwords)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
OPENAPI = web.AppKey("openapi", bytes)
BLOBS = web.AppKey("blobs", BlobStore)
HEAD_REVISION = web.AppKey("head_revision", str)
BUS = web.AppKey("bus", Bus)
REALTIME = web.AppKey("realtime", Realtime)
ARCHIVE = web.AppKey("archive", Archive)
#: Pixel reads audited lately (per session and series), so a viewer is not audited per frame.
RECENT_READS = web.AppKey("recent_reads", ReadWindow)
#: Called after a commit with the ids of the events it wrote (wakes the realtime channel).
ANNOUNCE = web.AppKey[Callable[[Sequence[int]], Awaitable[None]]]("announce")

REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_ADDRESS = web.RequestKey("client_address", str)
