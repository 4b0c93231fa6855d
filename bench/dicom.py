"""``make bench-dicom``: our DICOMweb side by side with Orthanc's, in one run.

Debian's Orthanc 1.10 (with its DICOMweb plugin 1.7, default settings) and ``huizhen serve`` (on
SQLite) run on the same machine in a private network namespace holding only ``lo`` (Orthanc
cannot bind to one address): the harness re-executes itself under ``unshare -n`` and starts both
servers and its client inside. The same client (aiohttp, one process) sends the same files to
both: pydicom's ``CT_small.dcm`` with fresh UIDs per instance, a 512×512 CT slice, and a large
multi-frame file (``bench.dicomfiles``). Runs alternate the order of the servers; tables give the
median of the runs.

1. **STOW-RS throughput**: 1 and 8 concurrent clients, one instance per request and 10 per
   request, for a fixed window each: instances/s, MB/s, request p50, server CPU per instance.
2. **Peak memory during a 1 GB STOW** (RSS from ``/proc`` every 50 ms): one request of ~2,000
   512×512 CT instances, and one of seven 150 MB multi-frame instances (once per server).
3. **QIDO and WADO-RS with 10,000 instances stored** (fresh servers, loaded through STOW): study
   search by PatientID, metadata of a 200-instance series, and a rendered 512×512 CT frame:
   p50 and p99 of sequential requests.
4. **ECG** (ours only, in-process): ``read_ecg``, ``measure``, ``render_svg`` on pydicom's
   ``waveform_ecg.dcm``, median of 10.

Results go to ``bench/results/dicom-<date>.json`` and a Markdown summary is printed.
``--profile`` runs only our server, under ``bench.dicomserver`` (cProfile and phase timers), and
writes ``bench/results/dicom-profile-<date>.md``.
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
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import dicomfiles as files
from bench.api import prepare_database, settle
from bench.cpu import machine_sample, machine_use, spawned_children, thread_seconds, tree_seconds
from tests.services import Redis, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEMO_USER = "chengguan"
DEMO_PASSWORD = "huizhen-demo"  # noqa: S105 - the documented demo password
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
LABELS = {"huizhen": "ours", "orthanc": "Orthanc"}
DICOM_JSON = "application/dicom+json"
STOW_SCENARIOS = ((1, 1), (1, 10), (8, 1), (8, 10))  # (clients, instances per request)
TIMEOUT = aiohttp.ClientTimeout(total=3600)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    root: str  # the DICOMweb root, no trailing slash
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        return _status_kb(self.pid, "VmRSS") * 1024

    def hwm_bytes(self) -> int:
        return _status_kb(self.pid, "VmHWM") * 1024

    def cpu_s(self) -> float:
        """All of the server's processes: ours has ingest processes, and workers if asked."""
        return tree_seconds(self.pid)

    def main_cpu_s(self) -> float:
        """CPU of the main threads: our event loops (each worker's, when there are workers);
        Orthanc's main thread only waits."""
        return thread_seconds(self.pid, self.pid) + sum(
            thread_seconds(pid, pid) for pid in self.workers
        )

    @property
    def workers(self) -> list[int]:
        """Our ``HUIZHEN_WORKERS`` processes, the supervisor's spawned children."""
        return spawned_children(self.pid)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _get_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _login(base: str) -> str:
    import urllib.request

    req = urllib.request.Request(  # noqa: S310 - loopback
        base + "/api/v1/auth/login",
        data=json.dumps({"username": DEMO_USER, "password": DEMO_PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
        return str(json.loads(resp.read())["token"])


def start_huizhen(
    workdir: Path, stack: contextlib.ExitStack, profile_dir: Path | None = None, workers: int = 1
) -> Server:
    name = f"huizhen-{len(list(workdir.glob('huizhen-*')))}"
    env, _, _ = prepare_database("sqlite", workdir / name, workdir, stack)
    port = free_port()
    env = {**os.environ, **env, "HUIZHEN_HOST": "127.0.0.1", "HUIZHEN_PORT": str(port)}
    if workers > 1:  # as deployed: the workers hear each other's events through Redis
        redis = Redis().start()
        stack.callback(redis.stop)
        env |= {"HUIZHEN_WORKERS": str(workers), "HUIZHEN_REDIS_URL": redis.url}
    for variable in ("HZBENCH_WHATIF",):
        if os.environ.get(variable):
            env[variable] = os.environ[variable]
    if profile_dir is not None:
        env["HZBENCH_PROFILE"] = str(profile_dir)
        if os.environ.get("HZBENCH_PROFILE_MODE"):
            env["HZBENCH_PROFILE_MODE"] = os.environ["HZBENCH_PROFILE_MODE"]
    log_path = workdir / name / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.dicomserver"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
    base = f"http://127.0.0.1:{port}"
    server = Server("huizhen", base + "/dicomweb", process, log_path, workdir / name)
    stack.callback(server.stop)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"huizhen exited: {log_path.read_text()[-2000:]}")
        return _get_ok(base + "/readyz")

    wait_until(ready, 60, "huizhen")
    server.headers = {"Authorization": f"Bearer {_login(base)}"}
    return server


def start_orthanc(workdir: Path, stack: contextlib.ExitStack) -> Server:
    binary = shutil.which("Orthanc")
    if binary is None or not Path(ORTHANC_PLUGIN).exists():
        raise SystemExit(
            "Orthanc is not installed: apt-get install -y orthanc orthanc-dicomweb "
            "(docs/benchmarks.md, 'DICOM (vs Orthanc)')"
        )
    name = f"orthanc-{len(list(workdir.glob('orthanc-*')))}"
    directory = workdir / name
    (directory / "db").mkdir(parents=True)
    port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(directory / "db"),
        "IndexDirectory": str(directory / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "AuthenticationEnabled": False,
        "Plugins": [ORTHANC_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = directory / "orthanc.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    server = Server("orthanc", base + "/dicom-web", process, log_path, directory / "db")
    stack.callback(server.stop)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {log_path.read_text()[-2000:]}")
        return _get_ok(base + "/system")

    wait_until(ready, 60, "Orthanc")
    return server


def start(
    key: str,
    workdir: Path,
    stack: contextlib.ExitStack,
    profile_dir: Path | None = None,
    workers: int = 1,
) -> Server:
    if key == "huizhen":
        return start_huizhen(workdir, stack, profile_dir, workers)
    return start_orthanc(workdir, stack)


# -- measuring helpers ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _status_kb(self.pid, "VmRSS") * 1024
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _stow_headers(server: Server, size: int | None = None) -> dict[str, str]:
    headers = {**server.headers, "Content-Type": files.MULTIPART_TYPE, "Accept": DICOM_JSON}
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


def _stored_count(payload: Any) -> tuple[int, int]:
    """(stored, failed) in a STOW-RS response."""
    if not isinstance(payload, dict):
        return 0, 0
    ok = payload.get("00081199", {}).get("Value") or []
    bad = payload.get("00081198", {}).get("Value") or []
    return len(ok), len(bad)


async def post_instances(
    http: aiohttp.ClientSession, server: Server, instances: Sequence[files.Instance]
) -> tuple[int, int]:
    """One STOW-RS request of ``instances`` (held in memory); (stored, failed)."""
    body = files.body_bytes(instances)
    async with http.post(
        server.root + "/studies", data=body, headers=_stow_headers(server)
    ) as resp:
        payload = await resp.read()
        if resp.status not in (200, 202):
            return 0, len(instances)
    return _stored_count(json.loads(payload))


@dataclass
class Series:
    """Where a client's instances go: a fresh series every ``per_series`` instances."""

    maker: files.Maker
    patient: str
    per_series: int = 100
    study: str = ""
    series: str = ""
    used: int = 0

    def next(self, template: files.Template) -> files.Instance:
        if not self.series or self.used >= self.per_series:
            self.study, self.series, self.used = self.maker.study(), self.maker.series(), 0
        self.used += 1
        return self.maker.make(template, study=self.study, series=self.series, patient=self.patient)


# -- 1. STOW-RS throughput --------------------------------------------------------------


@dataclass
class StowWindow:
    server: str
    clients: int
    batch: int
    run: int
    instances: int
    requests: int
    errors: int
    wall_s: float
    instance_bytes: int
    server_cpu_s: float
    server_main_cpu_s: float
    client_cpu_s: float
    machine_busy_cores: float
    machine_steal_cores: float
    request_p50_ms: float
    request_p99_ms: float

    @property
    def per_s(self) -> float:
        return self.instances / self.wall_s

    @property
    def mb_per_s(self) -> float:
        return self.instance_bytes / self.wall_s / 1e6

    @property
    def cpu_ms_per_instance(self) -> float:
        return self.server_cpu_s * 1000 / self.instances if self.instances else float("nan")


async def stow_window(
    server: Server,
    template: files.Template,
    maker: files.Maker,
    clients: int,
    batch: int,
    seconds: float,
    run: int,
) -> StowWindow:
    latencies: list[float] = []
    counts = {"instances": 0, "errors": 0, "bytes": 0, "requests": 0}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as http:
        targets = [Series(maker, files.patient_id(9_000_000 + k)) for k in range(clients)]

        async def one(target: Series, measured: bool) -> None:
            instances = [target.next(template) for _ in range(batch)]
            started = time.perf_counter()
            stored, failed = await post_instances(http, server, instances)
            if measured:
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                counts["instances"] += stored
                counts["errors"] += failed + (batch - stored - failed)
                counts["bytes"] += sum(i.size for i in instances[:stored])

        # Warm-up: two requests per client, connections open.
        await asyncio.gather(*(one(t, False) for t in targets for _ in range(2)))
        await asyncio.to_thread(settle, server.pid, 3.0)
        deadline = time.perf_counter() + seconds

        async def client(target: Series) -> None:
            while time.perf_counter() < deadline:
                await one(target, True)

        cpu0, main0 = server.cpu_s(), server.main_cpu_s()
        own0, machine0 = time.process_time(), machine_sample()
        started = time.perf_counter()
        await asyncio.gather(*(client(t) for t in targets))
        wall = time.perf_counter() - started
        use = machine_use(machine0, machine_sample(), wall)
        cpu1, main1, own1 = server.cpu_s(), server.main_cpu_s(), time.process_time()
    return StowWindow(
        server=server.key,
        clients=clients,
        batch=batch,
        run=run,
        instances=counts["instances"],
        requests=counts["requests"],
        errors=counts["errors"],
        wall_s=wall,
        instance_bytes=counts["bytes"],
        server_cpu_s=cpu1 - cpu0,
        server_main_cpu_s=main1 - main0,
        client_cpu_s=own1 - own0,
        machine_busy_cores=use.busy_cores,
        machine_steal_cores=use.steal_cores,
        request_p50_ms=percentile(latencies, 50) * 1000,
        request_p99_ms=percentile(latencies, 99) * 1000,
    )


# -- 2. memory during a 1 GB STOW -------------------------------------------------------------


@dataclass
class BigStow:
    server: str
    kind: str
    instances: int
    body_bytes: int
    stored: int
    failed: int
    status: int
    wall_s: float
    rss_before: int
    rss_peak: int
    rss_after: int
    samples: int
    server_cpu_s: float

    @property
    def mb_per_s(self) -> float:
        return self.body_bytes / self.wall_s / 1e6


async def big_stow(
    server: Server, template: files.Template, count: int, kind: str, maker: files.Maker
) -> BigStow:
    study, series = maker.study(), maker.series()

    def instances() -> Iterator[files.Instance]:
        for _ in range(count):
            yield maker.make(template, study=study, series=series, patient="BENCH8000000")

    part = len(files.body_bytes([]))  # the closing delimiter
    one = files.body_size([maker.make(template)]) - part
    size = one * count + part
    await asyncio.to_thread(settle, server.pid, 5.0)
    rss_before = server.rss_bytes()
    cpu0 = server.cpu_s()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        with RssSampler(server.pid) as sampler:
            started = time.perf_counter()
            async with http.post(
                server.root + "/studies",
                data=files.body_stream(instances()),
                headers=_stow_headers(server, size),
            ) as resp:
                payload = await resp.read()
                status = resp.status
            wall = time.perf_counter() - started
            await asyncio.sleep(0.5)  # what the server keeps just after answering
    try:
        stored, failed = _stored_count(json.loads(payload))
    except ValueError:
        stored, failed = 0, count
    return BigStow(
        server=server.key,
        kind=kind,
        instances=count,
        body_bytes=size,
        stored=stored,
        failed=failed,
        status=status,
        wall_s=wall,
        rss_before=rss_before,
        rss_peak=sampler.peak,
        rss_after=server.rss_bytes(),
        samples=sampler.samples,
        server_cpu_s=server.cpu_s() - cpu0,
    )


# -- 3. QIDO / WADO-RS with 10,000 instances -------------------------------------------------


@dataclass
class Dataset:
    """What was loaded: study k has patient BENCH00000k; study 0 holds the 200-instance series."""

    patients: list[str]
    meta_study: str
    meta_series: str
    render_study: str
    render_series: str
    render_sop: str
    instances: int


def plan_dataset(
    maker: files.Maker, studies: int, per_study: int, meta_series: int
) -> tuple[Dataset, list[list[tuple[str, str, str]]]]:
    """(the dataset, the batches to send: lists of (study, series, patient) per instance)."""
    patients, batches = [], []
    meta_study = meta_series_uid = ""
    for k in range(studies):
        patient = files.patient_id(k)
        patients.append(patient)
        study, series = maker.study(), maker.series()
        if k == 0:
            meta_study, meta_series_uid = study, series
        n = meta_series if k == 0 else per_study
        slots = [(study, series, patient)] * n
        batches += [slots[i : i + 50] for i in range(0, n, 50)]
    total = sum(len(b) for b in batches)
    return (
        Dataset(patients, meta_study, meta_series_uid, "", "", "", total),
        batches,
    )


async def load(
    server: Server,
    template: files.Template,
    ct512: files.Template,
    maker: files.Maker,
    dataset: Dataset,
    batches: list[list[tuple[str, str, str]]],
    clients: int = 4,
) -> dict[str, float]:
    """Send the batches with ``clients`` concurrent clients; then one 512×512 CT."""
    queue = list(reversed(batches))
    errors = 0
    started = time.perf_counter()
    cpu0 = server.cpu_s()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients), timeout=TIMEOUT
    ) as http:

        async def client() -> None:
            nonlocal errors
            while queue:
                batch = queue.pop()
                instances = [
                    maker.make(template, study=st, series=se, patient=p) for st, se, p in batch
                ]
                stored, _ = await post_instances(http, server, instances)
                errors += len(batch) - stored

        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
        cpu = server.cpu_s() - cpu0
        if not dataset.render_sop:
            ct = maker.make(ct512, patient=files.patient_id(999_999))
            dataset.render_study, dataset.render_series, dataset.render_sop = (
                ct.study,
                ct.series,
                ct.sop,
            )
        else:
            ct = files.Instance(
                ct512,
                ct512.instance(
                    dataset.render_study,
                    dataset.render_series,
                    dataset.render_sop,
                    files.patient_id(999_999),
                ),
                dataset.render_study,
                dataset.render_series,
                dataset.render_sop,
            )
        stored, _ = await post_instances(http, server, [ct])
        errors += 1 - stored
    if errors:
        raise RuntimeError(f"{server.label}: {errors} instances failed to load")
    return {
        "instances": dataset.instances + 1,
        "wall_s": wall,
        "per_s": dataset.instances / wall,
        "server_cpu_ms_per_instance": cpu * 1000 / dataset.instances,
    }


@dataclass
class Latency:
    server: str
    what: str
    run: int
    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    response_bytes: int
    server_cpu_ms: float  # per request


async def timed_gets(
    server: Server,
    what: str,
    run: int,
    urls: Callable[[int], str],
    accept: str,
    n: int,
    check: Callable[[aiohttp.ClientResponse, bytes], None],
) -> Latency:
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        headers = {**server.headers, "Accept": accept}
        for k in range(2):  # warm-up
            async with http.get(urls(k), headers=headers) as resp:
                check(resp, await resp.read())
        cpu0 = server.cpu_s()
        for k in range(n):
            started = time.perf_counter()
            async with http.get(urls(k), headers=headers) as resp:
                body = await resp.read()
            times.append(time.perf_counter() - started)
            check(resp, body)
            size = len(body)
        cpu = server.cpu_s() - cpu0
    return Latency(
        server=server.key,
        what=what,
        run=run,
        requests=n,
        p50_ms=percentile(times, 50) * 1000,
        p99_ms=percentile(times, 99) * 1000,
        mean_ms=statistics.fmean(times) * 1000,
        response_bytes=size,
        server_cpu_ms=cpu * 1000 / n,
    )


def _json_check(expect: int) -> Callable[[aiohttp.ClientResponse, bytes], None]:
    def check(resp: aiohttp.ClientResponse, body: bytes) -> None:
        if resp.status != 200:
            raise RuntimeError(f"{resp.url}: {resp.status} {body[:300]!r}")
        found = len(json.loads(body))
        if found != expect:
            raise RuntimeError(f"{resp.url}: {found} results, expected {expect}")

    return check


def _image_check(resp: aiohttp.ClientResponse, body: bytes) -> None:
    if resp.status != 200 or not resp.content_type.startswith("image/jpeg"):
        raise RuntimeError(f"{resp.url}: {resp.status} {resp.content_type} {body[:200]!r}")
    if not body.startswith(b"\xff\xd8"):
        raise RuntimeError(f"{resp.url}: not a JPEG")


async def query_latencies(
    server: Server, dataset: Dataset, run: int, opts: Options
) -> list[Latency]:
    rng = random.Random(run)
    patients = [rng.choice(dataset.patients) for _ in range(opts.qido + 2)]
    root = server.root
    series = f"{root}/studies/{dataset.meta_study}/series/{dataset.meta_series}"
    rendered = (
        f"{root}/studies/{dataset.render_study}/series/{dataset.render_series}"
        f"/instances/{dataset.render_sop}/rendered"
    )
    return [
        await timed_gets(
            server,
            "qido-studies-by-patient",
            run,
            lambda k: f"{root}/studies?PatientID={patients[k]}",
            DICOM_JSON,
            opts.qido,
            _json_check(1),
        ),
        await timed_gets(
            server,
            "wado-series-metadata-200",
            run,
            lambda _k: f"{series}/metadata",
            DICOM_JSON,
            opts.metadata,
            _json_check(opts.meta_series),
        ),
        await timed_gets(
            server,
            "rendered-512-ct",
            run,
            lambda _k: rendered,
            "image/jpeg",
            opts.rendered,
            _image_check,
        ),
    ]


# -- 4. ECG ---------------------------------------------------------------------------------


def ecg_times(runs: int = 10) -> dict[str, float]:
    from pydicom.data import get_testdata_file

    from imaging.ecg import measure, read_ecg
    from imaging.ecgplot import render_svg

    path = get_testdata_file("waveform_ecg.dcm")
    assert path is not None
    source = Path(path)
    steps: dict[str, list[float]] = {"parse": [], "measure": [], "render_svg": [], "total": []}
    ecg = read_ecg(source)
    render_svg(ecg, measure(ecg))  # warm
    for _ in range(runs):
        t0 = time.perf_counter()
        ecg = read_ecg(source)
        t1 = time.perf_counter()
        m = measure(ecg)
        t2 = time.perf_counter()
        svg = render_svg(ecg, m)
        t3 = time.perf_counter()
        steps["parse"].append(t1 - t0)
        steps["measure"].append(t2 - t1)
        steps["render_svg"].append(t3 - t2)
        steps["total"].append(t3 - t0)
    out = {f"{k}_ms": statistics.median(v) * 1000 for k, v in steps.items()}
    out["svg_bytes"] = len(svg)
    out["leads"] = len(ecg.leads)
    out["sampling_hz"] = ecg.sampling_hz
    out["duration_s"] = ecg.duration_s
    return out


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    servers: tuple[str, ...]
    runs: int
    window_s: float
    studies: int
    per_study: int
    meta_series: int
    qido: int
    metadata: int
    rendered: int
    big_gb: float
    frames: int
    phases: frozenset[str]
    scenarios: tuple[tuple[int, int], ...]
    profile: bool
    keep: bool
    workers: int = 1


def _order(servers: Sequence[str], run: int) -> list[str]:
    return list(servers) if run % 2 == 0 else list(reversed(servers))


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    orthanc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "orthanc", "orthanc-dicomweb"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    ).stdout.strip()
    return {
        "commit": commit,
        "cpu": model,
        "nproc": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc_packages": orthanc,
        "loadavg_before": os.getloadavg(),
    }


async def run_all(opts: Options, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "make bench-dicom",
        "options": {
            k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(opts).items()
        },
        "machine": _machine(),
        "whatif": os.environ.get("HZBENCH_WHATIF", ""),
    }
    maker = files.Maker()

    def profile_dir(phase: str) -> Path | None:
        return workdir / f"profile-{phase}" if opts.profile else None

    _say("making the files...")
    small = files.ct_small(workdir)
    ct512 = files.ct512(workdir)
    results["files"] = {"ct-small": small.size, "ct512": ct512.size}

    if "stow" in opts.phases or "memory" in opts.phases:
        with contextlib.ExitStack() as stack:
            servers = {
                k: await asyncio.to_thread(
                    start, k, workdir, stack, profile_dir("stow"), opts.workers
                )
                for k in opts.servers
            }
            results["rss_start"] = {k: s.rss_bytes() for k, s in servers.items()}
            if "stow" in opts.phases:
                windows: list[StowWindow] = []
                for run in range(opts.runs):
                    for clients, batch in opts.scenarios:
                        for key in _order(opts.servers, run):
                            w = await stow_window(
                                servers[key], small, maker, clients, batch, opts.window_s, run
                            )
                            windows.append(w)
                            _say(
                                f"stow run {run + 1} {LABELS[key]:8} {clients} client(s) × "
                                f"{batch}/request: {w.per_s:6.1f} inst/s {w.mb_per_s:5.1f} MB/s "
                                f"p50 {w.request_p50_ms:6.1f} ms, server CPU "
                                f"{w.cpu_ms_per_instance:5.2f} ms/instance (main thread "
                                f"{w.server_main_cpu_s * 1000 / max(w.instances, 1):5.2f}), "
                                f"errors {w.errors}, "
                                f"machine busy {w.machine_busy_cores:.2f} cores"
                            )
                results["stow"] = [
                    {
                        **asdict(w),
                        "per_s": w.per_s,
                        "mb_per_s": w.mb_per_s,
                        "cpu_ms_per_instance": w.cpu_ms_per_instance,
                    }
                    for w in windows
                ]
            if "memory" in opts.phases:
                big = files.multiframe(workdir, opts.frames)
                results["files"]["multiframe"] = big.size
                results["files"]["multiframe_frames"] = opts.frames
                bigs: list[BigStow] = []
                for key in opts.servers:
                    for kind, template in (("many-instances", ct512), ("multiframe", big)):
                        count = max(1, math.ceil(opts.big_gb * 1e9 / template.size))
                        b = await big_stow(servers[key], template, count, kind, maker)
                        bigs.append(b)
                        _say(
                            f"1 GB STOW {LABELS[key]:8} {kind:15} {count} × "
                            f"{template.size / 1e6:.1f} MB: status {b.status}, stored "
                            f"{b.stored}, {b.mb_per_s:.0f} MB/s, RSS "
                            f"{b.rss_before / 2**20:.0f} → peak {b.rss_peak / 2**20:.0f} MiB"
                        )
                results["memory"] = [{**asdict(b), "mb_per_s": b.mb_per_s} for b in bigs]
                if big.tail_path is not None:
                    big.tail_path.unlink()
            results["disk"] = {k: s.disk_bytes() for k, s in servers.items()}

    if "query" in opts.phases:
        with contextlib.ExitStack() as stack:
            servers = {
                k: await asyncio.to_thread(start, k, workdir, stack, profile_dir("query"))
                for k in opts.servers
            }
            dataset, batches = plan_dataset(maker, opts.studies, opts.per_study, opts.meta_series)
            loads = {}
            for key in opts.servers:
                _say(f"loading {dataset.instances} instances into {LABELS[key]}...")
                loads[key] = await load(servers[key], small, ct512, maker, dataset, batches)
                loads[key]["rss_after_load"] = servers[key].rss_bytes()
                _say(
                    f"  {loads[key]['per_s']:.0f} instances/s (4 clients × 50 per request), "
                    f"server CPU {loads[key]['server_cpu_ms_per_instance']:.2f} ms/instance"
                )
            results["load"] = loads
            latencies: list[Latency] = []
            for run in range(opts.runs):
                for key in _order(opts.servers, run):
                    for lat in await query_latencies(servers[key], dataset, run, opts):
                        latencies.append(lat)
                        _say(
                            f"run {run + 1} {LABELS[key]:8} {lat.what:26} p50 "
                            f"{lat.p50_ms:7.1f} p99 {lat.p99_ms:7.1f} ms "
                            f"({lat.response_bytes / 1e3:.0f} kB, server CPU "
                            f"{lat.server_cpu_ms:.1f} ms/request)"
                        )
            results["latency"] = [asdict(x) for x in latencies]
            results["rss_after_queries"] = {k: s.rss_bytes() for k, s in servers.items()}

    if "ecg" in opts.phases:
        results["ecg"] = ecg_times()
        _say(f"ECG: {results['ecg']}")
    results["machine"]["loadavg_after"] = os.getloadavg()
    return results


# -- reporting ------------------------------------------------------------------------------


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows]
    return statistics.median(values) if values else float("nan")


