"""Real servers for tests and benchmarks: PostgreSQL, Redis and Huizhen itself, on 127.0.0.1
with ports chosen at run time. Each is started by a fixture and stopped by its pid."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``), trust auth on loopback."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hz-pg-")))

    def _as_postgres(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:  # initdb refuses root
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> Postgres:
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        subprocess.run(
            self._as_postgres(
                initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._as_postgres(
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(self.directory / "log"),
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )
        return self

    def stop(self) -> None:
        pg_ctl = postgres_bin("pg_ctl")
        if pg_ctl and (self.directory / "data").exists():
            subprocess.run(
                self._as_postgres(
                    pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate", "stop"
                ),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = postgres_bin("psql") or "psql"
        out = subprocess.run(
            [
                psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@dataclass
class Redis:
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("Redis is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _port_open(self.port), 10, "redis")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class Coturn:
    """coturn with the ``use-auth-secret`` (TURN REST API) scheme, relaying on loopback only."""

    secret: str = "turn-test-secret"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hz-turn-")))

    def start(self) -> Coturn:
        binary = shutil.which("turnserver")
        if not binary:
            raise RuntimeError("coturn is not installed (apt-get install coturn)")
        low = 40000 + (self.port % 20000)
        config = self.directory / "turnserver.conf"
        config.write_text(
            "\n".join(
                [
                    f"listening-port={self.port}",
                    "listening-ip=127.0.0.1",
                    "relay-ip=127.0.0.1",
                    f"min-port={low}",
                    f"max-port={low + 200}",
                    "use-auth-secret",
                    f"static-auth-secret={self.secret}",
                    "realm=huizhen.test",
                    "allow-loopback-peers",
                    "no-cli",
                    "no-tls",
                    "no-dtls",
                    "fingerprint",
                    f"pidfile={self.directory / 'turnserver.pid'}",
                    "log-file=stdout",
                    "simple-log",
                ]
            )
            + "\n"
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _udp_listening(self.port), 10, "coturn")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _udp_listening(port: int) -> bool:
    out = subprocess.run(["ss", "-Hlun", f"sport = :{port}"], capture_output=True, text=True)
    return bool(out.stdout.strip())


@dataclass
class HuizhenProcess:
    """``huizhen serve`` in a child process, as an operator would run it."""

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> HuizhenProcess:
        env = {
            **os.environ,
            **self.env,
            "HUIZHEN_HOST": "127.0.0.1",
            "HUIZHEN_PORT": str(self.port),
        }
        data_dir = Path(env.get("HUIZHEN_DATA_DIR", tempfile.mkdtemp(prefix="hz-data-")))
        env["HUIZHEN_DATA_DIR"] = str(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "serve"], env=env, stdout=log, stderr=log, cwd=ROOT
            )
        wait_until(self._ready, timeout, f"huizhen on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"huizhen exited: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def running(server: Postgres | Redis | Coturn | HuizhenProcess) -> Iterator[None]:
    server.start()
    try:
        yield
    finally:
        server.stop()
