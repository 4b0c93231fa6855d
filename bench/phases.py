"""Where one request's server time goes, phase by phase: ``python -m bench.phases``.

The application runs in this process (``create_app`` on a migrated, seeded database) and takes
requests one at a time from an in-process client. Timers wrapped around the request path (the
server's code is not changed, only wrapped at run time) record the main thread's CPU and the wall
time of each phase, and SQLAlchemy events count the SQL statements each phase sends:

* ``server, whole request``: every middleware and the handler (not HTTP parsing or writing);
* ``token look-up``: ``SessionAuth.principal_for_token``;
* ``patient + links``: ``patients.load_visible_patient`` (read only);
* ``audit insert``: ``routing.record``;
* ``commit``: ``AsyncSession.commit``.

One request at a time means no waiting for the pool or the event loop: this is the cost of the
work itself, a floor under the figures of ``bench.api``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite.core
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from bench.api import DEMO_PASSWORD, LABELS, _prepare
from server import audit, patients, routing
from server.app import create_app
from server.identity import make_national_id
from server.keys import ENGINE
from server.sessions import SessionAuth
from server.settings import Settings
from tests.services import Postgres

WHOLE = "server, whole request"
PHASES = (WHOLE, "token look-up", "patient + links", "audit insert", "commit")


@dataclass
class Tally:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    statements: int = 0
    hops: int = 0


@dataclass
class Recorder:
    tallies: dict[str, Tally] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        cpu, wall = time.thread_time(), time.perf_counter()
        self.active.append(name)
        try:
            yield
        finally:
            self.active.pop()
            t = self.tallies.setdefault(name, Tally())
            t.cpu_s += time.thread_time() - cpu
            t.wall_s += time.perf_counter() - wall

    def count(self, what: str) -> None:
        for name in self.active:
            t = self.tallies.setdefault(name, Tally())
            if what == "statement":
                t.statements += 1
            else:
                t.hops += 1


REC = Recorder()
AsyncFn = Callable[..., Awaitable[Any]]


def _wrap(name: str, fn: AsyncFn) -> AsyncFn:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with REC.phase(name):
            return await fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Wrap the request path's phases and aiosqlite's thread hand-offs; undo on exit."""
    patches: list[tuple[Any, str, AsyncFn]] = [
        (SessionAuth, "principal_for_token", SessionAuth.principal_for_token),
        (patients, "load_visible_patient", patients.load_visible_patient),
        (routing, "record", audit.record),  # the router calls it by this name
        (AsyncSession, "commit", AsyncSession.commit),
    ]
    names = ("token look-up", "patient + links", "audit insert", "commit")
    hop: Any = aiosqlite.core.Connection._execute

    async def counted_hop(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        REC.count("hop")
        return await hop(self, fn, *args, **kwargs)

    try:
        for (owner, attr, original), name in zip(patches, names, strict=True):
            setattr(owner, attr, _wrap(name, original))
        aiosqlite.core.Connection._execute = counted_hop  # type: ignore[method-assign]
        yield
    finally:
        for owner, attr, original in patches:
            setattr(owner, attr, original)
        aiosqlite.core.Connection._execute = hop  # type: ignore[method-assign]


@web.middleware
async def whole_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    with REC.phase(WHOLE):
        return await handler(request)


@contextlib.asynccontextmanager
async def serving(url: str, data_dir: Path) -> AsyncIterator[TestClient[web.Request, Any]]:
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        secret_key=secrets.token_urlsafe(48),
        demo_password=DEMO_PASSWORD,
        web_dir=str(data_dir / "no-web"),
        log_level="WARNING",
    )
    app = create_app(settings)
    app.middlewares.insert(0, whole_request)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        engine = app[ENGINE]

        def statement(*_: Any) -> None:
            REC.count("statement")

        event.listen(engine.sync_engine, "before_cursor_execute", statement)
        yield client


async def measure(url: str, data_dir: Path, requests: int) -> dict[str, dict[str, Tally]]:
    await _prepare(url)
    out: dict[str, dict[str, Tally]] = {}
    async with serving(url, data_dir) as client:
        login = await client.post(
            "/api/v1/auth/login", json={"username": "chengguan", "password": DEMO_PASSWORD}
        )
        headers = {"Authorization": f"Bearer {(await login.json())['token']}"}
        found = await client.get("/api/v1/patients", headers=headers)
        patient_id = (await found.json())["items"][0]["id"]
        serial = 0

        async def one(scenario: str) -> None:
            nonlocal serial
            if scenario == "read":
                resp = await client.get(f"/api/v1/patients/{patient_id}", headers=headers)
            else:
                serial += 1
                birth = dt.date(1880, 1, 1) + dt.timedelta(days=serial // 1000)
                body = {
                    "national_id": make_national_id("411625", birth, serial % 1000),
                    "name": "测试",
                }
                resp = await client.post("/api/v1/patients", headers=headers, json=body)
            await resp.read()
            if resp.status not in (200, 201):
                raise RuntimeError(f"{scenario}: HTTP {resp.status}")

        for scenario in ("read", "write"):
            for _ in range(max(requests // 10, 20)):  # warm caches and the pool
                await one(scenario)
            REC.tallies.clear()
            for _ in range(requests):
                await one(scenario)
            out[scenario] = {k: Tally(**vars(v)) for k, v in REC.tallies.items()}
    return out


def table(label: str, results: dict[str, dict[str, Tally]], requests: int) -> str:
    rows = [
        f"#### {label}",
        "",
        "| scenario | phase | SQL statements | aiosqlite thread hops | main-thread CPU ms "
        "| wall ms | share of the request's CPU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for scenario, tallies in results.items():
        whole = tallies.get(WHOLE, Tally()).cpu_s or 1.0
        for phase in PHASES:
            t = tallies.get(phase)
            if t is None:
                continue
            rows.append(
                f"| {scenario} | {phase} | {t.statements / requests:.0f} "
                f"| {t.hops / requests:.0f} | {t.cpu_s * 1000 / requests:.2f} "
                f"| {t.wall_s * 1000 / requests:.2f} | {t.cpu_s / whole:.0%} |"
            )
    rows.append("")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=500, help="per scenario (%(default)s)")
    p.add_argument("--backends", default="sqlite,postgresql", help="%(default)s")
    args = p.parse_args(argv)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hz-phases-") as tmp, instrumented():
        for key in args.backends.split(","):
            data_dir = Path(tmp) / key
            data_dir.mkdir()
            if key == "postgresql":
                pg = Postgres().start()
                try:
                    pg.psql("CREATE DATABASE huizhen")
                    results = asyncio.run(measure(pg.url("huizhen"), data_dir, args.requests))
                finally:
                    pg.stop()
            else:
                url = f"sqlite+aiosqlite:///{data_dir / 'huizhen.db'}"
                results = asyncio.run(measure(url, data_dir, args.requests))
            out.append(table(LABELS[key], results, args.requests))
            print(out[-1], flush=True)
    print(f"(per request, mean of {args.requests} sequential requests)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
