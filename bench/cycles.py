"""``make bench-cycles``: full consult cycles per second on SQLite and PostgreSQL.

A cycle is one consult from request to acknowledgement: create (and submit) → claim → draft report
→ sign → the requesting doctor's feed delivers ``report.signed`` → ack the feed → acknowledge the
consult (``bench/cycleclient.py`` describes each step). 50 cycles run at once (a closed loop: each
of 50 clients starts its next cycle when the last one ends), by 10 grassroots doctors at nine
township and village institutions and 10 specialists, two per centre.

For each backend a migrated database is seeded with the demo consortium plus the benchmark's
doctors, specialists and patients; ``huizhen serve`` runs as a child process with
``HUIZHEN_LOG_LEVEL=WARNING``; every user signs in once; one cycle per doctor primes the feeds.
The clients run in a separate process (``--client-processes``) so that their CPU is measured apart.
Each measurement is a warm-up and a fixed window; runs alternate the backends and the median of
the runs is reported, with the CPU of the server, PostgreSQL, the clients and everything else.

``python -m bench.cycles --help`` lists the knobs; ``--profile`` runs the server under
``bench.probe`` (per-step SQL statements, commits, round trips, the events lock) and py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import select

from bench import cycleclient
from bench.api import (
    DEMO_PASSWORD,
    LABELS,
    Target,
    _cpu,
    _first_line,
    _request,
    _say,
    prepare_database,
    settle,
    workspace,
)
from bench.cpu import (
    machine_sample,
    machine_use,
    process_seconds,
    processes_seconds,
    thread_seconds,
)
from bench.profile import Profile, start_recording
from server.accounts import create_user
from server.db import make_engine, make_sessionmaker, unit_of_work
from server.identity import make_national_id
from server.models import Centre, Institution, Patient, PatientLink, Role, Sex
from server.seed import REGION
from server.sessions import Passwords
from tests.services import HuizhenProcess, postgres_bin, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("sqlite", "postgresql")
#: ``none``: the probe and nothing else, the baseline of an experiment.
WHATIFS = ("none", "no-events-lock", "no-pre-ping")
VARIANTS = {
    "one-step": "create with `submit: true`",
    "two-step": "create a draft, then `POST /consults/{id}/submit`",
}

#: Grassroots doctors: (username, institution code); the first three are the demo's.
DOCTORS: tuple[tuple[str, str], ...] = (
    ("chengguan", "chengguan"),
    ("baji", "baji"),
    ("jiaji", "jiaji"),
    ("bench-huji", "huji"),
    ("bench-chengguan", "chengguan"),
    ("bench-dongguan", "dongguan"),
    ("bench-wangzhuang", "wangzhuang"),
    ("bench-duanzhai", "duanzhai"),
    ("bench-liulou", "liulou"),
    ("bench-zhangwan", "zhangwan"),
)
#: Specialists per centre (all at the lead hospital); ``bench-*`` are made for the benchmark.
SPECIALISTS: dict[str, tuple[str, ...]] = {
    "ecg": ("ecg", "bench-ecg"),
    "imaging": ("radiology", "bench-imaging"),
    "consultation": ("consult", "neuro"),
    "lab": ("lab", "bench-lab"),
    "pathology": ("pathology", "bench-pathology"),
}
PATIENTS_PER_INSTITUTION = 8
#: Cycles run one at a time after a profiled measurement, for each request's own CPU.
SEQUENTIAL_CYCLES = 60
_SURNAMES = "王李张刘陈杨黄赵吴周"
_GIVEN = ("秀兰", "建华", "桂英", "志强", "玉珍", "国庆", "春梅", "德胜")

#: Server routes (handler names) and the cycle step each serves.
ROUTE_STEPS = {
    "create_consult": "create",
    "submit_consult": "submit",
    "claim_consult": "claim",
    "create_report": "report draft",
    "sign_report": "sign",
    "list_events": cycleclient.POLL,
    "ack_events": "events ack",
    "acknowledge_consult": "acknowledge",
}


# -- one backend: database, users and patients, server, sign-ins ---------------------------


async def _add_cast(url: str) -> dict[str, list[str]]:
    """The benchmark's doctors, specialists and patients, as ``huizhen create-user`` and the
    admin API make accounts (``server.accounts.create_user``, with its role checks). Returns the
    new patients' ids by institution code."""
    engine = make_engine(url)
    passwords = Passwords()
    password_hash = await passwords.hash(DEMO_PASSWORD)
    patients: dict[str, list[str]] = defaultdict(list)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            institutions = {i.code: i for i in await db.scalars(select(Institution))}
            accounts: list[tuple[str, str, set[Role], set[Centre]]] = [
                (name, code, {Role.GRASSROOTS_DOCTOR}, set())
                for name, code in DOCTORS
                if name.startswith("bench-")
            ]
            accounts += [
                (name, "xrmyy", {Role.SPECIALIST}, {Centre(centre)})
                for centre, names in SPECIALISTS.items()
                for name in names
                if name.startswith("bench-")
            ]
            for name, code, roles, centres in accounts:
                await create_user(
                    db,
                    username=name,
                    display_name=f"压测 {name.removeprefix('bench-')}",
                    institution=institutions[code],
                    password_hash=password_hash,
                    roles=roles,
                    centres=centres,
                )
            serial = 0
            for code in dict.fromkeys(code for _, code in DOCTORS):
                for k in range(PATIENTS_PER_INSTITUTION):
                    serial += 1
                    birth = dt.date(1940, 1, 1) + dt.timedelta(days=serial * 211)
                    sequence = 500 + serial
                    patient = Patient(
                        id=uuid.uuid4(),
                        national_id=make_national_id(REGION, birth, sequence),
                        name=_SURNAMES[serial % len(_SURNAMES)] + _GIVEN[k],
                        sex=Sex.MALE if sequence % 2 else Sex.FEMALE,
                        birth_date=birth,
                        registered_by_institution_id=institutions[code].id,
                    )
                    db.add(patient)
                    await db.flush()
                    db.add(PatientLink(patient_id=patient.id, institution_id=institutions[code].id))
                    patients[code].append(str(patient.id))
    finally:
        await engine.dispose()
    return dict(patients)


