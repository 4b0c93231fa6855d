"""CPU accounting from /proc: per process (utime + stime) and for the whole machine."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by ``pid``; 0 if it is gone."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def thread_seconds(pid: int, tid: int) -> float:
    """CPU seconds used so far by one thread of ``pid`` (the main thread's id is ``pid``)."""
    return _stat_seconds(Path(f"/proc/{pid}/task/{tid}/stat"))


def _stat_seconds(path: Path) -> float:
    try:
        raw = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (PostgreSQL's backends are children of the postmaster)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def spawned_children(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's ``spawn`` (``HUIZHEN_WORKERS``'s
    workers under their supervisor), in pid order."""

    def spawned(child: int) -> bool:
        try:
            return b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False

    return sorted(child for child in children_of(pid) if spawned(child))


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    found: list[int] = []
    level = [pid]
    while level:
        level = [child for parent in level for child in children_of(parent)]
        found.extend(level)
    return found


def tree_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every process below it that is still running
    (a server's workers, ingest processes and their fork server)."""
    return process_seconds(pid) + sum(process_seconds(p) for p in descendants_of(pid))


def processes_seconds(pids: Iterable[int]) -> dict[int, float]:
    return {pid: process_seconds(pid) for pid in pids}


@dataclass(frozen=True, slots=True)
class MachineSample:
    """Jiffies summed over all cores since boot."""

    busy: int  # user, nice, system, irq, softirq
    steal: int  # time the hypervisor gave our virtual CPUs to someone else
    total: int


def machine_sample() -> MachineSample:
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    busy = user + nice + system + irq + softirq
    return MachineSample(busy=busy, steal=steal, total=busy + idle + iowait + steal)


@dataclass(frozen=True, slots=True)
class MachineUse:
    """Between two samples, in cores (2.0 = both cores of a 2-core machine)."""

    busy_cores: float
    steal_cores: float


def machine_use(start: MachineSample, end: MachineSample, wall_s: float) -> MachineUse:
    if wall_s <= 0:
        return MachineUse(0.0, 0.0)
    return MachineUse(
        busy_cores=(end.busy - start.busy) / TICKS / wall_s,
        steal_cores=(end.steal - start.steal) / TICKS / wall_s,
    )
