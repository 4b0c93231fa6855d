"""The content-addressed instance store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from imaging.store import InstanceStore, InstanceTooLarge, LocalInstanceStore
from tests.imaging.dicomfiles import bundled


def test_same_bytes_are_kept_once(tmp_path: Path) -> None:
    store: InstanceStore = LocalInstanceStore(tmp_path)
    data = bundled("CT_small.dcm").read_bytes()
    first = store.put(data)
    second = store.put(io.BytesIO(data))  # streamed this time
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    assert (first.created, second.created) == (True, False)
    assert first.size == len(data)
    path = store.path(first.sha256)
    assert path == tmp_path / "sha256" / first.sha256[:2] / first.sha256[2:4] / first.sha256
    assert path.read_bytes() == data  # the raw bytes, as received
    assert store.exists(first.sha256)
    assert [p for p in (tmp_path / "sha256").rglob("*") if p.is_file()] == [path]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_different_bytes_are_kept_apart(tmp_path: Path) -> None:
    store = LocalInstanceStore(tmp_path)
    a = store.put(bundled("CT_small.dcm").read_bytes())
    b = store.put(bundled("MR_small.dcm").read_bytes())
    assert a.sha256 != b.sha256
    assert store.exists(a.sha256) and store.exists(b.sha256)


def test_a_stream_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = LocalInstanceStore(tmp_path)
    data = bytes(3 << 20)  # several read chunks
    with pytest.raises(InstanceTooLarge):
        store.put(io.BytesIO(data), max_bytes=(2 << 20) + 1)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "sha256").exists()
    assert store.put(io.BytesIO(data), max_bytes=len(data)).size == len(data)


def test_a_source_that_breaks_off_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("the modality went away")
            return b"x" * 100

    store = LocalInstanceStore(tmp_path)
    with pytest.raises(ConnectionResetError):
        store.put(Broken())  # type: ignore[arg-type]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_path_refuses_what_is_not_a_digest(tmp_path: Path) -> None:
    store = LocalInstanceStore(tmp_path)
    for bad in ("../../etc/passwd", "AB" * 32, "a" * 63, ""):
        with pytest.raises(ValueError, match="SHA-256"):
            store.path(bad)
    assert not store.exists("0" * 64)
