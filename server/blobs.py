"""Content-addressed file storage: bytes are kept under their SHA-256, written once.

An upload streams to a temporary file while it is hashed, then is renamed into place; a body over
the limit, or one that breaks off, leaves nothing behind. The same content uploaded twice is kept
once. :class:`BlobStore` is the interface an object store can implement later.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from server.problems import PayloadTooLarge

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Blob:
    sha256: str
    size: int


class BlobStore(Protocol):
    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Blob: ...

    def path(self, sha256: str) -> Path: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Blob:
        tmp = self.root / "tmp" / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        fh: BinaryIO = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"the file exceeds {max_bytes} bytes")
                digest.update(chunk)
                await asyncio.to_thread(fh.write, chunk)
            await asyncio.to_thread(_flush, fh)
        except BaseException:
            await asyncio.to_thread(fh.close)
            tmp.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(fh.close)
        sha = digest.hexdigest()
        target = self.path(sha)
        await asyncio.to_thread(_move_into_place, tmp, target)
        return Blob(sha, size)


def _flush(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _move_into_place(tmp: Path, target: Path) -> None:
    if target.exists():  # the same content is already kept
        tmp.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
