"""The ``huizhen`` command: serve, migrate, seed-demo, create-user."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.synchronize import Event as EventType
from typing import TYPE_CHECKING

from server import logs, workers
from server.kinds import Centre, InstitutionKind, Role
from server.problems import Problem
from server.settings import VARIABLES, Settings, SettingsError

if TYPE_CHECKING:
    from aiohttp import web

# Each command imports what it needs when it runs: the supervisor of HUIZHEN_WORKERS only
# migrates and watches, and need not hold the application (imaging, rendering, video) in memory.

log = logging.getLogger("huizhen")


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


async def _migrate(settings: Settings) -> None:
    from server.db import make_engine, migrate

    engine = make_engine(settings.effective_database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _seed(settings: Settings, *, if_empty: bool) -> bool:
    from server.db import make_engine, make_sessionmaker, unit_of_work
    from server.seed import is_empty, seed_demo
    from server.sessions import Passwords

    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            if not await is_empty(db):
                if if_empty:
                    return False
                raise SystemExit(
                    "the database already holds a consortium; seed-demo needs an empty one"
                )
            await seed_demo(db, Passwords(), settings.demo_password)
            return True
    finally:
        await engine.dispose()


async def _create_user(settings: Settings, args: argparse.Namespace, password: str) -> None:
    from sqlalchemy import select

    from server.accounts import create_user
    from server.db import make_engine, make_sessionmaker, unit_of_work
    from server.models import Institution
    from server.sessions import Passwords

    engine = make_engine(settings.effective_database_url)
    passwords = Passwords()
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            institution = await db.scalar(
                select(Institution).where(Institution.code == args.institution)
            )
            if institution is None:
                raise SystemExit(f"no institution with code {args.institution!r}")
            await create_user(
                db,
                username=args.username,
                display_name=args.display_name or args.username,
                institution=institution,
                password_hash=await passwords.hash(password),
                roles={Role(r) for r in args.role},
                centres={Centre(c) for c in args.centre or ()},
            )
    finally:
        await engine.dispose()


async def _create_institution(settings: Settings, args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from server.db import make_engine, make_sessionmaker, unit_of_work
    from server.directory import add_institution, host_centres
    from server.models import Institution

    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            kind = InstitutionKind(args.kind)
            parent_id = None
            if args.parent:
                parent_id = await db.scalar(
                    select(Institution.id).where(Institution.code == args.parent)
                )
                if parent_id is None:
                    raise SystemExit(f"no institution with code {args.parent!r}")
            await add_institution(
                db,
                code=args.code,
                name_zh=args.name_zh,
                name_en=args.name_en,
                kind=kind,
                parent_id=parent_id,
            )
            if kind is InstitutionKind.LEAD_HOSPITAL:
                await host_centres(db, code=args.code)
    finally:
        await engine.dispose()


async def _freeze_heap(app: web.Application) -> None:
    """Move start-up objects out of the collector's sight: full collections then scan only
    what requests create, which shortens their pauses; and collect less often, since each
    socket connection holds ~150 tracked objects that the default thresholds rescan again and
    again while clients connect (see docs/benchmarks.md, "Realtime")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _peer(args: argparse.Namespace, password: str) -> int:
    """Join a call as a headless participant; print what was received."""
    from signalling.peer import HeadlessPeer

    peer = HeadlessPeer(args.url)
    try:
        await peer.sign_in(args.username, password)
        if args.call_id and not args.caller:
            await peer.accept(args.call_id)
        await peer.join(args.call_id)
        if args.offer:
            await peer.offer(args.call_id)
            await peer.accept_answer()
        else:
            await peer.answer_next_offer(args.call_id)
        async with asyncio.timeout(30):
            await peer.frames(1)
        await peer.report_connected(args.call_id)
        await asyncio.sleep(args.seconds)
        sys.stdout.write(f"video frames received: {peer.received.video_frames}\n")
        await peer.hang_up(args.call_id)
        return 0
    finally:
        await peer.close()


def _serve(settings: Settings) -> int:
    if settings.workers == 1:
        _run_app(settings)
        return 0
    if settings.migrate_on_start and workers.in_child(_migrate_in_child, settings) != 0:
        _say("huizhen: the database migration failed (see the log above)")
        return 1
    settings.resolved_secret_key()  # made once here, not raced for by the workers
    log.info("serving on http://%s:%s: %d workers", settings.host, settings.port, settings.workers)
    try:
        return workers.supervise(settings, _serve_worker)
    except workers.PortInUse as exc:
        _say(f"huizhen: {exc}")
        return 1