def summary(results: dict[str, Any]) -> str:
    out: list[str] = []
    servers = results["options"]["servers"]
    head = "| figure | " + " | ".join(LABELS[s] for s in servers) + " |"
    out += [head, "|---|" + "---:|" * len(servers)]
    for clients, batch in STOW_SCENARIOS:
        rows = {
            s: [
                w
                for w in results.get("stow", [])
                if (w["server"], w["clients"], w["batch"]) == (s, clients, batch)
            ]
            for s in servers
        }
        if not any(rows.values()):
            continue
        cells = [
            f"{_median(rows[s], 'per_s'):.0f}/s, {_median(rows[s], 'mb_per_s'):.1f} MB/s, "
            f"p50 {_median(rows[s], 'request_p50_ms'):.0f} ms, "
            f"CPU {_median(rows[s], 'cpu_ms_per_instance'):.1f} ms/inst"
            for s in servers
        ]
        out.append(
            f"| STOW-RS CT_small, {clients} client{'s' if clients > 1 else ''}, {batch}/request | "
            + " | ".join(cells)
            + " |"
        )
    for kind in ("many-instances", "multiframe"):
        rows2 = {
            s: [b for b in results.get("memory", []) if (b["server"], b["kind"]) == (s, kind)]
            for s in servers
        }
        if not any(rows2.values()):
            continue
        cells = []
        for s in servers:
            if not rows2[s]:
                cells.append("–")
                continue
            b = rows2[s][0]
            cells.append(
                f"peak {b['rss_peak'] / 2**20:.0f} MiB (from {b['rss_before'] / 2**20:.0f}), "
                f"{b['mb_per_s']:.0f} MB/s, {b['stored']}/{b['instances']} stored"
            )
        first = next(iter(v for v in rows2.values() if v))[0]
        out.append(
            f"| 1 GB STOW, {kind} ({first['instances']} × "
            f"{first['body_bytes'] / first['instances'] / 1e6:.1f} MB) | "
            + " | ".join(cells)
            + " |"
        )
    for what in ("qido-studies-by-patient", "wado-series-metadata-200", "rendered-512-ct"):
        rows3 = {
            s: [x for x in results.get("latency", []) if (x["server"], x["what"]) == (s, what)]
            for s in servers
        }
        if not any(rows3.values()):
            continue
        cells = [
            f"p50 {_median(rows3[s], 'p50_ms'):.1f} / p99 {_median(rows3[s], 'p99_ms'):.1f} ms, "
            f"CPU {_median(rows3[s], 'server_cpu_ms'):.1f} ms"
            for s in servers
        ]
        out.append(f"| {what} | " + " | ".join(cells) + " |")
    if "load" in results:
        cells = [
            f"{results['load'][s]['per_s']:.0f}/s, CPU "
            f"{results['load'][s]['server_cpu_ms_per_instance']:.1f} ms/inst, RSS "
            f"{results['load'][s]['rss_after_load'] / 2**20:.0f} MiB"
            for s in servers
        ]
        out.append("| loading 10,000 (4 clients × 50/request) | " + " | ".join(cells) + " |")
    if "ecg" in results:
        e = results["ecg"]
        out.append(
            f"\nECG (ours, in-process, median of 10): parse {e['parse_ms']:.1f} ms, measure "
            f"{e['measure_ms']:.1f} ms, render_svg {e['render_svg_ms']:.1f} ms, total "
            f"{e['total_ms']:.1f} ms"
        )
    return "\n".join(out)


