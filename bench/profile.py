"""Sampling the server with py-spy during a measurement, and summarising where its CPU goes.

py-spy is not a project dependency: ``.venv/bin/pip install py-spy`` to use ``--profile``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100
#: Frames under every sample of a thread: left out of the inclusive ranking.
_ROOTS = re.compile(
    r"^(<module>|_run_module_as_main|_run_code|main|_serve|run_app|BaseEventLoop\.run_forever"
    r"|BaseEventLoop\.run_until_complete|BaseEventLoop\._run_once|Thread\._bootstrap\w*"
    r"|Thread\.run) \("
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start_recording(pid: int, duration_s: int, output: Path) -> subprocess.Popen[bytes]:
    """Record ``pid`` for ``duration_s`` seconds into ``output`` (py-spy's raw collapsed stacks).

    ``--gil`` keeps only samples in which a thread held the GIL, that is, ran Python code: the
    idle-thread detection without it counts threads waiting in ``epoll`` or on aiosqlite's queue
    as busy. ``--nonblocking`` reads the stacks without pausing the server, so sampling costs the
    server little; py-spy's own CPU still competes for the two cores.
    """
    binary = py_spy_binary()
    if binary is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration_s),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--threads",
        "--gil",
        "--nonblocking",
        "--output",
        str(output),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _function(frame: str) -> tuple[str, str]:
    """(``function (file)``, package) of one py-spy frame, without the line number."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), "?"
    path = m.group("file")
    package = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    return f"{m.group('func')} ({path})", package


@dataclass
class Profile:
    samples: int = 0
    by_thread: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    self_by_package: Counter[str] = field(default_factory=Counter)
    #: Samples whose stack starts outside a thread's entry point: SQLAlchemy's greenlets.
    in_greenlets: int = 0

    @classmethod
    def read(cls, path: Path) -> Profile:
        profile = cls()
        for raw in path.read_text(errors="replace").splitlines():
            stack, _, count_text = raw.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = "?"
            if frames and frames[0].startswith("thread ("):
                thread = frames.pop(0)
            if not frames:
                continue
            profile.samples += count
            profile.by_thread[thread] += count
            if not _ROOTS.match(frames[0]):
                profile.in_greenlets += count
            leaf, package = _function(frames[-1])
            profile.self_time[leaf] += count
            profile.self_by_package[package] += count
            for name in {_function(f)[0] for f in frames if not _ROOTS.match(f)}:
                profile.inclusive[name] += count
        return profile

    def markdown(self, title: str, duration_s: float, top: int = 25) -> str:
        n = max(self.samples, 1)
        cpu = self.samples / (RATE * duration_s) if duration_s > 0 else 0.0
        out = [
            f"### {title}",
            "",
            f"{self.samples} samples at {RATE} Hz over {duration_s:.0f} s in which a server thread "
            f"held the GIL: Python ran about {cpu:.0%} of the time. SQLAlchemy runs queries in "
            "greenlets, whose frames py-spy shows as stacks of their own: inclusive shares of "
            "request-level functions leave out the SQL work they started. "
            f"Samples in such greenlet stacks: {self.in_greenlets / n:.0%}.",
            "",
            "Threads: " + ", ".join(f"{t} {c / n:.0%}" for t, c in self.by_thread.most_common(6)),
            "",
            "Self time by package (leaf frame):",
            "",
            "| package | share |",
            "|---|---|",
        ]
        out += [f"| {p} | {c / n:.1%} |" for p, c in self.self_by_package.most_common(12)]
        out += ["", "Top functions by self time:", "", "| function | self |", "|---|---|"]
        out += [f"| `{f}` | {c / n:.1%} |" for f, c in self.self_time.most_common(top)]
        out += [
            "",
            "Top functions by inclusive time (on the stack):",
            "",
            "| function | inclusive |",
            "|---|---|",
        ]
        out += [f"| `{f}` | {c / n:.1%} |" for f, c in self.inclusive.most_common(top + 15)]
        out.append("")
        return "\n".join(out)
