"""``make bench``: throughput and latency of the foundation API on SQLite and PostgreSQL.

Two scenarios, each with 50 concurrent keep-alive clients (wrk ``-c 50 -t 2``):

* ``read``: ``GET /api/v1/patients/{id}`` as a signed-in grassroots doctor (token look-up,
  patient and links queries, one audit row, commit);
* ``write``: ``POST /api/v1/patients`` with a national ID never used before (token look-up,
  duplicate check, patient, link and audit inserts, commit) answering 201.

For each backend a migrated, seeded database is made (a SQLite file in a temporary data dir, or a
throwaway PostgreSQL cluster) and ``huizhen serve`` runs as a child process with
``HUIZHEN_LOG_LEVEL=WARNING``. Doctors sign in once; their tokens are reused. Each measurement is
a warm-up followed by a fixed window; runs alternate the backends and the median of the runs is
reported with the CPU of the server, of PostgreSQL and of wrk itself (all share two cores).

``python -m bench.api --help`` lists the knobs; ``--profile`` samples the server with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from bench.cpu import (
    children_of,
    machine_sample,
    machine_use,
    process_seconds,
    processes_seconds,
    thread_seconds,
    tree_seconds,
)
from bench.load import LoadError, WrkResult, run_wrk, wrk_binary
from bench.profile import Profile, start_recording
from server.db import make_engine, make_sessionmaker, migrate, unit_of_work
from server.seed import seed_demo
from server.sessions import Passwords
from tests.services import HuizhenProcess, Postgres, postgres_bin

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEMO_PASSWORD = "huizhen-demo"  # noqa: S105 - the documented demo password
#: Grassroots doctors: they may read and register patients at their institutions.
DOCTORS = ("chengguan", "baji", "jiaji")
BACKENDS = ("sqlite", "postgresql")
SCENARIOS = ("read", "write")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
SCENARIO_LABELS = {
    "read": "read `GET /api/v1/patients/{id}`",
    "write": "write `POST /api/v1/patients`",
}
#: Room in a thread's national-ID range for this many requests a second (never reached).
WRITE_RATE_CEILING = 5000
#: National-ID numbers the write script can form: days from 1880-01-01 to 1947-12-31 × 1000.
WRITE_NUMBERS = 24_800_000


# -- one backend: database, server, signed-in doctors -------------------------------------


async def _prepare(url: str) -> None:
    """Migrate and seed the demo consortium, as ``huizhen migrate`` and ``seed-demo`` do."""
    engine = make_engine(url)
    try:
        await migrate(engine)
        async with unit_of_work(make_sessionmaker(engine)) as db:
            await seed_demo(db, Passwords(), DEMO_PASSWORD)
    finally:
        await engine.dispose()


def _request(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


@dataclass
class Target:
    """A backend under test: its database, its ``huizhen serve`` and signed-in doctors."""

    key: str
    server: HuizhenProcess
    postgres: Postgres | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    #: (token, patient id) pairs: each doctor with each patient visible to them.
    visible: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    def sign_in(self) -> None:
        for username in DOCTORS:
            body = _request(
                "POST",
                self.server.url + "/api/v1/auth/login",
                {"username": username, "password": DEMO_PASSWORD},
            )
            self.tokens[username] = body["token"]
        for token in self.tokens.values():
            found = _request("GET", self.server.url + "/api/v1/patients", token=token)
            self.visible += [(token, item["id"]) for item in found["items"]]
        if not self.visible:
            raise RuntimeError("the demo doctors see no patients: was the database seeded?")

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def log_size(self) -> int:
        path = self.server.log_path
        return path.stat().st_size if path is not None and path.exists() else 0

    def log_errors_since(self, offset: int) -> int:
        """ERROR lines the server wrote after ``offset`` (its log is its stdout and stderr)."""
        path = self.server.log_path
        if path is None or not path.exists():
            return 0
        with path.open("rb") as fh:
            fh.seek(offset)
            return sum(1 for line in fh if b" ERROR " in line)

    def database_pids(self) -> list[int]:
        """The PostgreSQL postmaster and its children (backends, writer, WAL writer...)."""
        if self.postgres is None:
            return []
        pidfile = self.postgres.directory / "data" / "postmaster.pid"
        postmaster = int(pidfile.read_text().split()[0])
        return [postmaster, *children_of(postmaster)]


def prepare_database(
    key: str, data_dir: Path, workdir: Path, stack: contextlib.ExitStack
) -> tuple[dict[str, str], str, Postgres | None]:
    """A migrated, seeded database for ``key`` (sqlite or postgresql) and the server's
    environment for it; shared by both harnesses."""
    data_dir.mkdir(parents=True)
    env = {
        "HUIZHEN_DATA_DIR": str(data_dir),
        "HUIZHEN_SECRET_KEY": secrets.token_urlsafe(48),
        "HUIZHEN_LOG_LEVEL": "WARNING",
        "HUIZHEN_WEB_DIR": str(workdir / "no-web"),
        "HUIZHEN_DATABASE_URL": "",
    }
    postgres: Postgres | None = None
    if key == "postgresql":
        postgres = Postgres().start()
        stack.callback(postgres.stop)
        postgres.psql("CREATE DATABASE huizhen")
        url = postgres.url("huizhen")
        env["HUIZHEN_DATABASE_URL"] = url
    else:
        url = f"sqlite+aiosqlite:///{data_dir / 'huizhen.db'}"
    asyncio.run(_prepare(url))
    return env, url, postgres


def start_target(key: str, workdir: Path, stack: contextlib.ExitStack) -> Target:
    env, _, postgres = prepare_database(key, workdir / key, workdir, stack)
    server = HuizhenProcess(env=env)
    stack.callback(server.stop)
    server.start()
    target = Target(key=key, server=server, postgres=postgres)
    target.sign_in()
    return target


# -- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    backend: str
    scenario: str
    run: int
    wrk: WrkResult
    #: Wall-clock seconds of the window in which the CPU figures below were taken.
    wall_s: float
    #: CPU seconds used in the window: the server (all threads), its main (event-loop) thread,
    #: PostgreSQL (all its processes), wrk, and the whole machine (busy and stolen, all cores).
    server_s: float
    server_main_s: float
    database_s: float
    wrk_s: float
    machine_busy_s: float
    machine_steal_s: float
    #: ERROR lines the server logged from the warm-up to the end of the window.
    server_log_errors: int = 0

    def share(self, seconds: float) -> float:
        """CPU seconds as a fraction of one core over the window."""
        return seconds / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def other_s(self) -> float:
        """CPU that neither the server, PostgreSQL nor wrk used: other work on the machine."""
        return max(self.machine_busy_s - self.server_s - self.database_s - self.wrk_s, 0.0)

    def per_request_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.wrk.requests if self.wrk.requests else 0.0


class Numbers:
    """Disjoint ranges of national-ID numbers for every wrk invocation of the write scenario."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, threads: int, duration_s: int) -> tuple[int, int]:
        stride = WRITE_RATE_CEILING * (duration_s + 1)
        base = self.next
        self.next += threads * stride
        if self.next > WRITE_NUMBERS:
            raise RuntimeError("out of fresh national-ID numbers: shorten or reduce the runs")
        return base, stride


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    scenarios: tuple[str, ...]
    runs: int
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    budget_s: float
    profile: bool


