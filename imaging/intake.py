"""The blocking part of taking an instance in: check the received file, sync it, move it into
the store. Run in a worker thread, or in an ingest process when several instances arrive at
once (``HUIZHEN_INGEST_PROCESSES``): it imports only this package, and what it takes and gives
back pickles.
"""

from __future__ import annotations

import os
from pathlib import Path

from imaging.ingest import Instance, ingest
from imaging.store import InstanceStore


class WrongStudy(Exception):
    """The instance belongs to another study than the one the request named."""

    def __init__(self, instance: Instance) -> None:
        super().__init__("another study")
        self.instance = instance

    def __reduce__(self) -> tuple[type[WrongStudy], tuple[Instance]]:
        return (WrongStudy, (self.instance,))


def check_and_place(
    store: InstanceStore, path: Path, sha256: str, size: int, expect_study_uid: str | None
) -> Instance:
    """Ingest the file at ``path``, then sync it and adopt it as ``sha256``; a refused file is
    removed (:class:`imaging.ingest.IngestError`, :class:`WrongStudy`)."""
    try:
        instance = ingest(path)
        if expect_study_uid is not None and instance.study_uid != expect_study_uid:
            raise WrongStudy(instance)
        sync(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    store.adopt(path, sha256, size)
    return instance


def sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
