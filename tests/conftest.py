"""Fixtures: real databases (SQLite and a PostgreSQL server started here), the app, live servers.

Database-touching tests take the ``backend`` fixture and run on both SQLite and PostgreSQL.
A migrated, seeded template is made once per run; each test gets a fresh copy of it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.db import make_engine, make_sessionmaker, migrate, unit_of_work
from server.seed import seed_demo
from server.sessions import Passwords
from server.settings import Settings
from tests.helpers import Api
from tests.services import HuizhenProcess, Postgres, Redis

SECRET = "test-secret-key-" + "x" * 32
DEMO_PASSWORD = "huizhen-demo"
TEMPLATE_DB = "huizhen_template"

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test that fails against ``huizhen serve`` in a child process shows the end of its log
    (the server's and its recorders'): CI keeps nothing else of it."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, HuizhenProcess):
                report.sections.append((f"{name}: huizhen serve log (its end)", value.log()))
    return report


async def _prepare(url: str) -> None:
    engine = make_engine(url)
    try:
        await migrate(engine)
        async with unit_of_work(make_sessionmaker(engine)) as db:
            await seed_demo(db, Passwords(), DEMO_PASSWORD)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "huizhen.db"
    asyncio.run(_prepare(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    try:
        server.psql(f"CREATE DATABASE {TEMPLATE_DB}")
        asyncio.run(_prepare(server.url(TEMPLATE_DB)))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    """A Redis server for the tests of one module (several nodes, the bus)."""
    server = Redis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated and seeded database for one test."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "huizhen.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    pg: Postgres = request.getfixturevalue("postgres")
    name = "t_" + uuid.uuid4().hex[:12]
    pg.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    return pg.url(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=SECRET,
        demo_password=DEMO_PASSWORD,
        web_dir=str(tmp_path / "web-not-built"),
    )


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, settings: Settings
) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def api(client: TestClient[web.Request, web.Application]) -> Api:
    return Api(client)


def live_env(tmp_path: Path, database_url: str, **more: str) -> dict[str, str]:
    """The environment of ``huizhen serve`` over the test's database, with ``more`` settings
    (``HUIZHEN_LOG_LEVEL`` WARNING unless given)."""
    return {
        "HUIZHEN_DATA_DIR": str(tmp_path / "live"),
        "HUIZHEN_DATABASE_URL": database_url,
        "HUIZHEN_SECRET_KEY": SECRET,
        "HUIZHEN_LOG_LEVEL": "WARNING",
        **more,
    }


@pytest.fixture
def live_server(tmp_path: Path, database_url: str) -> Iterator[HuizhenProcess]:
    """``huizhen serve`` in a child process on a free port, over the test's database."""
    server = HuizhenProcess(env=live_env(tmp_path, database_url))
    server.start()
    try:
        yield server
    finally:
        server.stop()
