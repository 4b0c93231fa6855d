"""Instances arriving at once are checked in ingest processes (HUIZHEN_INGEST_PROCESSES): what
they store and refuse is what the threads would, and a dead process does not stop the archive."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pydicom

from server.keys import ARCHIVE
from server.settings import Settings
from tests.helpers import Api
from tests.test_dicomweb import CT, MR, multipart, stow, uid, with_new_uids

CLIENTS = 6


async def _concurrent_stows(api: Api) -> tuple[list[tuple[int, Any]], set[str], int]:
    """CLIENTS requests at once, each two good instances and one truncated file."""
    bodies, expected = [], set()
    for _ in range(CLIENTS):
        good = [with_new_uids(CT), with_new_uids(MR)]
        expected |= {pydicom.dcmread(pydicom.filebase.DicomBytesIO(g)).SOPInstanceUID for g in good}
        bodies.append(multipart(*good, with_new_uids(CT)[:-5000]))
    await api.login("chengguan")
    results = await asyncio.gather(*(stow(api, "chengguan", b) for b in bodies))
    return results, expected, CLIENTS


async def test_concurrent_stores_use_the_ingest_processes(api: Api, settings: Settings) -> None:
    assert settings.ingest_processes == 1
    archive = api.client.app[ARCHIVE]
    results, expected, clients = await _concurrent_stows(api)
    stored: set[str] = set()
    for status, body in results:
        assert status == 202, body
        stored |= {uid(s, "00081155") for s in body["00081199"]["Value"]}
        # A file refused in a process comes back as the same failure as in a thread.
        assert [uid(f, "00081197") for f in body["00081198"]["Value"]] == [0xC000]
    assert stored == expected
    assert archive.checked_in_processes > 0
    status, studies = await api.get("/dicomweb/studies", "chengguan")
    assert status == 200 and sum(uid(s, "00201208") for s in studies) == 2 * clients
    assert list((settings.data_dir / "dicom" / "tmp").iterdir()) == []


async def test_a_killed_ingest_process_falls_back_to_threads(api: Api) -> None:
    archive = api.client.app[ARCHIVE]
    await _concurrent_stows(api)  # the processes are up
    pool = archive.processes
    assert pool is not None
    for pid in list(pool._processes):  # type: ignore[attr-defined]  # killing them is the point
        os.kill(pid, signal.SIGKILL)
    results, expected, _ = await _concurrent_stows(api)
    stored = {uid(s, "00081155") for _, body in results for s in body["00081199"]["Value"]}
    assert stored == expected  # nothing lost: checked in threads once the pool broke
    assert archive.processes is None