class ProbedServer(HuizhenProcess):
    """``huizhen serve`` under ``bench.probe`` (same environment, same readiness check)."""

    def start(self, timeout: float = 60) -> HuizhenProcess:
        env = {
            **os.environ,
            **self.env,
            "HUIZHEN_HOST": "127.0.0.1",
            "HUIZHEN_PORT": str(self.port),
        }
        data_dir = Path(env["HUIZHEN_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.probe"], env=env, stdout=log, stderr=log, cwd=ROOT
            )
        wait_until(self._ready, timeout, f"huizhen (probed) on port {self.port}")
        return self


@dataclass
class Backend:
    """A backend under test, its signed-in cast and the doctors' feed positions."""

    target: Target
    doctors: list[dict[str, Any]]
    specialists: dict[str, list[dict[str, str]]]
    probe_out: Path | None = None
    dumps: int = 0
    #: The experiment this server runs (``bench.probe``'s ``HZBENCH_WHATIF``), or "".
    whatif: str = ""

    @property
    def label(self) -> str:
        return name(self.target.key, self.whatif)

    def probe_records(self) -> dict[str, Any]:
        """The probe's records since the last call (it writes them on SIGUSR1): ``records``, and
        ``examples``, the SQL of one request per route."""
        if self.probe_out is None:
            return {"records": [], "examples": {}}
        self.dumps += 1
        path = Path(f"{self.probe_out}.{self.dumps}")
        os.kill(self.target.server_pid, signal.SIGUSR1)
        wait_until(path.exists, 30, "the probe's records")
        dump: dict[str, Any] = json.loads(path.read_text())
        path.unlink()
        return dump

    def client_config(self, opts: Options) -> dict[str, Any]:
        return {
            "url": self.target.server.url,
            "doctors": self.doctors,
            "specialists": self.specialists,
            "poll_interval_s": opts.poll_interval_s,
            "poll_limit": opts.poll_limit,
        }

    def run_sequential(self, opts: Options, cycles: int | None = None) -> None:
        after = asyncio.run(cycleclient.sequential(self.client_config(opts), cycles))
        for doctor in self.doctors:
            doctor["after"] = after[doctor["username"]]


def _sign_in(url: str, username: str) -> str:
    body = _request(
        "POST", url + "/api/v1/auth/login", {"username": username, "password": DEMO_PASSWORD}
    )
    return str(body["token"])


def name(backend: str, whatif: str) -> str:
    return LABELS[backend] + (f" ({whatif})" if whatif else "")


def start_backend(
    key: str, workdir: Path, stack: contextlib.ExitStack, opts: Options, whatif: str = ""
) -> Backend:
    data_dir = workdir / (f"{key}-{whatif}" if whatif else key)
    env, url, postgres = prepare_database(key, data_dir, workdir, stack)
    patients = asyncio.run(_add_cast(url))
    probe_out = None
    if opts.probe:
        probe_out = data_dir / "probe.json"
        env["HZBENCH_PROBE_OUT"] = str(probe_out)
        env["HZBENCH_WHATIF"] = whatif.replace("+", ",")
        server: HuizhenProcess = ProbedServer(env=env)
    else:
        server = HuizhenProcess(env=env)
    stack.callback(server.stop)
    server.start()
    target = Target(key=key, server=server, postgres=postgres)
    names = [name for name, _ in DOCTORS] + [n for ns in SPECIALISTS.values() for n in ns]
    with ThreadPoolExecutor(4) as pool:  # argon2 costs 100-200 ms a sign-in
        tokens = dict(zip(names, pool.map(lambda n: _sign_in(server.url, n), names), strict=True))
    doctors = [
        {"username": name, "token": tokens[name], "patients": patients[code], "after": 0}
        for name, code in DOCTORS
    ]
    specialists = {
        centre: [{"username": n, "token": tokens[n]} for n in ns]
        for centre, ns in SPECIALISTS.items()
    }
    backend = Backend(target, doctors, specialists, probe_out, whatif=whatif)
    backend.run_sequential(opts)  # prime: one cycle per doctor
    backend.probe_records()  # forget the set-up's requests
    return backend


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    runs: int
    draft_runs: int
    duration_s: int
    draft_duration_s: int
    warmup_s: int
    clients: int
    client_processes: int
    poll_interval_s: float
    poll_limit: int
    budget_s: float
    profile: bool
    #: Experiments, each run on a server of its own (``bench.probe``'s ``HZBENCH_WHATIF``, changes
    #: joined by ``+``; ``none`` for the probe alone), measured in turn.
    whatif: tuple[str, ...] = ()

    @property
    def probe(self) -> bool:
        return self.profile or bool(self.whatif)


