"""``make bench-realtime``: the realtime channel against a bare python-socketio server.

Three scenarios, each run against our server and the peer (``bench.relayserver``: a bare
python-socketio relay on aiohttp) in the same run, alternating, median of the runs:

* ``relay``: 1,000 connected clients on one process, of which 50 pairs are in a call and signal
  to each other (a ~300-byte trickled ICE candidate, each side 10 a second: ~1,000 messages a
  second); one-way latency client → server → client, p50/p99/max, and the server's CPU. Ours:
  ``call.signal`` through ``huizhen serve`` on SQLite, every client signed in as its own user,
  a real call per pair made through the API, the idle clients synced to their feeds. The peer
  relays to a room. Our server is measured as shipped and as it was before its garbage-collection
  settings (``huizhen-before``: no ``gc.freeze()``, default thresholds).
* ``idle``: 5,000 connected clients on one process: the server's RSS before and after, per
  connection, and the longest collection pause while they connected.
* ``fanout``: 500 subscribers, 250 on each of two processes sharing Redis, hear one event: ours a
  consult submitted to their centre through the API (the durable stream, then a wake-up on the
  bus), the peer a note emitted to a room through ``AsyncRedisManager``; p50/p99/max from the
  moment the request was sent to each delivery.

Clients are raw WebSockets speaking the socket.io protocol (``bench.realtimeclient``) in their own
processes. Users and their sessions are made directly in the database (``create_user`` and
``sessions.issue``, what the CLI and sign-in do, without argon2's 100-200 ms per account).

``python -m bench.realtime --help`` lists the knobs; ``--quick`` runs a reduced scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import resource
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from bench.api import _request, _say, machine_description, prepare_database, workspace
from bench.realtimerig import (
    PATIENT,
    Clients,
    Served,
    make_calls,
    make_cast,
    percentile,
    serve,
    split,
    window,
)
from server.models import Centre, Role
from tests.services import Redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("relay", "idle", "fanout")
RELAY_TARGETS = ("huizhen", "huizhen-before", "bare")
LABELS = {
    "huizhen": "Huizhen",
    "huizhen-before": "Huizhen, GC as before",
    "bare": "bare python-socketio",
}


@dataclass
class Result:
    scenario: str
    target: str
    run: int
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: tuple[str, ...]
    runs: int
    clients: int
    pairs: int
    rate: float
    duration_s: float
    warmup_s: float
    idle_clients: int
    idle_users: int
    subscribers: int
    notes: int
    note_interval_s: float
    client_processes: int
    relay_targets: tuple[str, ...]


def relay(opts: Options, workdir: Path, stack: contextlib.ExitStack) -> list[Result]:
    env, url, _ = prepare_database("sqlite", workdir / "relay", workdir, stack)
    secret = env["HUIZHEN_SECRET_KEY"].encode()
    idle_users = max(0, opts.clients - 2 * opts.pairs)
    _say(f"relay: {opts.pairs * 2} users in calls and {idle_users} idle, with sessions")
    cast = asyncio.run(
        make_cast(
            url,
            secret,
            [
                ("rt-doctor", "chengguan", Role.GRASSROOTS_DOCTOR, None, opts.pairs),
                ("rt-expert", "xrmyy", Role.SPECIALIST, Centre.CONSULTATION, opts.pairs),
                ("rt-idle", "chengguan", Role.GRASSROOTS_DOCTOR, None, idle_users),
            ],
        )
    )
    served: dict[str, Served] = {}
    clients: dict[str, Clients] = {}
    for key in opts.relay_targets:
        data_dir = workdir / f"relay-{key}"
        if key != "bare":
            shutil.copytree(workdir / "relay", data_dir)
        served[key] = serve(key, env, data_dir, stack)
    for key in opts.relay_targets:
        target_url = served[key].server.url
        if key == "bare":
            call_ids = [f"room-{n}" for n in range(opts.pairs)]
        else:
            call_ids = make_calls(target_url, cast["rt-doctor"], cast["rt-expert"])
        pairs = [
            {
                "url": target_url,
                "call_id": call_id,
                "a_token": d["token"],
                "a_user": d["user_id"],
                "b_token": e["token"],
                "b_user": e["user_id"],
            }
            for call_id, d, e in zip(call_ids, cast["rt-doctor"], cast["rt-expert"], strict=True)
        ]
        idle = [{"url": target_url, "token": u["token"]} for u in cast.get("rt-idle", [])]
        flavour = "bare" if key == "bare" else "huizhen"
        configs = [
            {
                "mode": "relay",
                "flavour": flavour,
                "rate": opts.rate,
                "after": 10**12,
                "pairs": p,
                "idle": i,
            }
            for p, i in zip(
                split(pairs, opts.client_processes),
                split(idle, opts.client_processes),
                strict=True,
            )
        ]
        _say(f"relay: connecting {opts.clients} clients to {LABELS[key]}")
        before = served[key].rss_mib()
        clients[key] = Clients(configs, workdir, f"relay-{key}")
        stack.callback(clients[key].stop)
        ready = clients[key].read()
        connected = sum(r["ready"] for r in ready)
        _say(
            f"  {connected} connected in {max(r['connect_s'] for r in ready):.1f} s, "
            f"errors {sum(r['errors'] for r in ready)}; RSS {before:.0f} → "
            f"{served[key].rss_mib():.0f} MiB"
        )
    results = []
    for run in range(1, opts.runs + 1):
        order = opts.relay_targets if run % 2 else tuple(reversed(opts.relay_targets))
        for key in order:
            results.append(relay_window(opts, served[key], clients[key], run))
            _say(summary(results[-1]))
    return results


def relay_window(opts: Options, served: Served, clients: Clients, run: int) -> Result:
    served.gc_stats()  # forget what came before
    clients.send(f"go {opts.duration_s} {opts.warmup_s}")
    time.sleep(opts.warmup_s)
    with window([served.pid], clients) as w:
        time.sleep(opts.duration_s)
    done = clients.read()
    gc_stats = served.gc_stats()
    clients.send("report")
    reports = clients.read()
    latencies = [v for r in reports for v in r["latencies_ms"]]
    result = Result("relay", served.key, run)
    cpu = w["w"]
    result.figures = {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "msgs_per_s": len(latencies) / opts.duration_s,
        "sent": sum(r["sent"] for r in reports),
        "lost": sum(r["lost"] for r in reports),
        "ack_errors": sum(r["ack_error_count"] for r in reports),
        "server_cpu": cpu.server,
        "client_cpu": sum(d["cpu_s"] for d in done) / (opts.duration_s + opts.warmup_s + 1),
        "other_cores": cpu.other,
        "steal_cores": cpu.steal_cores,
        "rss_mib": served.rss_mib(),
        "gc2_count": gc_stats["2"]["count"],
        "gc2_max_ms": gc_stats["2"]["max_ms"],
        "gc_max_ms": max(gc_stats[g]["max_ms"] for g in ("0", "1", "2")),
        "gc_total_ms": sum(gc_stats[g]["total_ms"] for g in ("0", "1", "2")),
        "tracked": gc_stats["tracked"]["count"],
    }
    for r in reports:
        result.notes += [f"ack error: {e}" for e in r["ack_errors"]]
    return result


def idle(opts: Options, workdir: Path, stack: contextlib.ExitStack) -> list[Result]:
    env, url, _ = prepare_database("sqlite", workdir / "idle", workdir, stack)
    users = min(opts.idle_clients, opts.idle_users)
    _say(f"idle: {users} users with sessions, for {opts.idle_clients} connections")
    cast = asyncio.run(
        make_cast(
            url,
            env["HUIZHEN_SECRET_KEY"].encode(),
            [("rt-idle", "chengguan", Role.GRASSROOTS_DOCTOR, None, users)],
        )
    )
    tokens = [cast["rt-idle"][n % users]["token"] for n in range(opts.idle_clients)]
    targets = [t for t in opts.relay_targets if t != "huizhen-before"] + (
        ["huizhen-before"] if "huizhen-before" in opts.relay_targets else []
    )
    results = []
    for run in range(1, opts.runs + 1):
        order = targets if run % 2 else list(reversed(targets))
        for key in order:
            with contextlib.ExitStack() as inner:
                data_dir = workdir / f"idle-{key}-{run}"
                if key != "bare":
                    shutil.copytree(workdir / "idle", data_dir)
                served = serve(key, env, data_dir, inner)
                time.sleep(1.0)
                served.gc_stats()
                before = served.rss_mib()
                per = split(tokens, max(opts.client_processes, opts.idle_clients // 1250))
                flavour = "bare" if key == "bare" else "huizhen"
                configs = [
                    {
                        "mode": "idle",
                        "flavour": flavour,
                        "after": 10**12,
                        "idle": [{"url": served.server.url, "token": t} for t in part],
                    }
                    for part in per
                ]
                started = time.monotonic()
                with window([served.pid], None) as w:
                    clients = Clients(configs, workdir, f"idle-{key}-{run}")
                    inner.callback(clients.stop)
                    ready = clients.read()
                connect_s = time.monotonic() - started
                time.sleep(2.0)
                gc_stats = served.gc_stats()
                after = served.rss_mib()
                clients.send("report")
                still_open = sum(r["open"] for r in clients.read())
                connected = sum(r["ready"] for r in ready)
                result = Result("idle", key, run)
                result.figures = {
                    "connected": connected,
                    "open": still_open,
                    "errors": sum(r["errors"] for r in ready),
                    "rss_before_mib": before,
                    "rss_after_mib": after,
                    "kib_per_connection": (after - before) * 1024 / max(connected, 1),
                    "connect_s": connect_s,
                    "connect_cpu_s": w["w"].server_s,
                    "gc2_count": gc_stats["2"]["count"],
                    "gc2_max_ms": gc_stats["2"]["max_ms"],
                    "tracked": gc_stats["tracked"]["count"],
                    "frozen": gc_stats["tracked"]["frozen"],
                }
                results.append(result)
                _say(summary(result))
    return results


def fanout(opts: Options, workdir: Path, stack: contextlib.ExitStack) -> list[Result]:
    env, url, _ = prepare_database("postgresql", workdir / "fanout", workdir, stack)
    redis = Redis().start()
    stack.callback(redis.stop)
    _say(f"fanout: {opts.subscribers} imaging specialists with sessions")
    cast = asyncio.run(
        make_cast(
            url,
            env["HUIZHEN_SECRET_KEY"].encode(),
            [("rt-imaging", "xrmyy", Role.SPECIALIST, Centre.IMAGING, opts.subscribers)],
        )
    )
    env = {**env, "HUIZHEN_REDIS_URL": redis.url, "HZBENCH_REDIS": redis.url}
    targets = [t for t in opts.relay_targets if t in ("huizhen", "bare")]
    nodes: dict[str, list[Served]] = {}
    clients: dict[str, Clients] = {}
    for key in targets:
        nodes[key] = [
            serve(
                key, {**env, "HUIZHEN_MIGRATE_ON_START": "false"}, workdir / f"fan-{key}-{n}", stack
            )
            for n in range(2)
        ]
        halves = split(cast["rt-imaging"], 2)
        flavour = "bare" if key == "bare" else "huizhen"
        configs = [
            {
                "mode": "fanout",
                "flavour": flavour,
                "after": 10**12,
                "room": "centre",
                "idle": [{"url": node.server.url, "token": u["token"]} for u in half],
            }
            for node, half in zip(nodes[key], halves, strict=True)
        ]
        clients[key] = Clients(configs, workdir, f"fan-{key}")
        stack.callback(clients[key].stop)
        ready = clients[key].read()
        _say(f"fanout: {sum(r['ready'] for r in ready)} subscribers on {LABELS[key]}'s two nodes")
    doctor = cast["doctor"][0]["token"]
    found = (
        _request(
            "GET", nodes["huizhen"][0].server.url + "/api/v1/patients?name=" + PATIENT, token=doctor
        )
        if "huizhen" in nodes
        else {"items": [{"id": ""}]}
    )
    patient = found["items"][0]["id"]
    results = []
    for run in range(1, opts.runs + 1):
        order = targets if run % 2 else list(reversed(targets))
        for key in order:
            first = nodes[key][0].server.url
            sent: dict[str, float] = {}
            with window([n.pid for n in nodes[key]], clients[key]) as w:
                for i in range(opts.notes):
                    t0 = time.monotonic()
                    if key == "bare":
                        name = f"n{run}-{i}"
                        _request("POST", first + "/note", {"note": name, "pad": "x" * 200})
                    else:
                        consult = _request(
                            "POST",
                            first + "/api/v1/consults",
                            {"patient_id": patient, "centre": "imaging", "question": "胸片"},
                            doctor,
                        )
                        name = str(consult["id"])
                    sent[name] = t0
                    time.sleep(opts.note_interval_s)
                time.sleep(2.0)
            clients[key].send("report")
            reports = clients[key].read()
            delays = [
                (t - sent[name]) * 1000
                for r in reports
                for name, times in r["arrivals"].items()
                if name in sent
                for t in times
            ]
            expected = opts.notes * opts.subscribers
            result = Result("fanout", key, run)
            result.figures = {
                "deliveries": len(delays),
                "missing": expected - len(delays),
                "p50_ms": percentile(delays, 0.50),
                "p99_ms": percentile(delays, 0.99),
                "max_ms": max(delays, default=float("nan")),
                "server_cpu": w["w"].server,
                "other_cores": w["w"].other,
            }
            results.append(result)
            _say(summary(result))
    return results


# -- report -----------------------------------------------------------------------------------


def summary(r: Result) -> str:
    f = r.figures
    return f"  {r.scenario} run {r.run} {LABELS[r.target]}: " + ", ".join(
        f"{k} {v:.3g}" for k, v in f.items()
    )


def _median(rs: Sequence[Result], key: str) -> float:
    values = [r.figures[key] for r in rs if key in r.figures]
    return statistics.median(values) if values else float("nan")


def _table(
    results: Sequence[Result], columns: Sequence[tuple[str, str, Callable[[float], str]]]
) -> list[str]:
    lines = [
        "| server | " + " | ".join(title for title, _, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    by_target: dict[str, list[Result]] = {}
    for r in results:
        by_target.setdefault(r.target, []).append(r)
    for target, rs in by_target.items():
        cells = [fmt(_median(rs, key)) for _, key, fmt in columns]
        lines.append(f"| {LABELS[target]} | " + " | ".join(cells) + " |")
    return lines


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def _n(v: float) -> str:
    return f"{v:,.0f}"


def report(results: Sequence[Result], opts: Options, when: dt.datetime, argv: list[str]) -> str:
    lines = [
        f"# Realtime benchmark, {when:%Y-%m-%d %H:%M}",
        "",
        f"`python -m bench.realtime {' '.join(argv)}`".replace("  ", " "),
        "",
        *machine_description(),
        "",
        f"Medians of {opts.runs} run(s), the servers alternating.",
        "",
    ]
    relay_rs = [r for r in results if r.scenario == "relay"]
    if relay_rs:
        lines += [
            f"## Relay: {opts.clients:,} clients on one process, {opts.pairs} pairs signalling, "
            f"{opts.rate * 2 * opts.pairs:,.0f} messages/s offered, "
            f"{opts.duration_s:.0f} s windows",
            "",
            *_table(
                relay_rs,
                [
                    ("p50 ms", "p50_ms", _ms),
                    ("p99 ms", "p99_ms", _ms),
                    ("max ms", "max_ms", _ms),
                    ("delivered/s", "msgs_per_s", _n),
                    ("lost", "lost", _n),
                    ("ack errors", "ack_errors", _n),
                    ("server CPU", "server_cpu", _pct),
                    ("clients CPU", "client_cpu", _pct),
                    ("others (cores)", "other_cores", lambda v: f"{v:.2f}"),
                    ("RSS MiB", "rss_mib", _n),
                    ("full GCs", "gc2_count", _n),
                    ("longest full GC ms", "gc2_max_ms", _ms),
                    ("GC ms in all", "gc_total_ms", _n),
                    ("tracked objects", "tracked", _n),
                ],
            ),
            "",
        ]
    idle_rs = [r for r in results if r.scenario == "idle"]
    if idle_rs:
        lines += [
            f"## Idle: {opts.idle_clients:,} connected clients on one process",
            "",
            *_table(
                idle_rs,
                [
                    ("connected", "connected", _n),
                    ("RSS before MiB", "rss_before_mib", _n),
                    ("RSS after MiB", "rss_after_mib", _n),
                    ("KiB per connection", "kib_per_connection", lambda v: f"{v:.1f}"),
                    ("connect s", "connect_s", lambda v: f"{v:.1f}"),
                    ("server CPU s to connect", "connect_cpu_s", lambda v: f"{v:.1f}"),
                    ("full GCs", "gc2_count", _n),
                    ("longest full GC ms", "gc2_max_ms", _ms),
                    ("tracked objects", "tracked", _n),
                ],
            ),
            "",
        ]
    fan_rs = [r for r in results if r.scenario == "fanout"]
    if fan_rs:
        lines += [
            f"## Fan-out: one event to {opts.subscribers} subscribers on two processes sharing "
            f"Redis, {opts.notes} events {opts.note_interval_s:g} s apart",
            "",
            *_table(
                fan_rs,
                [
                    ("deliveries", "deliveries", _n),
                    ("missing", "missing", _n),
                    ("p50 ms", "p50_ms", _ms),
                    ("p99 ms", "p99_ms", _ms),
                    ("max ms", "max_ms", _ms),
                    ("CPU of both servers", "server_cpu", _pct),
                    ("others (cores)", "other_cores", lambda v: f"{v:.2f}"),
                ],
            ),
            "",
        ]
    lines += ["## Every run", "", "| scenario | server | run | figures |", "|---|---|---:|---|"]
    for r in results:
        figures = ", ".join(f"{k} {v:.4g}" for k, v in r.figures.items())
        lines.append(f"| {r.scenario} | {LABELS[r.target]} | {r.run} | {figures} |")
        lines += [f"| | | | {n} |" for n in r.notes[:3]]
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.realtime", description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="%(default)s")
    p.add_argument("--targets", default=",".join(RELAY_TARGETS), help="%(default)s")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", type=int, default=1000, help="relay: connected (%(default)s)")
    p.add_argument("--pairs", type=int, default=50, help="relay: pairs in a call (%(default)s)")
    p.add_argument("--rate", type=float, default=10, help="relay: msg/s per sender (%(default)s)")
    p.add_argument("--duration", type=float, default=20, help="relay window s (%(default)s)")
    p.add_argument("--warmup", type=float, default=3, help="relay warm-up s (%(default)s)")
    p.add_argument("--idle-clients", type=int, default=5000, help="%(default)s")
    p.add_argument(
        "--idle-users",
        type=int,
        default=100,
        help="idle: distinct users among them (%(default)s); each user's first connection is "
        "announced to every connection (presence), which costs O(users x connections)",
    )
    p.add_argument("--subscribers", type=int, default=500, help="fanout (%(default)s)")
    p.add_argument("--notes", type=int, default=20, help="fanout: events per run (%(default)s)")
    p.add_argument("--note-interval", type=float, default=0.5, help="s (%(default)s)")
    p.add_argument("--client-processes", type=int, default=2, help="%(default)s")
    p.add_argument("--quick", action="store_true", help="a reduced scale, one run")
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.clients, a.pairs, a.duration, a.warmup = 1, 200, 10, 5, 1
        a.idle_clients, a.subscribers, a.notes = 1000, 100, 5
    scenarios = tuple(s for s in a.scenarios.split(",") if s)
    targets = tuple(t for t in a.targets.split(",") if t)
    if not set(scenarios) <= set(SCENARIOS) or not set(targets) <= set(RELAY_TARGETS):
        p.error(f"scenarios are {SCENARIOS}, targets {RELAY_TARGETS}")
    return Options(
        scenarios=scenarios,
        runs=a.runs,
        clients=a.clients,
        pairs=a.pairs,
        rate=a.rate,
        duration_s=a.duration,
        warmup_s=a.warmup,
        idle_clients=a.idle_clients,
        idle_users=a.idle_users,
        subscribers=a.subscribers,
        notes=a.notes,
        note_interval_s=a.note_interval,
        client_processes=a.client_processes,
        relay_targets=targets,
    )


def raise_open_files(needed: int) -> None:
    """``ulimit -n`` for this process and the servers and clients it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs privilege
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        _say(f"warning: only {hard} open files allowed; {needed} wanted")


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse(args)
    signal.signal(signal.SIGTERM, _terminate)
    raise_open_files(opts.idle_clients + opts.clients + 1000)
    when = dt.datetime.now()
    results: list[Result] = []
    with workspace() as workdir:
        for scenario in opts.scenarios:
            with contextlib.ExitStack() as inner:
                run = {"relay": relay, "idle": idle, "fanout": fanout}[scenario]
                results += run(opts, workdir, inner)
    text = report(results, opts, when, args)
    RESULTS.mkdir(exist_ok=True)
    name = f"realtime-{when:%Y-%m-%d}" + ("-quick" if "--quick" in args else "")
    if opts.scenarios != SCENARIOS:  # a partial run does not overwrite a whole one
        name += "-" + "-".join(opts.scenarios)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(
        json.dumps([r.__dict__ for r in results], indent=1, default=str)
    )
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
