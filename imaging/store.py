"""Content-addressed storage of DICOM instances: the raw bytes as received, under their SHA-256.

A file streams to a temporary file while it is hashed, then is renamed to
``sha256/ab/cd/<hash>``; the same bytes stored twice are kept once. A source that breaks off, or
grows past ``max_bytes``, leaves nothing behind. :class:`InstanceStore` is the interface an object
store can implement later. Blocking: from asyncio, call ``put`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["InstanceStore", "InstanceTooLarge", "LocalInstanceStore", "StoredInstance"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class InstanceTooLarge(Exception):
    """The source is larger than the caller allows."""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    sha256: str
    size: int
    created: bool  # False when the same bytes were already kept


class InstanceStore(Protocol):
    def put(self, source: BinaryIO | bytes, *, max_bytes: int | None = None) -> StoredInstance: ...

    def path(self, sha256: str) -> Path: ...

    def exists(self, sha256: str) -> bool: ...

    def temp_path(self) -> Path: ...

    def adopt(self, tmp: Path, sha256: str, size: int) -> StoredInstance: ...

    def delete(self, sha256: str) -> None: ...


class LocalInstanceStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def temp_path(self) -> Path:
        """A fresh path in the store's own file system, for a caller that streams a file in
        itself and then hands it over with :meth:`adopt` (or unlinks it)."""
        return self.root / "tmp" / uuid.uuid4().hex

    def adopt(self, tmp: Path, sha256: str, size: int) -> StoredInstance:
        """Move a complete, synced temporary file whose digest the caller computed into place."""
        target = self.path(sha256)
        if target.exists():
            tmp.unlink(missing_ok=True)
            return StoredInstance(sha256, size, created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        return StoredInstance(sha256, size, created=True)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def put(self, source: BinaryIO | bytes, *, max_bytes: int | None = None) -> StoredInstance:
        tmp = self.temp_path()
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as out:
                for chunk in _chunks(source):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise InstanceTooLarge(f"the instance exceeds {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.adopt(tmp, digest.hexdigest(), size)


def _chunks(source: BinaryIO | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        return iter([bytes(source)])
    return iter(lambda: source.read(_CHUNK), b"")
