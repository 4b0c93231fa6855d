"""Several server processes on one port (``HUIZHEN_WORKERS``): connections spread over the
workers, which share the database without losing or refusing writes; a worker that dies is
replaced while the others serve; the supervisor stops them all; a taken port or a missing
Redis stops the start with a clear message."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pydicom
import pytest

from bench.cpu import process_seconds, spawned_children
from server.settings import Settings, SettingsError
from server.workers import settings_for
from tests.conftest import live_env
from tests.services import ROOT, HuizhenProcess, Redis, wait_until
from tests.test_dicomweb import CT, STOW_TYPE, multipart, with_new_uids

CONNECTIONS = 16
PER_CONNECTION = 4


def _ready_count(server: HuizhenProcess) -> int:
    return server.log().count("workers ready")


@pytest.fixture
def workers(tmp_path: Path, database_url: str, redis_server: Redis) -> Iterator[HuizhenProcess]:
    env = live_env(
        tmp_path,
        database_url,
        HUIZHEN_LOG_LEVEL="INFO",  # for "all 2 workers ready"
        HUIZHEN_WORKERS="2",
        HUIZHEN_REDIS_URL=redis_server.url,
    )
    server = HuizhenProcess(env=env)
    server.start()
    try:
        wait_until(lambda: _ready_count(server) == 1, 60, "both workers")
        yield server
    finally:
        server.stop()


async def _login(http: aiohttp.ClientSession, base: str, username: str) -> str:
    body = {"username": username, "password": "huizhen-demo"}
    async with http.post(base + "/api/v1/auth/login", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["token"])


async def test_connections_spread_over_workers_sharing_the_database(
    workers: HuizhenProcess,
) -> None:
    assert workers.process is not None
    pids = spawned_children(workers.process.pid)
    assert len(pids) == 2
    cpu_before = [process_seconds(p) for p in pids]
    study = pydicom.uid.generate_uid()
    sent: set[str] = set()
    bodies: list[list[bytes]] = []
    for _ in range(CONNECTIONS):
        batch = []
        for _ in range(PER_CONNECTION):
            data = with_new_uids(CT, StudyInstanceUID=study)
            sent.add(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID)
            batch.append(multipart(data))
        bodies.append(batch)
    statuses: list[int] = []
    # One connection per client: the kernel picks a worker for each connection.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONNECTIONS, force_close=False)
    ) as http:

        async def client(batch: list[bytes]) -> None:
            # Each client signs in (a write: session and audit rows), then stores.
            token = await _login(http, workers.url, "chengguan")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": STOW_TYPE}
            for body in batch:
                async with http.post(
                    workers.url + "/dicomweb/studies", data=body, headers=headers
                ) as resp:
                    statuses.append(resp.status)
                    await resp.read()

        await asyncio.gather(*(client(batch) for batch in bodies))
        token = await _login(http, workers.url, "chengguan")
        async with http.get(
            f"{workers.url}/dicomweb/studies/{study}/instances?limit=1000",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200
            found = {item["00080018"]["Value"][0] for item in json.loads(await resp.read())}
    assert statuses == [200] * (CONNECTIONS * PER_CONNECTION)
    assert found == sent
    used = [process_seconds(p) - before for p, before in zip(pids, cpu_before, strict=True)]
    assert all(seconds > 0.05 for seconds in used), used  # both workers served requests
    assert "database is locked" not in workers.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_dead_worker_is_replaced_and_a_stop_stops_all(workers: HuizhenProcess) -> None:
    assert workers.process is not None
    supervisor = workers.process.pid
    first, second = spawned_children(supervisor)
    second_process = Path(f"/proc/{second}")
    time.sleep(1)
    subprocess.run(["kill", "-KILL", str(second)], check=True)
    wait_until(lambda: not second_process.exists(), 10, "the killed worker to go")
    # Meanwhile the other worker serves every connection.
    for _ in range(10):
        assert _get(workers.url + "/healthz") == 200
    wait_until(lambda: len(spawned_children(supervisor)) == 2, 30, "a new worker")
    replacement = next(p for p in spawned_children(supervisor) if p != first)
    assert replacement != second
    assert "worker 1 exited with code -9; starting another" in workers.log()
    workers.stop()
    assert workers.process.returncode == 0
    assert not Path(f"/proc/{first}").exists()
    assert not Path(f"/proc/{replacement}").exists()


def _get(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status)


def _serve_two_workers(tmp_path: Path, redis: Redis, **env: str) -> tuple[int, str]:
    """``huizhen serve`` with two workers that is expected to stop by itself: (status, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve"],
        env={
            "PATH": "/usr/bin:/bin",
            "HUIZHEN_DATA_DIR": str(tmp_path / "data"),
            "HUIZHEN_HOST": "127.0.0.1",
            "HUIZHEN_WORKERS": "2",
            "HUIZHEN_REDIS_URL": redis.url,
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    return result.returncode, result.stderr.decode()


def test_a_taken_port_stops_the_start(tmp_path: Path, redis_server: Redis) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stderr = _serve_two_workers(tmp_path, redis_server, HUIZHEN_PORT=str(port))
    assert status == 1
    assert f"127.0.0.1:{port} is in use" in stderr
    assert "Traceback" not in stderr


def test_a_failed_migration_stops_the_start(tmp_path: Path, redis_server: Redis) -> None:
    status, stderr = _serve_two_workers(
        tmp_path,
        redis_server,
        HUIZHEN_PORT="0",
        HUIZHEN_DATABASE_URL="postgresql+asyncpg://nobody:x@127.0.0.1:1/none",  # refused
    )
    assert status == 1
    assert "the database migration failed" in stderr
    assert "worker 0 started" not in stderr


def test_several_workers_need_redis() -> None:
    with pytest.raises(SettingsError, match=r"HUIZHEN_WORKERS.*HUIZHEN_REDIS_URL"):
        Settings.from_env({"HUIZHEN_WORKERS": "2"})
    with pytest.raises(SettingsError, match="HUIZHEN_WORKERS"):
        Settings.from_env({"HUIZHEN_WORKERS": "0", "HUIZHEN_REDIS_URL": "redis://127.0.0.1/0"})
    several = Settings.from_env({"HUIZHEN_WORKERS": "3", "HUIZHEN_REDIS_URL": "redis://h/0"})
    assert several.workers == 3
    assert Settings.from_env({}).workers == 1


def test_ingest_processes_by_default_only_beside_a_single_worker() -> None:
    redis = {"HUIZHEN_REDIS_URL": "redis://h/0"}
    assert Settings.from_env({}).ingest_processes == 1
    assert Settings.from_env({"HUIZHEN_WORKERS": "2", **redis}).ingest_processes == 0
    chosen = {"HUIZHEN_WORKERS": "2", "HUIZHEN_INGEST_PROCESSES": "2", **redis}
    assert Settings.from_env(chosen).ingest_processes == 2
    assert Settings.from_env({"HUIZHEN_INGEST_PROCESSES": "0"}).ingest_processes == 0


def test_only_worker_0_opens_the_dimse_and_mllp_listeners() -> None:
    settings = Settings(dicom_port=11112, mllp_port=2575, workers=2, redis_url="redis://h/0")
    first, second = settings_for(settings, 0), settings_for(settings, 1)
    assert (first.dicom_port, first.mllp_port) == (11112, 2575)
    assert (second.dicom_port, second.mllp_port) == (0, 0)
    assert not first.migrate_on_start and not second.migrate_on_start  # done once, before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_workers_stop_when_the_supervisor_is_killed(workers: HuizhenProcess) -> None:
    assert workers.process is not None
    pids = spawned_children(workers.process.pid)
    assert len(pids) == 2
    workers.stop(signal.SIGKILL)  # no chance to stop them: they notice on their own
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        wait_until(lambda proc=proc: not _running(proc), 30, f"worker {pid} to stop")
    with pytest.raises(urllib.error.URLError, match="refused"):
        _get(workers.url + "/healthz")  # nobody serves the port any more


def _running(proc: Path) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, not by the test)."""
    try:
        return (proc / "stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _metric(text: str, line_start: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(line_start)]
    values = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert len(values) == 1, (line_start, text[:2000])
    return values[0]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_metrics_add_up_every_worker(workers: HuizhenProcess) -> None:
    for _ in range(40):  # urllib: a new connection each, so both workers take some
        assert _get(workers.url + "/healthz") == 200
    healthz = 'huizhen_http_requests_total{method="GET",route="/healthz",status="200"}'
    for _ in range(6):  # whichever worker answers, the figures are the sum
        with urllib.request.urlopen(workers.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert _metric(text, healthz) == 40
        assert _metric(text, "huizhen_http_requests_in_flight") == 1  # this scrape
        assert _metric(text, "huizhen_realtime_connections") == 0  # the answering worker's
