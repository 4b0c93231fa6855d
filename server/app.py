"""The composition root: ``create_app(settings)`` wires every part; nothing runs at import."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import multiprocessing
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from sqlalchemy import text

from imaging.store import LocalInstanceStore
from server import (
    accounts,
    attachments,
    auditlog,
    calls,
    casework,
    consults,
    dicomweb,
    directory,
    feed,
    figures,
    labresults,
    live,
    messages,
    patients,
    presence,
    recording,
    referrals,
    reportpdf,
    reports,
    rtc,
    signin,
    slides,
    studies,
    targets,
    uploads,
    wado,
    worklists,
)
from server.archive import Archive
from server.audit import ReadWindow
from server.blobs import LocalBlobStore
from server.db import current_revision, head_revision, make_engine, make_sessionmaker, migrate
from server.dicomhttp import add_cors_headers, preflight
from server.dimse import dimse
from server.keys import (
    ARCHIVE,
    AUTHENTICATOR,
    BLOBS,
    CLIENT_ADDRESS,
    ENGINE,
    HEAD_REVISION,
    METRICS,
    OPENAPI,
    PASSWORDS,
    RECENT_READS,
    REQUEST_ID,
    SECRET,
    SESSIONS,
    SETTINGS,
)
from server.logs import request_id_var
from server.metrics import Metrics
from server.models import DICOM
from server.network import client_address
from server.problems import (
    BY_STATUS,
    BadRequest,
    Problem,
    ServiceUnavailable,
    problem_response,
)
from server.routing import Router, openapi_document
from server.sessions import Passwords, SessionAuth
from server.settings import Settings
from server.watch import watchdog
from server.webapp import install_web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def app_version() -> str:
    try:
        return version("huizhen")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def api_router() -> Router:
    """Every API route of the service, in one table (the policy test walks it)."""
    router = Router()
    modules = [signin, directory, accounts, patients, consults, casework, worklists, messages]
    modules += [attachments, reports]
    modules += [reportpdf, referrals, calls, targets, feed, presence, rtc, figures, auditlog]
    modules += [recording]
    modules += [dicomweb, wado, studies, slides, uploads, labresults]
    for module in modules:
        router.include(module.router)
    return router


# -- middlewares --------------------------------------------------------------------------


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take a well-formed ``X-Request-ID`` from the caller or make one; echo it back.
    Also settle the client's address (see ``server.network``)."""
    sent = request.headers.get("X-Request-ID", "")
    rid = sent if _REQUEST_ID.match(sent) else secrets.token_hex(8)
    request[REQUEST_ID] = rid
    request[CLIENT_ADDRESS] = client_address(
        request.remote,
        request.headers.get("X-Forwarded-For"),
        request.app[SETTINGS].trusted_proxies,
    )
    token = request_id_var.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-ID"] = rid
        raise
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-ID"] = rid
    return response


@web.middleware
async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    m = request.app[METRICS]
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "(unmatched)"
    started = time.perf_counter()
    m.in_flight.inc()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        m.in_flight.dec()
        m.requests.labels(request.method, template, str(status)).inc()
        m.latency.labels(request.method, template).observe(time.perf_counter() - started)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json. Unknown errors say nothing but the request id."""
    rid = request.get(REQUEST_ID, "-")
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        cls = BY_STATUS.get(exc.status, Problem)
        body = cls().body(rid)
        body["status"] = exc.status
        if exc.status == 413:
            body["detail"] = f"the body exceeds {request.app[SETTINGS].max_body_bytes} bytes"
        headers = {k: v for k, v in exc.headers.items() if k in {"Allow", "Retry-After"}}
        return problem_response(exc.status, body, headers)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-request (a village link dropped): nobody to answer, and
        # nothing for an operator to fix. The transaction was rolled back by the router.
        log.info("client disconnected during %s %s", request.method, _template(request))
        return problem_response(400, BadRequest("the connection was reset").body(rid))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, _template(request))
        return problem_response(500, Problem().body(rid))


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.prepared:  # a websocket or a stream: its headers are gone already
        return response
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
    return response


# -- system routes ------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rid = request[REQUEST_ID]
    try:
        async with request.app[ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))
        revision = await current_revision(request.app[ENGINE])
    except Exception:
        log.warning("readiness check: database unreachable")
        return problem_response(503, _unready(rid, "the database is unreachable"))
    if revision != request.app[HEAD_REVISION]:
        return problem_response(503, _unready(rid, "the database is not migrated to this version"))
    return web.json_response({"status": "ready", "database_revision": revision})


def _unready(rid: str, detail: str) -> dict[str, object]:
    return ServiceUnavailable(detail).body(rid)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


# -- resources ----------------------------------------------------------------------------


async def database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = make_engine(settings.effective_database_url, pool_size=settings.db_pool_size)
    if settings.migrate_on_start:
        await migrate(engine)
    app[ENGINE] = engine
    app[SESSIONS] = make_sessionmaker(engine)
    yield
    await engine.dispose()


async def ingest_processes(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the archive's ingest processes (``HUIZHEN_INGEST_PROCESSES``). They
    start on first need, from a fork server that imports only ``imaging.intake``: no copy of
    this process's threads, sockets or database connections."""
    count = app[SETTINGS].ingest_processes
    if count == 0:
        yield
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["imaging.intake"])
    pool = ProcessPoolExecutor(count, mp_context=context)
    archive = app[ARCHIVE]
    archive.processes = pool
    try:
        yield
    finally:
        archive.processes = None
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_ids, metrics, problems, security_headers],
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = settings.resolved_secret_key()
    app[SETTINGS] = settings
    app[SECRET] = secret
    app[PASSWORDS] = Passwords()
    app[AUTHENTICATOR] = SessionAuth(secret)
    app[METRICS] = Metrics()
    app[BLOBS] = LocalBlobStore(settings.data_dir / "blobs")
    app[ARCHIVE] = Archive(
        DICOM,
        LocalInstanceStore(settings.data_dir / "dicom"),
        settings.max_instance_bytes,
        pseudonym_key=hmac.new(secret, b"dicom-pseudonyms", hashlib.sha256).digest(),
    )
    app[RECENT_READS] = ReadWindow()
    app[HEAD_REVISION] = head_revision()
    router = api_router()
    app[OPENAPI] = json.dumps(
        openapi_document(router.routes, title="Huizhen 会诊 API", version=app_version()),
        ensure_ascii=False,
    ).encode()
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(ingest_processes)
    app.cleanup_ctx.append(dimse)
    app.cleanup_ctx.append(watchdog)
    app.cleanup_ctx.append(labresults.mllp_listener)
    app.cleanup_ctx.append(recording.recordings)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_route("OPTIONS", "/dicomweb/{tail:.*}", preflight)
    app.router.add_route("OPTIONS", "/wado", preflight)
    app.on_response_prepare.append(add_cors_headers)
    router.install(app)
    live.install(app)  # /socket.io/, before the web app's catch-all
    install_web(app, settings.effective_web_dir)
    return app
