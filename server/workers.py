"""Several server processes on one port (``HUIZHEN_WORKERS``).

One Python process runs its event loop on one core. With ``HUIZHEN_WORKERS=N`` the ``serve``
command becomes a small supervisor: it applies migrations once (in a passing process of their
own, so that the supervisor stays small), then starts N worker processes
(``spawn``: fresh interpreters, nothing copied from this one) that each bind the same address
with ``SO_REUSEPORT``, so the kernel spreads incoming connections across them. Each worker is a
whole node (:func:`server.app.create_app`): the workers share the database and the data
directory, and hear each other's live events through Redis, as nodes on several machines do.

Only worker 0 opens the DIMSE and MLLP listeners (a port is one process's). Before starting
any worker the supervisor checks that nothing already listens on the port (``SO_REUSEPORT``
would otherwise let a second server share it silently). A worker that dies after it was ready
is started again; one that dies before it was ready stops the whole server (a bad
configuration, an unreachable database: starting again would not help). SIGTERM or SIGINT stops
the workers gracefully, then the supervisor. ``/metrics`` adds up every worker's request figures
(:mod:`server.metrics`): the workers keep them in files under ``<data dir>/metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from prometheus_client import multiprocess

from server.metrics import SHARED_DIR_VARIABLE
from server.settings import Settings

log = logging.getLogger(__name__)

#: A worker that crashes sooner than this after its start is started again only this late.
RESTART_PAUSE = 5.0
#: How long a stopping worker gets before it is killed (its own shutdown takes up to 10 s).
STOP_GRACE = 20.0

#: What a worker runs: ``target(settings, index, ready)``; it sets ``ready`` once it serves.
Target = Callable[[Settings, int, EventType], None]


class PortInUse(OSError):
    """Something already listens on the address the workers are to share."""


def _addresses(host: str, port: int) -> Iterator[tuple[int, int, int, Any]]:
    """Each address to listen on for ``host:port``, once: (family, type, proto, address)."""
    seen: set[object] = set()
    for family, kind, proto, _name, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if address not in seen:
            seen.add(address)
            yield family, kind, proto, address


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` the way a lone server would (no ``SO_REUSEPORT``): this fails when
    anything listens there, including another set of workers."""
    for family, kind, proto, address in _addresses(host, port):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                probe.bind(address)
            except OSError as exc:
                raise PortInUse(f"{host}:{port} is in use ({exc.strerror})") from None


def settings_for(settings: Settings, index: int) -> Settings:
    """What worker ``index`` runs with: migrations are done; listeners on worker 0 only."""
    changes: dict[str, object] = {"migrate_on_start": False}
    if index > 0:
        changes.update(dicom_port=0, mllp_port=0)
    return settings.replace(**changes)


class _Worker(NamedTuple):
    process: BaseProcess
    started: float  # time.monotonic()
    ready: EventType


class Supervisor:
    """Starts ``settings.workers`` processes running ``target(settings_for(settings, i), i,
    ready)``, keeps them up, and stops them."""

    def __init__(self, settings: Settings, target: Target) -> None:
        self.settings = settings
        self.target = target
        self.metrics_dir = prepare_metrics_dir(settings)
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self.failed = False

    def _start(self, index: int) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=self.target,
            args=(settings_for(self.settings, index), index, ready),
            name=f"huizhen-worker-{index}",
            daemon=False,
        )
        process.start()
        self._workers[index] = _Worker(process, time.monotonic(), ready)
        log.info("worker %d started (pid %s)", index, process.pid)

    def stop(self, *_: object) -> None:
        """Ask every worker to stop (also the handler of SIGTERM and SIGINT)."""
        if self._stopping:
            return
        self._stopping = True
        for worker in self._workers.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.terminate()  # SIGTERM: aiohttp shuts the worker down gracefully

    def run(self) -> int:
        """Until stopped: 0 after a requested stop, 1 when a worker could not start."""
        for index in range(self.settings.workers):
            if not self._stopping:  # a signal may come while they start
                self._start(index)
        announced = False
        while not self._stopping:
            if not announced and all(w.ready.is_set() for w in self._workers.values()):
                announced = True
                log.info("all %d workers ready", len(self._workers))
            sentinels = {w.process.sentinel: i for i, w in self._workers.items()}
            for ready in wait(list(sentinels), timeout=0.5):
                assert isinstance(ready, int)  # a process sentinel is a file descriptor
                self._exited(sentinels[ready])
        self._join()
        return 1 if self.failed else 0

    def _exited(self, index: int) -> None:
        process, started, ready = self._workers[index]
        process.join()
        if process.pid is not None:  # its in-flight gauge no longer counts
            multiprocess.mark_process_dead(process.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        if self._stopping:
            return
        if not ready.is_set():
            log.error(
                "worker %d exited with code %s while starting; stopping the server",
                index,
                process.exitcode,
            )
            self.failed = True
            self.stop()
            return
        log.warning("worker %d exited with code %s; starting another", index, process.exitcode)
        lived = time.monotonic() - started
        if lived < RESTART_PAUSE:
            time.sleep(RESTART_PAUSE - lived)
        if not self._stopping:  # stopped while pausing
            self._start(index)

    def _join(self) -> None:
        deadline = time.monotonic() + STOP_GRACE
        for index, worker in self._workers.items():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("worker %d did not stop in time; killing it", index)
                worker.process.kill()
                worker.process.join()


def listening_sockets(host: str, port: int, backlog: int = 128) -> list[socket.socket]:
    """In a worker: its own listening sockets on ``host:port``, in the ``SO_REUSEPORT`` group.
    Bound before the app starts, so a worker that is ready is one the kernel hands
    connections to (any that arrive meanwhile wait in the backlog)."""
    sockets: list[socket.socket] = []
    for family, kind, proto, address in _addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            for other in sockets:
                other.close()
            raise
        sockets.append(sock)
    return sockets


def prepare_metrics_dir(settings: Settings) -> Path:
    """An empty directory for the workers' metric files, named to prometheus_client in the
    environment the workers inherit (it picks its mode when it is imported)."""
    path = (settings.data_dir / "metrics").resolve()
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's: its counts are not this run's
        stale.unlink()
    os.environ[SHARED_DIR_VARIABLE] = str(path)
    return path


def detach_from_terminal() -> None:
    """In a worker: leave the terminal's process group. Ctrl-C reaches the supervisor only,
    which stops each worker once (a second signal would cut a worker's shutdown short)."""
    os.setpgid(0, 0)


def exit_with_parent(interval: float = 1.0) -> None:
    """In a worker: stop gracefully (SIGTERM to itself) if the supervisor disappears, so a
    killed supervisor leaves no worker holding the port."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def in_child(target: Callable[[Settings], None], settings: Settings) -> int | None:
    """Run ``target(settings)`` in a fresh process and wait for it; its exit code. What it
    imports and allocates goes with it."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=(settings,))
    process.start()
    process.join()
    return process.exitcode


def supervise(settings: Settings, target: Target) -> int:
    """Run ``settings.workers`` workers until SIGTERM or SIGINT; the exit status."""
    check_port_free(settings.host, settings.port)
    supervisor = Supervisor(settings, target)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return supervisor.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
