"""The ``huizhen`` command: serve, migrate, seed-demo, create-user."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import sys
from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import select

from server import logs
from server.accounts import create_user
from server.app import create_app
from server.db import make_engine, make_sessionmaker, migrate, unit_of_work
from server.directory import add_institution, host_centres
from server.models import Centre, Institution, InstitutionKind, Role
from server.problems import Problem
from server.seed import is_empty, seed_demo
from server.sessions import Passwords
from server.settings import VARIABLES, Settings, SettingsError

log = logging.getLogger("huizhen")


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


async def _migrate(settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _seed(settings: Settings, *, if_empty: bool) -> bool:
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
    what requests create, which shortens their pauses (see docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


def _serve(settings: Settings) -> None:
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)
    log.info("serving on http://%s:%s", settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
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
            _serve(settings)
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
            _say("database migrated")
        elif args.command == "seed-demo":
            seeded = asyncio.run(_seed(settings, if_empty=args.if_empty))
            _say("demo consortium seeded" if seeded else "database not empty; nothing seeded")
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