def scenario_args(
    target: Target, scenario: str, numbers: Numbers, opts: Options, duration_s: int
) -> list[str]:
    if scenario == "read":
        return [part for pair in target.visible for part in pair]
    base, stride = numbers.take(opts.threads, duration_s)
    return [str(base), str(stride), *target.tokens.values()]


def settle(pid: int, timeout_s: float = 5.0) -> None:
    """Wait until the server has finished the requests wrk left behind (it is idle), so that
    they neither load the next measurement nor log into it). Its child processes count too."""
    deadline = time.monotonic() + timeout_s
    used = tree_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tree_seconds(pid)
        if now - used < 0.02:
            return
        used = now


def measure(
    target: Target,
    scenario: str,
    run: int,
    numbers: Numbers,
    opts: Options,
    profile_to: Path | None = None,
) -> Measurement:
    log_offset = target.log_size()
    if opts.warmup_s > 0:
        warm = run_wrk(
            target.server.url,
            scenario,
            scenario_args(target, scenario, numbers, opts, opts.warmup_s),
            connections=opts.connections,
            threads=opts.threads,
            duration_s=opts.warmup_s,
        )
        if warm.errors:
            _say(f"  warm-up errors: {warm.errors} (first: {warm.first_error})")
    args = scenario_args(target, scenario, numbers, opts, opts.duration_s)
    spy = None
    if profile_to is not None:
        spy = start_recording(target.server_pid, max(opts.duration_s - 1, 1), profile_to)
    pid = target.server_pid
    db_pids = target.database_pids()
    server_before, main_before = process_seconds(pid), thread_seconds(pid, pid)
    db_before = processes_seconds(db_pids)
    machine_before = machine_sample()
    started = time.monotonic()
    result = run_wrk(
        target.server.url,
        scenario,
        args,
        connections=opts.connections,
        threads=opts.threads,
        duration_s=opts.duration_s,
    )
    wall = time.monotonic() - started
    machine = machine_use(machine_before, machine_sample(), wall)
    server_after, main_after = process_seconds(pid), thread_seconds(pid, pid)
    db_after = processes_seconds({*db_pids, *target.database_pids()})
    if spy is not None:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            _say(f"  py-spy failed: {err.decode(errors='replace')[-500:]}")
    settle(pid)
    return Measurement(
        backend=target.key,
        scenario=scenario,
        run=run,
        wrk=result,
        wall_s=wall,
        server_s=server_after - server_before,
        server_main_s=main_after - main_before,
        database_s=sum(after - db_before.get(p, 0.0) for p, after in db_after.items()),
        wrk_s=result.wrk_cpu_s * wall / result.wall_s if result.wall_s > 0 else 0.0,
        machine_busy_s=machine.busy_cores * wall,
        machine_steal_s=machine.steal_cores * wall,
        server_log_errors=target.log_errors_since(log_offset),
    )