@dataclass
class Measurement:
    backend: str
    variant: str
    run: int
    whatif: str
    window_s: float
    #: Latencies in seconds of the answers that arrived in the window, by step.
    steps: dict[str, list[float]]
    errors: dict[str, int]
    error_samples: list[str]
    unfinished: int
    cursor_moved_back: int
    #: CPU seconds in the window: server (all threads), its main thread, PostgreSQL (all its
    #: processes), the client processes, and the machine (busy and stolen, all cores).
    wall_s: float
    server_s: float
    server_main_s: float
    database_s: float
    clients_s: float
    harness_s: float
    machine_busy_s: float
    machine_steal_s: float
    server_log_errors: int
    probe: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    profile_md: str = ""
    sequential: Sequential | None = None

    @property
    def label(self) -> str:
        return name(self.backend, self.whatif)

    @property
    def cycles(self) -> int:
        return len(self.steps.get(cycleclient.CYCLE, []))

    @property
    def cps(self) -> float:
        return self.cycles / self.window_s

    @property
    def window_errors(self) -> int:
        return self.errors.get("window", 0)

    def share(self, seconds: float) -> float:
        return seconds / self.wall_s if self.wall_s > 0 else 0.0

    def per_cycle_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.cycles if self.cycles else 0.0

    @property
    def other_s(self) -> float:
        used = self.server_s + self.database_s + self.clients_s + self.harness_s
        return max(self.machine_busy_s - used, 0.0)

    @property
    def polls_per_cycle(self) -> float:
        polls = len(self.steps.get(cycleclient.POLL, []))
        return polls / self.cycles if self.cycles else 0.0


def client_configs(
    backend: Backend, variant: str, opts: Options, window_s: int
) -> list[dict[str, Any]]:
    """One configuration per client process: a share of the doctors and of the cycles."""
    start_at = time.monotonic() + 1.5  # the processes import aiohttp meanwhile
    configs = []
    n = opts.client_processes
    for p in range(n):
        doctors = backend.doctors[p::n]
        cycles = opts.clients // n + (1 if p < opts.clients % n else 0)
        configs.append(
            {
                "url": backend.target.server.url,
                "start_at": start_at,
                "warmup_s": opts.warmup_s,
                "window_s": window_s,
                "variant": variant,
                "cycles": cycles,
                "first_cycle": p,
                "doctors": doctors,
                "specialists": backend.specialists,
                "poll_interval_s": opts.poll_interval_s,
                "poll_limit": opts.poll_limit,
            }
        )
    return configs


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def measure(backend: Backend, variant: str, run: int, opts: Options, workdir: Path) -> Measurement:
    target = backend.target
    window_s = opts.duration_s if variant == "one-step" else opts.draft_duration_s
    log_offset = target.log_size()
    configs = client_configs(backend, variant, opts, window_s)
    clients = []
    for p, cfg in enumerate(configs):
        path = workdir / f"client-{p}.json"
        path.write_text(json.dumps(cfg))
        clients.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.cycleclient", str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
        )
    window_start = configs[0]["start_at"] + opts.warmup_s
    window_end = window_start + window_s
    pid = target.server_pid
    raw_profile = workdir / f"profile-{target.key}-{backend.whatif}-{variant}-{run}.txt"
    _sleep_until(window_start)
    spy = start_recording(pid, max(window_s - 1, 1), raw_profile) if opts.profile else None
    db_pids = target.database_pids()
    client_pids = [p.pid for p in clients]
    before = (
        process_seconds(pid),
        thread_seconds(pid, pid),
        processes_seconds(db_pids),
        processes_seconds(client_pids),
        process_seconds(os.getpid()),
        machine_sample(),
        time.monotonic(),
    )
    _sleep_until(window_end)
    wall = time.monotonic() - before[6]
    machine = machine_use(before[5], machine_sample(), wall)
    server_s = process_seconds(pid) - before[0]
    main_s = thread_seconds(pid, pid) - before[1]
    db_after = processes_seconds({*db_pids, *target.database_pids()})
    clients_s = sum(process_seconds(p) - before[3][p] for p in client_pids)
    harness_s = process_seconds(os.getpid()) - before[4]
    results = []
    for proc in clients:
        out, err = proc.communicate(timeout=window_s + opts.warmup_s + 150)
        if proc.returncode != 0:
            raise RuntimeError(f"a client process failed:\n{err.decode(errors='replace')[-3000:]}")
        results.append(json.loads(out))
    profile_md = ""
    if spy is not None:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            _say(f"  py-spy failed: {err.decode(errors='replace')[-500:]}")
        elif raw_profile.exists():
            title = f"{backend.label}, {variant} cycles, run {run}"
            profile_md = Profile.read(raw_profile).markdown(title, max(window_s - 1, 1))
    settle(pid)
    steps: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    samples: list[str] = []
    for r in results:
        for step, values in r["steps"].items():
            steps[step] += values
        errors.update(r["errors"])
        samples += r["error_samples"]
        for name, after in r["after"].items():
            next(d for d in backend.doctors if d["username"] == name)["after"] = after
    dump = backend.probe_records()
    records = [r for r in dump["records"] if window_start <= r["end"] <= window_end]
    return Measurement(
        backend=target.key,
        variant=variant,
        run=run,
        whatif=backend.whatif,
        window_s=window_s,
        steps=dict(steps),
        errors=dict(errors),
        error_samples=samples[: cycleclient.ERROR_SAMPLES],
        unfinished=sum(r["unfinished"] for r in results),
        cursor_moved_back=sum(r["cursor_moved_back"] for r in results),
        wall_s=wall,
        server_s=server_s,
        server_main_s=main_s,
        database_s=sum(after - before[2].get(p, 0.0) for p, after in db_after.items()),
        clients_s=clients_s,
        harness_s=harness_s,
        machine_busy_s=machine.busy_cores * wall,
        machine_steal_s=machine.steal_cores * wall,
        server_log_errors=target.log_errors_since(log_offset),
        probe=records,
        examples=dump["examples"],
        profile_md=profile_md,
    )