def _migrate_in_child(settings: Settings) -> None:
    """Migrations for the supervisor, in a process of their own: the supervisor stays small."""
    logs.configure(settings.log_level, as_json=settings.log_json)
    asyncio.run(_migrate(settings))


def _serve_worker(settings: Settings, index: int, ready: EventType) -> None:
    """One of ``HUIZHEN_WORKERS`` processes (``server.workers``); run in a fresh interpreter."""
    workers.detach_from_terminal()
    logs.configure(settings.log_level, as_json=settings.log_json)
    workers.exit_with_parent()

    async def started(app: web.Application) -> None:
        ready.set()

    sockets = workers.listening_sockets(settings.host, settings.port)
    _run_app(settings, sockets=sockets, started=started)


def _run_app(
    settings: Settings,
    *,
    sockets: list[socket.socket] | None = None,
    started: Callable[[web.Application], Awaitable[None]] | None = None,
) -> None:
    from aiohttp import web

    from server.app import create_app

    app = create_app(settings)
    app.on_startup.append(_freeze_heap)
    if started is not None:
        app.on_startup.append(started)  # after every cleanup context: the database is up
    log.info("serving on http://%s:%s", settings.host, settings.port)
    web.run_app(
        app,
        host=None if sockets else settings.host,
        port=None if sockets else settings.port,
        sock=sockets,
        access_log_class=logs.AccessLogger,
        print=None,
        shutdown_timeout=10,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="huizhen",
        description="会诊 Huizhen remote consultation service. Configured by HUIZHEN_* variables: "
        + ", ".join("HUIZHEN_" + v for v in VARIABLES),
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve HTTP on HUIZHEN_HOST:HUIZHEN_PORT")
    sub.add_parser("migrate", help="apply database migrations")
    seed = sub.add_parser("seed-demo", help="seed the demo consortium")
    seed.add_argument("--if-empty", action="store_true", help="do nothing if data exists")
    ci = sub.add_parser(
        "create-institution",
        help="add an institution (a lead hospital also hosts the five centres)",
    )
    ci.add_argument("--code", required=True, help="short code, e.g. xrmyy")
    ci.add_argument("--name-zh", required=True)
    ci.add_argument("--name-en", default="")
    ci.add_argument("--kind", required=True, choices=[k.value for k in InstitutionKind])
    ci.add_argument("--parent", help="code of the parent institution")
    peer = sub.add_parser("peer", help="join a video call as a headless participant (aiortc)")
    peer.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    peer.add_argument("--username", required=True)
    peer.add_argument("--call-id", required=True)
    peer.add_argument("--offer", action="store_true", help="make the offer instead of answering")
    peer.add_argument(
        "--caller", action="store_true", help="this user started the call (do not answer the ring)"
    )
    peer.add_argument("--seconds", type=float, default=3.0, help="stay this long once connected")
    cu = sub.add_parser(
        "create-user", help="create an account (password read from stdin or a prompt)"
    )
    cu.add_argument("--username", required=True)
    cu.add_argument("--display-name", default="")
    cu.add_argument("--institution", required=True, help="institution code, e.g. xrmyy")
    cu.add_argument("--role", action="append", required=True, choices=[r.value for r in Role])
    cu.add_argument("--centre", action="append", choices=[c.value for c in Centre])
    cu.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _say(f"huizhen: configuration error: {exc}")
        return 2
    logs.configure(settings.log_level, as_json=settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
            _say("database migrated")
        elif args.command == "seed-demo":
            seeded = asyncio.run(_seed(settings, if_empty=args.if_empty))
            _say("demo consortium seeded" if seeded else "database not empty; nothing seeded")
        elif args.command == "peer":
            return asyncio.run(_peer(args, sys.stdin.readline().rstrip("\n")))
        elif args.command == "create-institution":
            asyncio.run(_create_institution(settings, args))
            _say(f"institution {args.code} created")
        elif args.command == "create-user":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass("password: ")
            if len(password) < 10:
                _say("huizhen: the password needs at least 10 characters")
                return 2
            asyncio.run(_create_user(settings, args, password))
            _say(f"user {args.username} created")
    except Problem as exc:
        _say(f"huizhen: {exc.detail or exc.title}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