# -- reporting ----------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


HEADER = (
    "| backend | scenario | req/s | p50 ms | p99 ms | max ms | errors | server CPU "
    "| server CPU per request | PostgreSQL CPU | wrk CPU | other processes' CPU |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def median_table(results: Sequence[Measurement], opts: Options) -> str:
    rows = [HEADER]
    for backend in opts.backends:
        for scenario in opts.scenarios:
            ms = [m for m in results if m.backend == backend and m.scenario == scenario]
            if not ms:
                continue

            def med(get: Callable[[Measurement], float], ms: list[Measurement] = ms) -> float:
                return statistics.median(get(m) for m in ms)

            errors = sum(m.wrk.errors for m in ms)
            pg = backend == "postgresql"
            rows.append(
                f"| {LABELS[backend]} | {SCENARIO_LABELS[scenario]} "
                f"| {med(lambda m: m.wrk.rps):,.0f} | {_ms(med(lambda m: m.wrk.p50_ms))} "
                f"| {_ms(med(lambda m: m.wrk.p99_ms))} | {_ms(med(lambda m: m.wrk.max_ms))} "
                f"| {errors} | {_cpu(med(lambda m: m.share(m.server_s)))} "
                f"| {med(lambda m: m.per_request_ms(m.server_s)):.1f} ms "
                f"| {_cpu(med(lambda m: m.share(m.database_s))) if pg else '–'} "
                f"| {_cpu(med(lambda m: m.share(m.wrk_s)))} "
                f"| {_cpu(med(lambda m: m.share(m.other_s)))} |"
            )
    return "\n".join(rows)


def runs_table(results: Sequence[Measurement]) -> str:
    rows = [
        "| run | backend | scenario | requests | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | server CPU | its main thread | server ms/req | PostgreSQL CPU "
        "| PostgreSQL ms/req | wrk CPU | other CPU | steal | server log ERRORs |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        w = m.wrk
        rows.append(
            f"| {m.run} | {LABELS[m.backend]} | {m.scenario} | {w.requests:,} | {w.rps:,.0f} "
            f"| {_ms(w.p50_ms)} | {_ms(w.p90_ms)} | {_ms(w.p99_ms)} | {_ms(w.max_ms)} "
            f"| {w.errors} | {_cpu(m.share(m.server_s))} | {_cpu(m.share(m.server_main_s))} "
            f"| {m.per_request_ms(m.server_s):.2f} | {_cpu(m.share(m.database_s))} "
            f"| {m.per_request_ms(m.database_s):.2f} | {_cpu(m.share(m.wrk_s))} "
            f"| {_cpu(m.share(m.other_s))} | {_cpu(m.share(m.machine_steal_s))} "
            f"| {m.server_log_errors} |"
        )
    return "\n".join(rows)


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def machine_description() -> list[str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    pg = postgres_bin("postgres")
    return [
        f"- CPU: {os.cpu_count()} × {model} (`nproc` = {len(os.sched_getaffinity(0))}), "
        f"{mem_kb / 1024 / 1024:.1f} GiB RAM",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, "
        f"{_first_line([pg, '--version']) if pg else 'PostgreSQL not installed'}, "
        f"{_first_line([wrk_binary(), '--version']).split(' Copyright')[0]}",
    ]


def report(results: Sequence[Measurement], opts: Options, when: dt.datetime) -> str:
    runs = sorted({m.run for m in results})
    invalid = [m for m in results if m.wrk.errors]
    lines = [
        f"# API benchmark, {when:%Y-%m-%d %H:%M}",
        "",
        "Command: `make bench` (`.venv/bin/python -m bench.api`)."
        f" {opts.connections} concurrent connections, wrk `-t {opts.threads}`,"
        f" {opts.warmup_s} s warm-up then {opts.duration_s} s measured per scenario;"
        f" {len(runs)} run(s) alternating the backends; figures are the median over runs."
        " CPU is a percentage of one core (the machine has "
        f"{len(os.sched_getaffinity(0))}); the server, PostgreSQL and wrk share the cores.",
        "",
        *machine_description(),
        "",
        median_table(results, opts),
        "",
    ]
    if invalid:
        lines += [
            f"**INVALID**: {len(invalid)} measurement(s) had errors (non-2xx or socket errors).",
            "",
        ]
        lines += [f"- {m.backend}/{m.scenario} run {m.run}: {m.wrk.first_error}" for m in invalid]
        lines.append("")
    if opts.profile:
        lines += [
            "py-spy was sampling the server during these runs: the figures are perturbed.",
            "",
        ]
    lines += ["Every run:", "", runs_table(results), ""]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: %(default)s")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated: %(default)s")
    p.add_argument("--runs", type=int, help="runs, alternating backends (3; 1 with --profile)")
    p.add_argument("--duration", type=int, default=15, help="seconds measured (%(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up (%(default)s)")
    p.add_argument("--connections", type=int, default=50, help="%(default)s")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (%(default)s)")
    p.add_argument(
        "--budget",
        type=float,
        default=330,
        help="seconds: no run is started that would end later than this (%(default)s)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during each measurement (one run unless --runs)",
    )
    args = p.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    if not set(backends) <= set(BACKENDS) or not set(scenarios) <= set(SCENARIOS):
        p.error(f"backends are {BACKENDS}, scenarios {SCENARIOS}")
    runs = args.runs if args.runs is not None else 1 if args.profile else 3
    if runs < 1 or args.duration < 1 or args.warmup < 0 or args.connections < args.threads:
        p.error("need --runs >= 1, --duration >= 1, --warmup >= 0, --connections >= --threads")
    return Options(
        backends=backends,
        scenarios=scenarios,
        runs=runs,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        budget_s=args.budget,
        profile=args.profile,
    )


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hz-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    when = dt.datetime.now()
    wrk_binary()  # fail early when wrk is missing
    results: list[Measurement] = []
    profiles: list[str] = []
    numbers = Numbers()
    per_run = len(opts.backends) * len(opts.scenarios) * (opts.warmup_s + opts.duration_s + 2)
    with workspace() as workdir, contextlib.ExitStack() as stack:
        targets: dict[str, Target] = {}
        for key in opts.backends:
            _say(f"preparing {LABELS[key]}: migrate, seed the demo consortium, serve, sign in")
            targets[key] = start_target(key, workdir, stack)
        for run in range(1, opts.runs + 1):
            if run > 1 and time.monotonic() - started + per_run > opts.budget_s:
                _say(f"stopping after {run - 1} run(s): another would exceed the time budget")
                break
            order = opts.backends if run % 2 else tuple(reversed(opts.backends))
            for key in order:
                for scenario in opts.scenarios:
                    target = targets[key]
                    raw = workdir / f"profile-{key}-{scenario}-{run}.txt"
                    m = measure(target, scenario, run, numbers, opts, raw if opts.profile else None)
                    results.append(m)
                    w = m.wrk
                    _say(
                        f"run {run} {target.label:10} {scenario:5}: {w.rps:7,.0f} req/s "
                        f"p50 {_ms(w.p50_ms)} ms p99 {_ms(w.p99_ms)} ms errors {w.errors} "
                        f"| CPU server {_cpu(m.share(m.server_s))} "
                        f"({m.per_request_ms(m.server_s):.1f} ms/req) "
                        f"db {_cpu(m.share(m.database_s))} wrk {_cpu(m.share(m.wrk_s))} "
                        f"others {_cpu(m.share(m.other_s))}"
                    )
                    if w.errors:
                        _say(f"  first error: {w.first_error or '(socket errors)'}")
                    if m.server_log_errors:
                        _say(f"  the server logged {m.server_log_errors} ERROR line(s)")
                    if opts.profile and raw.exists():
                        title = f"{target.label}, {SCENARIO_LABELS[scenario]}, run {run}"
                        seconds = max(opts.duration_s - 1, 1)
                        profiles.append(Profile.read(raw).markdown(title, seconds))
    text = report(results, opts, when)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    if opts.profile:
        out = RESULTS / f"profile-{when:%Y-%m-%d}.md"
        out.write_text(
            text + "\n## Where the server's time goes (py-spy)\n\n" + "\n".join(profiles)
        )
    else:
        out = RESULTS / f"api-{when:%Y-%m-%d}.md"
        out.write_text(text)
    _say(f"written to {out.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")
    return 1 if any(m.wrk.errors for m in results) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (LoadError, RuntimeError, subprocess.CalledProcessError) as exc:
        _say(f"bench: {exc}")
        raise SystemExit(2) from None
