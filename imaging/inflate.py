"""A deflated DICOM data set read as a stream, in bounded memory.

Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99) deflates everything after the file
meta information. pydicom inflates it whole; :class:`InflatedStream` instead gives the parser a
seekable file object that inflates on demand, so that memory stays bounded whatever the size.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Final

__all__ = ["InflatedStream"]


class InflatedStream(io.RawIOBase):
    """A read-only, seekable view of a raw-deflate stream, in bounded memory.

    Seeking forward inflates and discards; seeking back within :attr:`KEEP` bytes is served
    from the window (pydicom re-reads a few header bytes); further back starts over, a few
    times at most.
    """

    KEEP: Final = 1 << 16
    CHUNK: Final = 1 << 16
    MAX_RESTARTS: Final = 8

    def __init__(self, fh: BinaryIO, start: int) -> None:
        super().__init__()
        self._fh, self._start = fh, start
        self._pos = 0
        self._restarts = -1
        self._restart()

    def _restart(self) -> None:
        self._restarts += 1
        if self._restarts > self.MAX_RESTARTS:  # a parser going back and forth over garbage
            raise OSError("too many backward seeks in a deflated stream")
        self._fh.seek(self._start)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._window = bytearray()
        self._window_at = 0  # stream position of self._window[0]
        self._done = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of a deflated stream")
        self._pos = max(offset, 0)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        if self._pos < self._window_at:
            self._restart()
        # Served in pieces of at most the window's size, so that a long read holds the data
        # once (and once more while joined), never a window as large as itself.
        parts: list[bytes] = []
        while size > 0:
            begin = self._pos - self._window_at
            if begin < len(self._window):
                piece = bytes(self._window[begin : begin + size])
                parts.append(piece)
                self._pos += len(piece)
                size -= len(piece)
            elif self._done:
                break
            else:
                self._inflate_more()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _inflate_more(self) -> None:
        inflater = self._inflater
        if inflater.unconsumed_tail:
            data = inflater.decompress(inflater.unconsumed_tail, self.CHUNK)
        elif inflater.eof:
            data, self._done = b"", True
        else:
            compressed = self._fh.read(self.CHUNK)
            if compressed:
                data = inflater.decompress(compressed, self.CHUNK)
            else:
                data, self._done = inflater.flush(), True
        self._window += data
        drop = min(self._pos - self.KEEP - self._window_at, len(self._window))
        if drop > 0:
            del self._window[:drop]
            self._window_at += drop
