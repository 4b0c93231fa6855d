"""The rig of ``bench.realtime``: servers under test, users with sessions, calls made through the
API, client processes (``bench.realtimeclient``), and CPU over a window."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.api import _request
from bench.cpu import machine_sample, machine_use, process_seconds
from server.accounts import create_user
from server.db import make_engine, make_sessionmaker, unit_of_work
from server.models import Centre, Institution, Role, User
from server.sessions import Passwords, issue
from tests.services import HuizhenProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEMO_PASSWORD = "huizhen-demo"  # noqa: S105 - the documented demo password
#: The demo patient the consults are about (url-quoted 张桂兰).
PATIENT = urllib.parse.quote("张桂兰")


# -- servers --------------------------------------------------------------------------------


class OurServer(HuizhenProcess):
    """``huizhen serve`` through ``bench.realtimeserver`` (its collections timed)."""

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
                [sys.executable, "-m", "bench.realtimeserver"],
                env=env,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        wait_until(self._ready, timeout, f"huizhen on port {self.port}")
        return self


class BareServer(HuizhenProcess):
    """``bench.relayserver``; same readiness check and stopping as ours."""

    def start(self, timeout: float = 60) -> HuizhenProcess:
        env = {**os.environ, **self.env}
        data_dir = Path(env["HUIZHEN_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"bare-{self.port}.log"
        argv = [sys.executable, "-m", "bench.relayserver", "--port", str(self.port)]
        if env.get("HZBENCH_REDIS"):
            argv += ["--redis", env["HZBENCH_REDIS"]]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=ROOT)
        wait_until(self._ready, timeout, f"bare relay on port {self.port}")
        return self


@dataclass
class Served:
    """A server under test and what we read from it."""

    key: str
    server: HuizhenProcess
    gc_out: Path
    dumps: int = 0

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def gc_stats(self) -> dict[str, Any]:
        """Collections since the last call (``bench.gcwatch``)."""
        self.dumps += 1
        path = Path(f"{self.gc_out}.{self.dumps}")
        os.kill(self.pid, signal.SIGUSR1)
        wait_until(path.exists, 30, "the GC figures")
        time.sleep(0.05)
        stats: dict[str, Any] = json.loads(path.read_text())
        return stats

    def errors_in_log(self) -> int:
        path = self.server.log_path
        if path is None or not path.exists():
            return 0
        return sum(1 for line in path.read_bytes().splitlines() if b" ERROR " in line)


def serve(key: str, env: dict[str, str], data_dir: Path, stack: contextlib.ExitStack) -> Served:
    gc_out = data_dir / f"gc-{key}-{free_port()}"
    env = {**env, "HUIZHEN_DATA_DIR": str(data_dir), "HZBENCH_GC_OUT": str(gc_out)}
    if key == "bare":
        server: HuizhenProcess = BareServer(env=env)
    else:
        server = OurServer(env={**env, "HZBENCH_GC": "none" if key == "huizhen-before" else ""})
    stack.callback(server.stop)
    server.start()
    return Served(key, server, gc_out)


# -- users, sessions, calls -------------------------------------------------------------------


async def make_cast(
    url: str, secret: bytes, groups: Sequence[tuple[str, str, Role, Centre | None, int]]
) -> dict[str, list[dict[str, str]]]:
    """Accounts with a session each: (group, institution code, role, centre, how many)."""
    engine = make_engine(url)
    password_hash = await Passwords().hash(DEMO_PASSWORD)
    cast: dict[str, list[dict[str, str]]] = {}
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            institutions = {i.code: i for i in await db.scalars(select(Institution))}
            for group, code, role, centre, count in groups:
                for n in range(count):
                    user = await create_user(
                        db,
                        username=f"{group}-{n:05d}",
                        display_name=f"压测 {group} {n}",
                        institution=institutions[code],
                        password_hash=password_hash,
                        roles={role},
                        centres={centre} if centre else set(),
                    )
                    issued = await issue(db, secret, user, ttl=86400, client_address="127.0.0.1")
                    cast.setdefault(group, []).append(
                        {"user_id": str(user.id), "token": issued.token}
                    )
            doctor = await db.scalar(select(User).where(User.username == "chengguan"))
            assert doctor is not None
            issued = await issue(db, secret, doctor, ttl=86400, client_address="127.0.0.1")
            cast["doctor"] = [{"user_id": str(doctor.id), "token": issued.token}]
    finally:
        await engine.dispose()
    return cast


def make_calls(
    url: str, doctors: list[dict[str, str]], specialists: list[dict[str, str]]
) -> list[str]:
    """A consult and a call per pair, through the API: the doctor asks, rings, the specialist
    answers."""
    found = _request("GET", url + "/api/v1/patients?name=" + PATIENT, token=doctors[0]["token"])
    patient = found["items"][0]["id"]

    def one(pair: tuple[dict[str, str], dict[str, str]]) -> str:
        doctor, specialist = pair
        consult = _request(
            "POST",
            url + "/api/v1/consults",
            {"patient_id": patient, "centre": "consultation", "question": "视频会诊"},
            doctor["token"],
        )
        call = _request(
            "POST",
            url + f"/api/v1/consults/{consult['id']}/calls",
            {"invitee_ids": [specialist["user_id"]]},
            doctor["token"],
        )
        _request("POST", url + f"/api/v1/calls/{call['id']}/accept", {}, specialist["token"])
        return str(call["id"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, zip(doctors, specialists, strict=True)))


# -- client processes -------------------------------------------------------------------------


class Clients:
    """Client processes (``bench.realtimeclient``) for one server under test."""

    def __init__(self, configs: list[dict[str, Any]], workdir: Path, name: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for i, cfg in enumerate(configs):
            path = workdir / f"clients-{name}-{i}.json"
            path.write_text(json.dumps(cfg))
            log = (workdir / f"clients-{name}-{i}.log").open("w")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.realtimeclient", str(path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    cwd=ROOT,
                )
            )
        self.logs = [workdir / f"clients-{name}-{i}.log" for i in range(len(configs))]

    def read(self) -> list[dict[str, Any]]:
        out = []
        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a client process died: {log.read_text()[-2000:]}")
            out.append(json.loads(line))
        return out

    def send(self, command: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()

    def cpu_s(self) -> float:
        return sum(process_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(BrokenPipeError):
                    self.send_one(proc, "stop")
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    @staticmethod
    def send_one(proc: subprocess.Popen[str], command: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    return [list(items[i::parts]) for i in range(parts)]


# -- figures ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Window:
    """CPU over a measured window."""

    wall_s: float
    server_s: float
    clients_s: float
    busy_cores: float
    steal_cores: float

    @property
    def server(self) -> float:
        return self.server_s / self.wall_s

    @property
    def other(self) -> float:
        return max(0.0, self.busy_cores - (self.server_s + self.clients_s) / self.wall_s)


@contextlib.contextmanager
def window(pids: Sequence[int], clients: Clients | None) -> Any:
    out: dict[str, Window] = {}
    s0 = sum(process_seconds(p) for p in pids)
    c0 = clients.cpu_s() if clients else 0.0
    m0, t0 = machine_sample(), time.monotonic()
    yield out
    wall = time.monotonic() - t0
    use = machine_use(m0, machine_sample(), wall)
    out["w"] = Window(
        wall,
        sum(process_seconds(p) for p in pids) - s0,
        (clients.cpu_s() if clients else 0.0) - c0,
        use.busy_cores,
        use.steal_cores,
    )
