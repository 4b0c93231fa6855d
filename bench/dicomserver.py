"""``huizhen serve`` for ``bench.dicom``; with ``--profile``, where a request spends its time.

Only in the bench, never in the server: with ``HZBENCH_PROFILE=DIR`` set, this wrapper

* runs the event loop's thread under cProfile (``DIR/main.pstats``);
* profiles the work the server hands to worker threads (ingest, fsync, moving the file into
  place) with one cProfile per thread, merged at exit (``DIR/threads.pstats``);
* times the phases of a request (wall time, count) by wrapping the functions that do them
  (``DIR/phases.json``): receiving the body, the fsync, ingest, adopting the file, the patient
  look-up, the index insert, commits; for searches the SQL and JSON of ``imaging.qido.search``,
  for metadata the instance query and the JSON response.

``HZBENCH_PROFILE_MODE=phases`` keeps only the phase timers (no cProfile, whose overhead
inflates Python-heavy phases several times). Without ``HZBENCH_PROFILE`` it serves as shipped.
Stats are written when the server stops (SIGTERM).
"""

from __future__ import annotations

import cProfile
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_phases: dict[str, list[float]] = {}
_thread_profiles: list[cProfile.Profile] = []
_local = threading.local()


def _note(name: str, seconds: float, cpu: float = 0.0) -> None:
    with _lock:
        entry = _phases.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] += cpu


def _timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _note(name, time.perf_counter() - start)

    return wrapper


def _timed_sync(name: str, fn: Callable[..., Any], *, profile: bool) -> Callable[..., Any]:
    """A function run in a worker thread: timed, and profiled by that thread's cProfile."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        prof: cProfile.Profile | None = None
        if profile and threading.current_thread() is not threading.main_thread():
            prof = getattr(_local, "profile", None)
            if prof is None:
                prof = _local.profile = cProfile.Profile()
                with _lock:
                    _thread_profiles.append(prof)
        start, cpu = time.perf_counter(), time.thread_time()
        if prof is not None:
            prof.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            if prof is not None:
                prof.disable()
            _note(name, time.perf_counter() - start, time.thread_time() - cpu)

    return wrapper


def _install(*, with_cprofile: bool) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from imaging import intake, steps
    from imaging.store import LocalInstanceStore
    from server import archive, dicomweb, wado

    # The names the server's modules call through (imported there, so not theirs to mypy).
    intake.ingest = _timed_sync(  # type: ignore[attr-defined]
        "stow: ingest (parse, check, JSON model)",
        intake.ingest,  # type: ignore[attr-defined]
        profile=with_cprofile,
    )
    intake.sync = _timed_sync("stow: fsync", intake.sync, profile=with_cprofile)
    LocalInstanceStore.adopt = _timed_sync(  # type: ignore[method-assign]
        "stow: adopt (rename into place)", LocalInstanceStore.adopt, profile=with_cprofile
    )
    steps.SqliteRunner.run = _timed_sync(  # type: ignore[method-assign]
        "SQL work in a worker thread (SQLite: index, audit)",
        steps.SqliteRunner.run,
        profile=with_cprofile,
    )
    archive.Archive.receive = _timed_async(  # type: ignore[method-assign]
        "stow: receive (stream part to tmp, hash)", archive.Archive.receive
    )
    archive.Archive.accept = _timed_async(  # type: ignore[method-assign]
        "stow: accept (ingest, fsync, adopt, index, audit)", archive.Archive.accept
    )
    dicomweb.search = _timed_async(  # type: ignore[attr-defined]
        "qido: search (SQL + JSON model)",
        dicomweb.search,  # type: ignore[attr-defined]
    )
    dicomweb.dicom_json = functools.partial(  # type: ignore[attr-defined]
        _timed_json,
        "qido/stow: dicom_json",
        dicomweb.dicom_json,  # type: ignore[attr-defined]
    )
    wado.visible_instances = _timed_async("wado: visible_instances (SQL)", wado.visible_instances)
    wado._audit_retrieval = _timed_async("wado: audit row", wado._audit_retrieval)
    AsyncSession.commit = _timed_async("session commit (all)", AsyncSession.commit)  # type: ignore[method-assign]


def _timed_json(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        _note(name, time.perf_counter() - start)


def main() -> int:
    from server import cli

    out = os.environ.get("HZBENCH_PROFILE")
    if not out:
        return cli.main(["serve"])
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    _install(with_cprofile=os.environ.get("HZBENCH_PROFILE_MODE") != "phases")
    prof = cProfile.Profile()
    if os.environ.get("HZBENCH_PROFILE_MODE") != "phases":
        prof.enable()
    try:
        return cli.main(["serve"])
    finally:
        prof.disable()
        if os.environ.get("HZBENCH_PROFILE_MODE") != "phases":
            prof.dump_stats(directory / "main.pstats")
        with _lock:
            if _thread_profiles:
                import pstats

                merged = pstats.Stats(_thread_profiles[0])
                for other in _thread_profiles[1:]:
                    merged.add(other)
                merged.dump_stats(directory / "threads.pstats")
            (directory / "phases.json").write_text(
                json.dumps(
                    {
                        k: {"count": v[0], "seconds": v[1], "thread_cpu_seconds": v[2]}
                        for k, v in _phases.items()
                    }
                )
            )


if __name__ == "__main__":
    raise SystemExit(main())