@dataclass
class Sequential:
    """Cycles one at a time against the probed server: each request's own CPU."""

    cycles: int
    wall_s: float
    server_s: float
    server_main_s: float
    records: list[dict[str, Any]]


def measure_sequential(backend: Backend, opts: Options) -> Sequential:
    pid = backend.target.server_pid
    backend.probe_records()
    before = (process_seconds(pid), thread_seconds(pid, pid), time.monotonic())
    backend.run_sequential(opts, SEQUENTIAL_CYCLES)
    wall = time.monotonic() - before[2]
    server_s = process_seconds(pid) - before[0]
    main_s = thread_seconds(pid, pid) - before[1]
    return Sequential(SEQUENTIAL_CYCLES, wall, server_s, main_s, backend.probe_records()["records"])


# -- statistics and reporting ---------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _med(ms: Sequence[Measurement], get: Callable[[Measurement], float]) -> float:
    return statistics.median(get(m) for m in ms)


def step_names(variant: str) -> tuple[str, ...]:
    steps = cycleclient.ONE_STEP if variant == "one-step" else cycleclient.TWO_STEP
    return (*steps, cycleclient.CYCLE, cycleclient.POLL)


HEADER = (
    "| backend | cycle | cycles/s | cycle p50 ms | cycle p99 ms | errors | server CPU "
    "| server CPU per cycle | PostgreSQL CPU | PostgreSQL CPU per cycle | client CPU "
    "| other processes' CPU | steal |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def groups(results: Sequence[Measurement]) -> dict[tuple[str, str, str], list[Measurement]]:
    out: dict[tuple[str, str, str], list[Measurement]] = defaultdict(list)
    for m in sorted(results, key=lambda m: (m.variant, m.backend, m.whatif)):
        out[(m.backend, m.whatif, m.variant)].append(m)
    return out


def median_table(results: Sequence[Measurement]) -> str:
    rows = [HEADER]
    for (backend, whatif, variant), ms in groups(results).items():
        pg = backend == "postgresql"
        rows.append(
            f"| {name(backend, whatif)} | {variant} ({len(ms)} run{'s' if len(ms) > 1 else ''}) "
            f"| {_med(ms, lambda m: m.cps):.1f} "
            f"| {_ms(_med(ms, lambda m: percentile(m.steps.get(cycleclient.CYCLE, []), 0.5)))} "
            f"| {_ms(_med(ms, lambda m: percentile(m.steps.get(cycleclient.CYCLE, []), 0.99)))} "
            f"| {sum(m.window_errors for m in ms)} "
            f"| {_cpu(_med(ms, lambda m: m.share(m.server_s)))} "
            f"| {_med(ms, lambda m: m.per_cycle_ms(m.server_s)):.0f} ms "
            f"| {_cpu(_med(ms, lambda m: m.share(m.database_s))) if pg else '–'} "
            f"| {f'{_med(ms, lambda m: m.per_cycle_ms(m.database_s)):.0f} ms' if pg else '–'} "
            f"| {_cpu(_med(ms, lambda m: m.share(m.clients_s)))} "
            f"| {_cpu(_med(ms, lambda m: m.share(m.other_s)))} "
            f"| {_cpu(_med(ms, lambda m: m.share(m.machine_steal_s)))} |"
        )
    return "\n".join(rows)


def steps_table(label: str, variant: str, ms: Sequence[Measurement]) -> str:
    rows = [
        f"**{label}, {variant}** ({VARIANTS[variant]}; median over {len(ms)} run(s) of "
        "each run's percentiles):",
        "",
        "| step | answers in window | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for step in step_names(variant):
        if not any(m.steps.get(step) for m in ms):
            continue
        answers = [m.steps.get(step, []) for m in ms]
        count = statistics.median(len(a) for a in answers)
        cells = [
            _ms(statistics.median(percentile(a, q) for a in answers)) for q in (0.5, 0.9, 0.99, 1.0)
        ]
        label = f"**{step}**" if step == cycleclient.CYCLE else step
        rows.append(f"| {label} | {count:,.0f} | {' | '.join(cells)} |")
    polls = _med(ms, lambda m: m.polls_per_cycle)
    rows += ["", f"Feed polls per cycle: {polls:.2f}.", ""]
    return "\n".join(rows)


def runs_table(results: Sequence[Measurement]) -> str:
    rows = [
        "| run | backend | cycle | cycles | cycles/s | cycle p50 ms | cycle p99 ms "
        "| errors (warm-up/window/drain) | unfinished | server CPU | its main thread "
        "| server ms/cycle | PostgreSQL CPU | PostgreSQL ms/cycle | client CPU | other CPU "
        "| steal | server log ERRORs | feed cursor moved back |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        c = m.steps.get(cycleclient.CYCLE, [])
        e = m.errors
        rows.append(
            f"| {m.run} | {m.label} | {m.variant} | {m.cycles:,} | {m.cps:.1f} "
            f"| {_ms(percentile(c, 0.5))} | {_ms(percentile(c, 0.99))} "
            f"| {e.get('warmup', 0)}/{e.get('window', 0)}/{e.get('drain', 0)} | {m.unfinished} "
            f"| {_cpu(m.share(m.server_s))} | {_cpu(m.share(m.server_main_s))} "
            f"| {m.per_cycle_ms(m.server_s):.1f} | {_cpu(m.share(m.database_s))} "
            f"| {m.per_cycle_ms(m.database_s):.1f} | {_cpu(m.share(m.clients_s))} "
            f"| {_cpu(m.share(m.other_s))} | {_cpu(m.share(m.machine_steal_s))} "
            f"| {m.server_log_errors} | {m.cursor_moved_back} |"
        )
    return "\n".join(rows)


# -- the probe's records: statements, commits, round trips, the events lock ----------------


def _union(intervals: Iterable[tuple[float, float]]) -> float:
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def probe_report(m: Measurement, statements: bool = True) -> str:
    """The probe's tables for one measurement; ``statements``: with each step's statements."""
    recs = [r for r in m.probe if r["route"] in ROUTE_STEPS and r["ok"]]
    if not recs or not m.cycles:
        return ""
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_route[r["route"]].append(r)
    order = [r for r in ROUTE_STEPS if r in by_route]
    out = [
        f"#### {m.label}, {m.variant} cycles, run {m.run}: database work per step",
        "",
        f"{len(recs):,} requests answered in the {m.window_s:.0f} s window, {m.cycles:,} cycles. "
        "*start → 1st SQL* is the time from the endpoint's start to its first statement "
        "(waiting for a pooled connection, and on PostgreSQL the pre-ping); *SQL wall* the sum "
        "over the request's statements of send → answer back in Python (round trip, database "
        "work and the wait for the event loop). *Other round trips*: on PostgreSQL BEGIN, the "
        "pool's pre-ping (BEGIN, `;`, ROLLBACK) and PREPARE; on SQLite, aiosqlite's hand-offs to "
        "its thread instead (not counted as round trips in the per-cycle sum).",
        "",
        "| step (route) | requests | per cycle | SQL statements | commits | other round trips "
        "| request p50 / p99 ms | start → 1st SQL p50 / p99 ms | SQL wall p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_cycle_statements = per_cycle_commits = per_cycle_trips = 0.0
    for route in order:
        rs = by_route[route]
        n = len(rs)
        per_cycle = n / m.cycles
        stmts = sum(len(r["statements"]) for r in rs) / n
        commits = sum(r["commits"] for r in rs) / n
        extra = sum(sum(r["extra"].values()) for r in rs) / n
        per_cycle_statements += stmts * per_cycle
        per_cycle_commits += commits * per_cycle
        trips = extra if m.backend == "postgresql" else 0.0
        per_cycle_trips += (stmts + commits + trips) * per_cycle
        wall = [r["end"] - r["start"] for r in rs]
        first = [r["statements"][0][1] - r["start"] for r in rs if r["statements"]]
        sql = [sum(b - a for _, a, b in r["statements"]) for r in rs]
        out.append(
            f"| {ROUTE_STEPS[route]} (`{route}`) | {n:,} | {per_cycle:.2f} | {stmts:.1f} "
            f"| {commits:.1f} | {extra:.1f} | {_ms(percentile(wall, 0.5))} / "
            f"{_ms(percentile(wall, 0.99))} | {_ms(percentile(first, 0.5))} / "
            f"{_ms(percentile(first, 0.99))} | {_ms(percentile(sql, 0.5))} |"
        )
    out += [
        "",
        f"Per cycle: **{per_cycle_statements:.1f} SQL statements, {per_cycle_commits:.1f} "
        f"commits, {per_cycle_trips:.1f} database round trips**"
        + (" (statements + commits + other)." if m.backend == "postgresql" else "."),
        "",
    ]
    if statements:
        out += statement_table(by_route, order)
    when = f"{m.cycles / m.window_s:.0f} cycles/s"
    if "no-events-lock" in m.whatif:
        when += "; here `SELECT $1::bigint` in its place, no lock"
    out += lock_report(recs, m.window_s, m.cycles, when)
    out += sequential_report(m)
    return "\n".join(out)


def statement_table(by_route: dict[str, list[dict[str, Any]]], order: list[str]) -> list[str]:
    out = [
        "Statements of each step, per request (in the order of first use):",
        "",
        "| step | statement (verb, tables) | per request | p50 ms send → answer |",
        "|---|---|---:|---:|",
    ]
    for route in order:
        rs = by_route[route]
        counts: Counter[str] = Counter()
        walls: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for key, a, b in r["statements"]:
                counts[key] += 1
                walls[key].append(b - a)
        extras: Counter[str] = Counter()
        for r in rs:
            extras.update(r["extra"])
        for key in counts:
            out.append(
                f"| {ROUTE_STEPS[route]} | `{key}` | {counts[key] / len(rs):.2f} "
                f"| {_ms(percentile(walls[key], 0.5))} |"
            )
        for key, c in extras.items():
            out.append(f"| {ROUTE_STEPS[route]} | {key} | {c / len(rs):.2f} | |")
    out.append("")
    return out


def lock_report(
    records: list[dict[str, Any]], window_s: float, cycles: int, when: str
) -> list[str]:
    locked = [r for r in records if r["lock_got"] and r["commit_done"] and r["ok"]]
    if not locked:
        return []
    waits = [r["lock_got"] - r["lock_sent"] for r in locked]
    holds = [r["commit_done"] - r["lock_got"] for r in locked]
    to_commit = [r["commit_sent"] - r["lock_got"] for r in locked]
    commits = [r["commit_done"] - r["commit_sent"] for r in locked]
    inside: Counter[str] = Counter()
    for r in locked:
        for key, a, _ in r["statements"]:
            if r["lock_got"] <= a <= (r["commit_sent"] or r["commit_done"]):
                inside[key] += 1
    others = [
        b - a
        for r in records
        for key, a, b in r["statements"]
        if not key.startswith("SELECT pg_advisory") and r["route"] in ROUTE_STEPS
    ]
    held = _union((r["lock_got"], r["commit_done"]) for r in locked)
    return [
        f"**The events lock, {when}** (`pg_advisory_xact_lock` in `server/events.py`): taken "
        f"by {len(locked):,} transactions ({len(locked) / window_s:.0f}/s, "
        f"{len(locked) / cycles:.2f} per cycle).",
        "",
        "| | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | "
            + " | ".join(_ms(percentile(v, q)) for q in (0.5, 0.9, 0.99, 1.0))
            + " |"
            for label, v in (
                ("lock statement sent → answer (wait)", waits),
                ("lock answer → COMMIT answer (held)", holds),
                ("of which lock answer → COMMIT sent", to_commit),
                ("of which COMMIT sent → answer", commits),
                ("any other statement, send → answer (for comparison)", others),
            )
        ),
        "",
        f"Held {held / window_s:.0%} of the time (union of the hold intervals as the server "
        "saw them; PostgreSQL releases it slightly before the COMMIT answer reaches Python). "
        f"On average {sum(waits) / window_s:.2f} requests were waiting for it. Statements run "
        "while holding it, per locked transaction: "
        + ", ".join(f"`{k}` {c / len(locked):.2f}" for k, c in inside.most_common())
        + ", then COMMIT.",
        "",
    ]


def sequential_report(m: Measurement) -> list[str]:
    seq = m.sequential
    if seq is None:
        return []
    recs = [r for r in seq.records if r["route"] in ROUTE_STEPS and r["ok"]]
    if not recs:
        return []
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_route[r["route"]].append(r)
    in_endpoints = sum(r["cpu"] for r in recs)
    out = [
        f"#### {m.label}: each step's own CPU, {seq.cycles} cycles one at a time",
        "",
        "After the window, the same server ran cycles one after the other (one request in "
        "flight, apart from the doctor's feed poller), so the main thread's CPU from an "
        "endpoint's start to its end is that request's own: token look-up, handler, SQL, "
        "events, commit, response model (not HTTP parsing and writing, middlewares or the "
        "event loop, which are in the remainder). The probe's own cost is included.",
        "",
        "| step (route) | requests per cycle | CPU ms per request | per cycle | share |",
        "|---|---:|---:|---:|---:|",
    ]
    total_per_cycle = seq.server_s * 1000 / seq.cycles
    for route in (r for r in ROUTE_STEPS if r in by_route):
        rs = by_route[route]
        per_cycle = len(rs) / seq.cycles
        cpu = statistics.mean(r["cpu"] for r in rs) * 1000
        out.append(
            f"| {ROUTE_STEPS[route]} | {per_cycle:.2f} | {cpu:.1f} | {cpu * per_cycle:.1f} "
            f"| {cpu * per_cycle / total_per_cycle:.0%} |"
        )
    rest = total_per_cycle - in_endpoints * 1000 / seq.cycles
    out += [
        f"| outside the endpoints (HTTP, middlewares, event loop, other threads) | | "
        f"| {rest:.1f} | {rest / total_per_cycle:.0%} |",
        f"| **server process, whole cycle** | | | **{total_per_cycle:.1f}** | 100% |",
        "",
        f"Under load (the window above) the server used {m.per_cycle_ms(m.server_s):.1f} ms of "
        "CPU per cycle.",
        "",
    ]
    out += lock_report(seq.records, seq.wall_s, seq.cycles, "one request at a time")
    return out


def sql_examples(m: Measurement) -> list[str]:
    out = [
        f"#### {m.label}: the SQL of one request of each step",
        "",
        "As SQLAlchemy sent it (parameters elided by the driver's placeholders), each cut at "
        "240 characters.",
        "",
    ]
    for route, step in ROUTE_STEPS.items():
        texts = m.examples.get(route)
        if not texts:
            continue
        out += [f"{step} (`{route}`), {len(texts)} statements:", "", "```sql"]
        for text in texts:
            one = " ".join(text.split())
            out.append(one if len(one) <= 240 else one[:239] + "…")
        out += ["```", ""]
    return out


# -- the report -----------------------------------------------------------------------------


def _git(*argv: str) -> str:
    out = subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT, check=False)
    return out.stdout.rstrip()


def machine_lines() -> list[str]:
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
    dirty = [line[3:] for line in _git("status", "--porcelain", "server").splitlines()]
    return [
        f"- CPU: {os.cpu_count()} × {model} (`nproc` = {len(os.sched_getaffinity(0))}), "
        f"{mem_kb / 1024 / 1024:.1f} GiB RAM",
        f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, "
        f"{_first_line([pg, '--version']) if pg else 'PostgreSQL not installed'}; "
        f"aiohttp {version('aiohttp')}, SQLAlchemy {version('sqlalchemy')}, "
        f"asyncpg {version('asyncpg')}, aiosqlite {version('aiosqlite')}",
        f"- Server code: commit {_git('rev-parse', '--short', 'HEAD').strip()}"
        + (
            f" with uncommitted changes in {len(dirty)} path(s) under `server/`"
            f" ({', '.join(dirty[:8])}{', …' if len(dirty) > 8 else ''})"
            if dirty
            else ""
        ),
    ]


def report(results: Sequence[Measurement], opts: Options, when: dt.datetime) -> str:
    lines = [
        f"# Consult cycle benchmark, {when:%Y-%m-%d %H:%M}",
        "",
        "Command: `make bench-cycles` (`.venv/bin/python -m bench.cycles`). "
        f"{opts.clients} concurrent cycles (closed loop) by {len(DOCTORS)} grassroots doctors and "
        f"{sum(len(s) for s in SPECIALISTS.values())} specialists, from "
        f"{opts.client_processes} client process(es) (aiohttp, keep-alive); {opts.warmup_s} s "
        f"warm-up, then {opts.duration_s} s measured ({opts.draft_duration_s} s for the two-step "
        "variant); runs alternate the backends; figures are the median over runs. "
        "Feed: one poller per doctor, polling while one of the doctor's cycles waits for its "
        "event, "
        + (
            f"at most every {opts.poll_interval_s:g} s"
            if opts.poll_interval_s > 0
            else "the next poll as soon as the last one answered"
        )
        + f", `limit={opts.poll_limit}`. CPU is a percentage of one core "
        f"(the machine has {len(os.sched_getaffinity(0))}).",
        "",
        *machine_lines(),
        "",
        median_table(results),
        "",
    ]
    invalid = [m for m in results if m.window_errors or m.unfinished]
    if invalid:
        lines += [f"**INVALID**: {len(invalid)} measurement(s) had errors in the window.", ""]
    disturbed = [m for m in results if m.share(m.machine_steal_s) >= 0.1]
    if disturbed:
        lines += [
            "**Disturbed**: the hypervisor stole 10% or more of the CPU during "
            + ", ".join(f"{m.label} {m.variant} run {m.run}" for m in disturbed)
            + ": those windows measure the host, not Huizhen.",
            "",
        ]
    sampled = [s for m in results for s in m.error_samples]
    if sampled:
        lines += ["Errors (first few):", ""] + [f"- `{s[:300]}`" for s in sampled[:10]] + [""]
    lines += ["## Steps", ""]
    for (backend, whatif, variant), ms in groups(results).items():
        lines.append(steps_table(name(backend, whatif), variant, ms))
    if opts.whatif:
        lines += [
            "**Experiments, not figures of record**: one server per experiment, each under "
            "`bench.probe` with `HZBENCH_WHATIF` set to the name in brackets (`none`: the probe "
            "alone, the baseline); see `bench/probe.py`. The measurements alternate between the "
            "servers, so that other work on the machine falls on all of them alike.",
            "",
        ]
    if opts.profile:
        lines += [
            "The server ran under `bench.probe` and py-spy was sampling it: the figures above "
            "are perturbed.",
            "",
        ]
    lines += ["## Every run", "", runs_table(results), ""]
    if opts.probe:
        # Each step's statements and SQL once per server: they do not change from run to run.
        firsts: dict[tuple[str, str], Measurement] = {}
        for m in results:
            firsts.setdefault((m.label, m.variant), m)
        first_ids = {id(m) for m in firsts.values()}
        lines += ["## Where the server's time goes", ""]
        for m in results:
            lines.append(probe_report(m, statements=id(m) in first_ids))
            if m.profile_md:
                lines.append(m.profile_md)
        lines += ["## Appendix: SQL per step", ""]
        for m in firsts.values():
            lines += sql_examples(m)
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.cycles", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: %(default)s")
    p.add_argument("--runs", type=int, help="runs of one-step cycles (3; 1 with --profile)")
    p.add_argument(
        "--draft-runs",
        type=int,
        help="runs of the two-step (draft, then submit) variant, after the others (1; 0 with "
        "--profile)",
    )
    p.add_argument("--duration", type=int, default=20, help="seconds measured (%(default)s)")
    p.add_argument(
        "--draft-duration", type=int, default=10, help="seconds measured, two-step (%(default)s)"
    )
    p.add_argument("--warmup", type=int, default=5, help="seconds of warm-up (%(default)s)")
    p.add_argument("--clients", type=int, default=50, help="concurrent cycles (%(default)s)")
    p.add_argument("--client-processes", type=int, default=1, help="%(default)s")
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.0,
        help="seconds between a doctor's feed polls, at least (%(default)s: back to back while "
        "a cycle waits)",
    )
    p.add_argument("--poll-limit", type=int, default=100, help="events per page (%(default)s)")
    p.add_argument(
        "--budget",
        type=float,
        default=330,
        help="seconds: no measurement is started that would end later than this (%(default)s)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the server under bench.probe and sample it with py-spy",
    )
    p.add_argument(
        "--whatif",
        default="",
        help=f"experiments among {', '.join(WHATIFS)}, comma-separated, each measured on a server "
        "of its own in turn (changes joined by '+' make one experiment): the servers run under "
        "bench.probe with that change (see bench/probe.py). Never figures of record",
    )
    args = p.parse_args(argv)
    backends = tuple(b for b in args.backends.split(",") if b)
    whatif = tuple(w for w in args.whatif.split(",") if w)
    if not {c for w in whatif for c in w.split("+")} <= set(WHATIFS):
        p.error(f"--whatif: among {WHATIFS}")
    if not backends or not set(backends) <= set(BACKENDS):
        p.error(f"backends are {BACKENDS}")
    runs = args.runs if args.runs is not None else 1 if args.profile else 3
    draft_runs = args.draft_runs if args.draft_runs is not None else 0 if args.profile else 1
    if runs < 0 or draft_runs < 0 or runs + draft_runs < 1:
        p.error("need at least one run")
    if args.duration < 2 or args.draft_duration < 2 or args.warmup < 0:
        p.error("need --duration >= 2, --draft-duration >= 2, --warmup >= 0")
    if not 1 <= args.client_processes <= min(args.clients, len(DOCTORS)):
        p.error(f"--client-processes: 1 to {min(args.clients, len(DOCTORS))}")
    return Options(
        backends=backends,
        runs=runs,
        draft_runs=draft_runs,
        duration_s=args.duration,
        draft_duration_s=args.draft_duration,
        warmup_s=args.warmup,
        clients=args.clients,
        client_processes=args.client_processes,
        poll_interval_s=args.poll_interval,
        poll_limit=args.poll_limit,
        budget_s=args.budget,
        profile=args.profile,
        whatif=whatif,
    )


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def plan(opts: Options) -> list[tuple[int, str, str, str]]:
    """(run, backend, what-if, variant) in order: one-step runs alternating the servers, then
    two-step runs."""
    servers = [(key, w) for key in opts.backends for w in opts.whatif or ("",)]
    out = []
    for variant, runs in (("one-step", opts.runs), ("two-step", opts.draft_runs)):
        for run in range(1, runs + 1):
            order = servers if run % 2 else servers[::-1]
            out += [(run, key, w, variant) for key, w in order]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    when = dt.datetime.now()
    results: list[Measurement] = []
    with workspace() as workdir, contextlib.ExitStack() as stack:
        backends: dict[tuple[str, str], Backend] = {}
        for key in opts.backends:
            for w in opts.whatif or ("",):
                _say(
                    f"preparing {name(key, w)}: migrate, seed, add the cast, serve, sign in, prime"
                )
                backends[(key, w)] = start_backend(key, workdir, stack, opts, w)
        for run, key, w, variant in plan(opts):
            backend = backends[(key, w)]
            window = opts.duration_s if variant == "one-step" else opts.draft_duration_s
            needed = opts.warmup_s + window + 8
            if time.monotonic() - started + needed > opts.budget_s:
                _say(f"skipping {variant} run {run} on {backend.label}: over the time budget")
                continue
            m = measure(backend, variant, run, opts, workdir)
            if opts.profile:
                m.sequential = measure_sequential(backend, opts)
            results.append(m)
            c = m.steps.get(cycleclient.CYCLE, [])
            _say(
                f"run {run} {backend.label:10} {variant}: {m.cps:6.1f} cycles/s "
                f"p50 {_ms(percentile(c, 0.5))} ms p99 {_ms(percentile(c, 0.99))} ms "
                f"errors {m.errors or 0} | CPU server {_cpu(m.share(m.server_s))} "
                f"({m.per_cycle_ms(m.server_s):.0f} ms/cycle) db {_cpu(m.share(m.database_s))} "
                f"clients {_cpu(m.share(m.clients_s))} others {_cpu(m.share(m.other_s))}"
            )
            for sample in m.error_samples:
                _say(f"  error: {sample[:300]}")
            if m.server_log_errors:
                _say(f"  the server logged {m.server_log_errors} ERROR line(s)")
    if not results:
        _say("bench: no measurement fitted in the time budget")
        return 2
    text = report(results, opts, when)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = "cycles-whatif" if opts.whatif else "cycles-profile" if opts.profile else "cycles"
    out = RESULTS / f"{stem}-{when:%Y-%m-%d}.md"
    out.write_text(text)
    _say(f"written to {out.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")
    return 1 if any(m.window_errors or m.unfinished for m in results) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (RuntimeError, subprocess.CalledProcessError, cycleclient.CycleError) as exc:
        _say(f"bench: {exc}")
        raise SystemExit(2) from None
