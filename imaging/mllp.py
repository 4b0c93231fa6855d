"""MLLP, the HL7 v2 framing over TCP: ``<VT> message <FS><CR>``, one ACK per message.

:class:`FrameDecoder` does the framing without I/O (bytes in, messages out): frames may arrive
split across reads or several in one read; bytes before a start block are skipped; a start
block inside an unfinished frame means the sender started over, and the partial frame is
dropped; a frame over the size cap raises :class:`FrameTooLarge`.

:func:`serve_mllp` listens with asyncio. Per connection, messages are handled one at a time in
arrival order and each answer is written back framed. A frame over the cap is answered with a
NAK (AR) and the connection is closed; a connection idle for ``idle_timeout`` seconds is closed;
a handler that raises gets an AR NAK sent for it (the sender may retry) and the connection stays
open. :func:`oru_handler` is the handler for lab results: parse, hand over, then acknowledge, so
an AA means the lab result was taken. :func:`send_mllp` is the client, for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType

from imaging.hl7v2 import DEFAULT_MAX_BYTES, Hl7Error, ack, encode, parse_oru
from imaging.lab import LabMessage

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "FrameDecoder",
    "FrameTooLarge",
    "Handler",
    "MllpServer",
    "frame",
    "oru_handler",
    "send_mllp",
    "serve_mllp",
]

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_READ_SIZE = 65536

Handler = Callable[[bytes], Awaitable[bytes]]


class FrameTooLarge(Exception):
    """A frame grew past the cap; ``head`` is its start (enough for an MSH, for the NAK)."""

    def __init__(self, head: bytes) -> None:
        super().__init__("MLLP frame over the size cap")
        self.head = head


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


class FrameDecoder:
    """Bytes in, complete messages out (without their framing)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of the frame already searched for the end block
        self.skipped = 0  # bytes dropped outside frames, for the log

    def feed(self, data: bytes) -> list[bytes]:
        messages: list[bytes] = []
        self._buffer += data
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self.skipped += len(self._buffer)
                    self._buffer.clear()
                    return messages
                self.skipped += start
                del self._buffer[: start + 1]
                self._in_frame, self._scanned = True, 0
            end = self._buffer.find(END_BLOCK, max(0, self._scanned - 1))
            limit = len(self._buffer) if end < 0 else end
            restart = self._buffer.find(START_BLOCK, self._scanned, limit)
            if restart >= 0:  # the sender started over: drop the unfinished frame
                self.skipped += restart + 1
                del self._buffer[: restart + 1]
                self._scanned = 0
                continue
            if end < 0:
                self._scanned = len(self._buffer)
                if len(self._buffer) > self.max_message_bytes + 1:  # +1: half an end block
                    raise FrameTooLarge(bytes(self._buffer[:_READ_SIZE]))
                return messages
            if end > self.max_message_bytes:
                raise FrameTooLarge(bytes(self._buffer[:_READ_SIZE]))
            messages.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END_BLOCK)]
            self._in_frame = False

    @property
    def pending(self) -> bool:
        """Inside a frame whose end has not come yet."""
        return self._in_frame


def _nak(raw: bytes, text: str, error: Hl7Error | None = None) -> bytes:
    return encode(ack(raw, "AR", text, error=error))


class MllpServer:
    """The listening server and its connections.

    Quacks like :class:`asyncio.Server` for ``sockets``, ``close()``, ``wait_closed()`` and
    ``async with``; unlike it (on Python 3.11), closing also closes the open connections and
    ``wait_closed()`` waits for their tasks.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_message_bytes: int,
        idle_timeout: float,
        max_connections: int,
    ) -> None:
        self._handler = handler
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._connections: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self._port = 0

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.server.sockets) if self.server else ()

    @property
    def port(self) -> int:
        """The port listened on (the first socket's), e.g. after binding port 0."""
        return self._port

    def is_serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._connections:
            task.cancel()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def __aenter__(self) -> MllpServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._connections) >= self.max_connections:
            log.warning("mllp: refusing %s: %d connections open", peer, len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer, peer)
        except ConnectionError:
            log.info("mllp: connection from %s lost", peer)
        except asyncio.CancelledError:
            # The server is closing. This task is the connection's outermost frame and asyncio's
            # stream callback (3.11) logs a cancelled one as an error: end it normally.
            log.info("mllp: closing the connection from %s: server closing", peer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        decoder = FrameDecoder(self.max_message_bytes)
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    chunk = await reader.read(_READ_SIZE)
            except TimeoutError:
                log.info("mllp: closing idle connection from %s", peer)
                return
            if not chunk:
                if decoder.pending:
                    log.warning("mllp: %s closed the connection inside a frame", peer)
                return
            try:
                messages = decoder.feed(chunk)
            except FrameTooLarge as exc:
                log.warning("mllp: frame from %s over the size cap: NAK, close", peer)
                error = Hl7Error("too-large")
                writer.write(frame(_nak(exc.head, "message too large", error)))
                await writer.drain()
                return
            if decoder.skipped:
                log.warning("mllp: skipped %d bytes outside frames from %s", decoder.skipped, peer)
                decoder.skipped = 0
            for message in messages:
                writer.write(frame(await self._answer(message)))
                await writer.drain()

    async def _answer(self, message: bytes) -> bytes:
        try:
            return await self._handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("mllp: the message handler failed")  # our own code: no patient data
            return _nak(message, "application error")


async def serve_mllp(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_message_bytes: int = DEFAULT_MAX_BYTES,
    idle_timeout: float = 300.0,
    max_connections: int = 64,
) -> MllpServer:
    """Listen for MLLP on ``host:port`` (0: any free port); ``handler(message) -> ACK bytes``."""
    server = MllpServer(
        handler,
        max_message_bytes=max_message_bytes,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
    )
    server.server = await asyncio.start_server(server._connection, host, port)
    server._port = int(server.server.sockets[0].getsockname()[1])
    return server


def oru_handler(
    accept: Callable[[LabMessage], Awaitable[None]],
    *,
    app: str = "HUIZHEN",
    facility: str = "",
    max_message_bytes: int = DEFAULT_MAX_BYTES,
) -> Handler:
    """A handler for lab results: parse (in a thread), ``await accept(message)``, then ACK.

    An AA is sent only once ``accept`` has returned: store the result (and raise the critical
    value) there. An unreadable message is NAKed with its error (AE or AR, with ERR); if
    ``accept`` raises, :class:`MllpServer` NAKs with AR so that the lab sends again.
    """

    async def handle(raw: bytes) -> bytes:
        try:
            message = await asyncio.to_thread(parse_oru, raw, max_bytes=max_message_bytes)
        except Hl7Error as exc:
            log.warning("mllp: message refused: %s", exc)  # code and place, never a value
            text = ack(raw, exc.ack_code, str(exc), error=exc, app=app, facility=facility)
            return encode(text)
        await accept(message)
        return encode(ack(message, "AA", app=app, facility=facility))

    return handle


async def send_mllp(
    host: str,
    port: int,
    message: bytes | str,
    *,
    max_reply_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """Send one message (text is encoded in its MSH-18 character set), return the reply.

    No time limit of its own: wrap the call in ``asyncio.timeout``.
    """
    data = encode(message) if isinstance(message, str) else message
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(frame(data))
        await writer.drain()
        decoder = FrameDecoder(max_reply_bytes)
        while True:
            chunk = await reader.read(_READ_SIZE)
            if not chunk:
                raise ConnectionError("MLLP connection closed before the reply")
            if replies := decoder.feed(chunk):
                return replies[0]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