def profile_report(workdir: Path) -> str:
    out = ["# bench.dicom --profile: where our server's time goes\n"]
    for profile_dir in sorted(workdir.glob("profile-*")):
        out.append(f"\n# {profile_dir.name}\n")
        out += _profile_section(profile_dir)
    return "\n".join(out) + "\n"


def _profile_section(profile_dir: Path) -> list[str]:
    out: list[str] = []
    phases_path = profile_dir / "phases.json"
    if phases_path.exists():
        phases = json.loads(phases_path.read_text())
        out += [
            "| phase | calls | total s | mean wall ms | mean thread CPU ms (worker threads) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, v in sorted(phases.items()):
            n = max(v["count"], 1)
            cpu = v.get("thread_cpu_seconds", 0.0)
            out.append(
                f"| {name} | {v['count']} | {v['seconds']:.2f} | {v['seconds'] * 1000 / n:.2f} "
                f"| {cpu * 1000 / n:.2f} |"
            )
    for name in ("main", "threads"):
        path = profile_dir / f"{name}.pstats"
        if not path.exists():
            continue
        for sort in ("tottime", "cumulative"):
            stream = _Capture()
            stats = pstats.Stats(str(path), stream=stream)  # type: ignore[arg-type]
            stats.strip_dirs().sort_stats(sort).print_stats(30)
            out += [f"\n## {name} thread(s), by {sort}\n", "```", stream.text().strip(), "```"]
    return out


class _Capture:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def text(self) -> str:
        return "".join(self.parts)


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.dicom", description=__doc__.split("\n")[0])
    p.add_argument("--servers", default="huizhen,orthanc", help="huizhen,orthanc (default both)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--window", type=float, default=10.0, help="seconds per STOW window")
    p.add_argument("--studies", type=int, default=99, help="studies loaded for QIDO/WADO")
    p.add_argument("--per-study", type=int, default=100, help="instances in each other study")
    p.add_argument("--meta-series", type=int, default=200, help="instances in study 0's series")
    p.add_argument("--qido", type=int, default=200, help="QIDO requests per run")
    p.add_argument("--metadata", type=int, default=30, help="metadata requests per run")
    p.add_argument("--rendered", type=int, default=50, help="rendered requests per run")
    p.add_argument("--big-gb", type=float, default=1.0, help="size of the big STOW bodies")
    p.add_argument("--frames", type=int, default=300, help="frames of the multi-frame file")
    p.add_argument("--phases", default="stow,memory,query,ecg")
    p.add_argument(
        "--scenarios",
        default=",".join(f"{c}x{b}" for c, b in STOW_SCENARIOS),
        help="STOW scenarios as CLIENTSxBATCH (default 1x1,1x10,8x1,8x10)",
    )
    p.add_argument("--profile", action="store_true", help="our server under cProfile (alone)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument(
        "--workers", type=int, default=1, help="HUIZHEN_WORKERS for our server (with Redis)"
    )
    p.add_argument("--no-netns", action="store_true", help="do not enter a network namespace")
    a = p.parse_args(argv)
    servers = tuple(s for s in a.servers.split(",") if s)
    if a.profile:
        servers = ("huizhen",)
    if a.workers > 1 and ("memory" in a.phases.split(",") or a.profile):
        p.error("--workers: the memory phase and --profile watch one process; run them without it")
    for s in servers:
        if s not in LABELS:
            p.error(f"unknown server {s}")
    return Options(
        servers=servers,
        runs=a.runs,
        window_s=a.window,
        studies=a.studies,
        per_study=a.per_study,
        meta_series=a.meta_series,
        qido=a.qido,
        metadata=a.metadata,
        rendered=a.rendered,
        big_gb=a.big_gb,
        frames=a.frames,
        phases=frozenset(x for x in a.phases.split(",") if x),
        scenarios=tuple(
            (int(c), int(b)) for c, b in (x.split("x") for x in a.scenarios.split(",") if x)
        ),
        profile=a.profile,
        keep=a.keep,
        workers=a.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    if os.environ.get("HZBENCH_NETNS") != "1" and "--no-netns" not in args:
        # Orthanc listens on every interface: give it (and us) a network holding only lo.
        if shutil.which("unshare") is None:
            raise SystemExit("unshare (util-linux) is needed, and root")
        cmd = [
            "unshare",
            "-n",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "bench.dicom",
            *args,
        ]
        return subprocess.call(cmd, env={**os.environ, "HZBENCH_NETNS": "1"}, cwd=ROOT)
    workdir = Path(tempfile.mkdtemp(prefix="hz-bench-dicom-"))
    try:
        results = asyncio.run(run_all(opts, workdir))
        date = dt.date.today().isoformat()
        RESULTS.mkdir(exist_ok=True)
        text = summary(results)
        print(text)
        if opts.profile:
            report = profile_report(workdir)
            path = RESULTS / f"dicom-profile-{date}.md"
            path.write_text(report)
            _say(f"profile: {path}")
            (RESULTS / f"dicom-profile-{date}.json").write_text(json.dumps(results, indent=1))
        else:
            whatif = os.environ.get("HZBENCH_WHATIF")
            path = RESULTS / (
                f"dicom-whatif-{whatif.replace(',', '+')}-{date}.json"
                if whatif
                else f"dicom-{date}.json"
            )
            path.write_text(json.dumps(results, indent=1) + "\n")
            _say(f"results: {path}")
    finally:
        if opts.keep:
            _say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
