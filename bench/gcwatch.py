"""Garbage-collection pauses of a server under ``bench.realtime``, by generation.

``install()`` adds a ``gc.callbacks`` hook that times every collection; on SIGUSR1 the process
writes what it saw since the last signal to ``$HZBENCH_GC_OUT.<n>`` (JSON) and starts afresh.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

_started: list[float] = [0.0]
_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
_dumps = [0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].append((time.perf_counter() - _started[0]) * 1000)


def _dump(_signum: int, _frame: Any) -> None:
    out = os.environ.get("HZBENCH_GC_OUT")
    if not out:
        return
    _dumps[0] += 1
    summary = {
        str(gen): {"count": len(ms), "max_ms": max(ms, default=0.0), "total_ms": sum(ms)}
        for gen, ms in _pauses.items()
    }
    summary["tracked"] = {"count": len(gc.get_objects()), "frozen": gc.get_freeze_count()}
    Path(f"{out}.{_dumps[0]}").write_text(json.dumps(summary))
    for ms in _pauses.values():
        ms.clear()


def install() -> None:
    gc.callbacks.append(_callback)
    signal.signal(signal.SIGUSR1, _dump)
