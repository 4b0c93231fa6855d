"""How much of an MP4 file plays, from its top-level boxes alone (no decoder, nothing loaded).

The server asks this of a recording before it attaches it to a consult: a recorder that died
before it wrote the index of a plain MP4, or before its first fragment was complete, leaves
bytes that no player opens; one that died in the middle of a fragment leaves a cut tail, which
is left out. ISO/IEC 14496-12: a box is a 32-bit size (1: a 64-bit size follows
the type; 0: to the end of the file) and a four-letter type.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def boxes(fh: BinaryIO, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload size, end offset) of each complete top-level box; stops at one that runs
    past ``end`` or cannot be read (a file cut while it was written)."""
    pos = 0
    while pos + 8 <= end:
        fh.seek(pos)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            extended = fh.read(8)
            if len(extended) < 8:
                return
            (size,) = struct.unpack(">Q", extended)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        pos += size
        yield kind, size - header, pos


def playable_length(path: str | Path) -> int:
    """How much of the file, from its start, plays: up to the end of its last complete box (not
    counting a fragment header without its media), if those boxes hold a ``moov`` (the index of
    a plain MP4, the header of a fragmented one) and a non-empty ``mdat``; else 0. A plain MP4
    cut before its end has no ``moov`` (it comes last); a fragmented one keeps every fragment
    that was complete, and its cut tail is left out."""
    path = Path(path)
    index = media = False
    length = 0
    with path.open("rb") as fh:
        for kind, size, end in boxes(fh, path.stat().st_size):
            index = index or kind == b"moov"
            media = media or (kind == b"mdat" and size > 0)
            if kind != b"moof":  # a fragment's header is nothing without its media
                length = end
    return length if index and media else 0
