"""Running wrk with a scenario's Lua script and reading its summary (and its own CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WRK_DIR = Path(__file__).resolve().parent / "wrk"
MARK = "HZBENCH "
FIRST_ERROR_MARK = "HZBENCH_FIRST_ERROR "


class LoadError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    #: wrk's own measuring time: from its first request to its end.
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    #: connect, read, write errors and timeouts.
    socket_errors: int
    #: Responses with a status outside 200-299 (counted in the script).
    non2xx: int
    #: National-ID numbers reused because a thread ran out of its range (never expected).
    overflow: int
    first_error: str
    #: CPU seconds (user + system) wrk used, from the kernel's rusage of the child.
    wrk_cpu_s: float
    #: Wall-clock seconds from starting wrk to its exit.
    wall_s: float

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non2xx + self.overflow

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise LoadError("wrk is not installed: apt-get install wrk (.ci/run installs it)")
    return found


def _script(scenario: str) -> str:
    common = (WRK_DIR / "common.lua").read_text(encoding="utf-8")
    own = (WRK_DIR / f"{scenario}.lua").read_text(encoding="utf-8")
    return common + "\n" + own


def run_wrk(
    url: str,
    scenario: str,
    args: Sequence[str],
    *,
    connections: int,
    threads: int,
    duration_s: int,
) -> WrkResult:
    """Run one wrk measurement of ``duration_s`` seconds and return its summary."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=f"-{scenario}.lua", prefix="hz-wrk-", encoding="utf-8", delete=False
    ) as fh:
        fh.write(_script(scenario))
        script = fh.name
    argv = [
        wrk_binary(),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration_s}s",
        # Long enough that a slow response is measured rather than dropped as a timeout.
        "--timeout",
        "30s",
        "--latency",
        "-s",
        script,
        url,
        "--",
        *args,
    ]
    try:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # wrk stops by itself after the duration; this only bounds a wrk that would not.
        watchdog = threading.Timer(duration_s + 60, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            output = proc.stdout.read().decode(errors="replace")  # until wrk closes it at exit
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
    finally:
        os.unlink(script)
    return _parse(output, proc.returncode, usage.ru_utime + usage.ru_stime, wall)


def _parse(output: str, returncode: int, cpu_s: float, wall_s: float) -> WrkResult:
    summary: dict[str, float] | None = None
    first_error = ""
    for line in output.splitlines():
        if line.startswith(MARK):
            summary = json.loads(line[len(MARK) :])
        elif line.startswith(FIRST_ERROR_MARK):
            first_error = line[len(FIRST_ERROR_MARK) :]
    if returncode != 0 or summary is None:
        raise LoadError(f"wrk exited with {returncode}:\n{output[-2000:]}")
    return WrkResult(
        requests=int(summary["requests"]),
        duration_s=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        mean_ms=summary["mean_us"] / 1000,
        socket_errors=int(
            summary["connect"] + summary["read"] + summary["write"] + summary["timeout"]
        ),
        non2xx=int(summary["non2xx"]),
        overflow=int(summary["overflow"]),
        first_error=first_error,
        wrk_cpu_s=cpu_s,
        wall_s=wall_s,
    )
