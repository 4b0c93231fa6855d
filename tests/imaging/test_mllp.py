"""MLLP: real sockets on 127.0.0.1, frames split and joined, NAKs, idle and oversize closing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from imaging.hl7v2 import parse_oru
from imaging.lab import LabMessage
from imaging.mllp import (
    END_BLOCK,
    START_BLOCK,
    FrameDecoder,
    FrameTooLarge,
    MllpServer,
    frame,
    oru_handler,
    send_mllp,
    serve_mllp,
)
from tests.imaging.labmessages import ORU_GB18030, ORU_UTF8, oru

LOCALHOST = "127.0.0.1"
LIMIT = 10.0  # a safety net for a hung test, never what is asserted
K = ORU_UTF8.encode("utf-8")
CBC = ORU_GB18030
FAIL_ID = "FAIL-ME"


class Lab:
    """What the server was handed: the accept callback of :func:`oru_handler`."""

    def __init__(self) -> None:
        self.messages: list[LabMessage] = []

    async def accept(self, message: LabMessage) -> None:
        if message.control_id == FAIL_ID:
            raise RuntimeError("the database is down")
        self.messages.append(message)


@pytest.fixture
def lab() -> Lab:
    return Lab()


@pytest.fixture
async def server(lab: Lab) -> AsyncIterator[MllpServer]:
    async with await serve_mllp(
        oru_handler(lab.accept), LOCALHOST, 0, max_message_bytes=len(K) + 100
    ) as srv:
        yield srv


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.replies: list[bytes] = []
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small writes go out alone

    @classmethod
    async def open(cls, server: MllpServer) -> Connection:
        return cls(*await asyncio.open_connection(LOCALHOST, server.port))

    async def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def reply(self) -> bytes:
        async with asyncio.timeout(LIMIT):
            while not self.replies:
                chunk = await self.reader.read(4096)
                if not chunk:
                    raise ConnectionError("closed")
                self.replies += self.decoder.feed(chunk)
        return self.replies.pop(0)

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(LIMIT):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


Connect = Callable[[MllpServer], Awaitable[Connection]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open client connections; all are closed after the test."""
    opened: list[Connection] = []

    async def open_one(server: MllpServer) -> Connection:
        opened.append(await Connection.open(server))
        return opened[-1]

    yield open_one
    for conn in opened:
        await conn.close()


def msa(reply: bytes, charset: str = "utf-8") -> list[str]:
    segments = {s[:3]: s for s in reply.decode(charset).split("\r")}
    return segments["MSA"].split("|")


def err(reply: bytes) -> list[str]:
    segments = {s[:3]: s for s in reply.decode().split("\r")}
    return segments["ERR"].split("|")


async def test_send_and_acknowledge(server: MllpServer, lab: Lab) -> None:
    async with asyncio.timeout(LIMIT):
        reply = await send_mllp(LOCALHOST, server.port, ORU_UTF8)
    assert msa(reply)[:3] == ["MSA", "AA", "LAB20240315000123"]
    assert lab.messages == [parse_oru(K)]
    assert lab.messages[0].critical


async def test_gb18030_acknowledged_in_gb18030(server: MllpServer, lab: Lab) -> None:
    async with asyncio.timeout(LIMIT):
        reply = await send_mllp(LOCALHOST, server.port, CBC)
    # split after decoding: 東 in MSH-6 ends with the byte of '|'
    assert reply.decode("gb18030").split("\r")[0].split("|")[17] == "GB 18030-2000"
    assert msa(reply, "gb18030")[:3] == ["MSA", "AA", "LAB20240316000007"]
    assert lab.messages[0].patient_name == "李億"


async def test_split_frames_and_two_messages_per_connection(
    server: MllpServer, lab: Lab, connect: Connect
) -> None:
    conn = await connect(server)
    whole = frame(CBC)
    cut = CBC.index("李".encode("gb18030")) + 1  # inside a two-byte character
    # The start block alone, the message cut inside a character, the end block cut in two.
    await conn.send(START_BLOCK, CBC[:cut], CBC[cut:] + END_BLOCK[:1], END_BLOCK[1:])
    assert msa(await conn.reply(), "gb18030")[2] == "LAB20240316000007"
    # Two messages in one write, and the second's end in the next.
    both = frame(K) + whole
    await conn.send(both[:-1], both[-1:])
    assert msa(await conn.reply())[2] == "LAB20240315000123"
    assert msa(await conn.reply(), "gb18030")[2] == "LAB20240316000007"
    assert [m.control_id for m in lab.messages] == [
        "LAB20240316000007",
        "LAB20240315000123",
        "LAB20240316000007",
    ]
    assert lab.messages[0] == lab.messages[2] == parse_oru(CBC)


async def test_garbage_before_the_start_block_is_skipped(
    server: MllpServer, lab: Lab, connect: Connect
) -> None:
    conn = await connect(server)
    await conn.send(b"GET / HTTP/1.1\r\nHost: lis\r\n\r\n", b"\x1c\r\x00junk" + frame(K))
    assert msa(await conn.reply())[1] == "AA"
    assert len(lab.messages) == 1


async def test_bad_message_is_nacked_and_the_connection_stays(
    server: MllpServer, lab: Lab, connect: Connect
) -> None:
    conn = await connect(server)
    bad = oru("OBR|1|C1|F1|K^钾", "OBX|1|NM|K^钾||6,8").encode()
    await conn.send(frame(bad))
    reply = await conn.reply()
    assert msa(reply)[:3] == ["MSA", "AE", "C1"]
    assert err(reply)[2:4] == ["OBX^3^5", "102^Data type error^HL70357"]
    await conn.send(frame(b"not hl7 at all"))
    assert msa(await conn.reply())[1] == "AR"
    await conn.send(frame(K))
    assert msa(await conn.reply())[1] == "AA"
    assert [m.control_id for m in lab.messages] == ["LAB20240315000123"]


async def test_failing_handler_gets_a_nak_to_retry(
    server: MllpServer, lab: Lab, connect: Connect
) -> None:
    conn = await connect(server)
    await conn.send(frame(ORU_UTF8.replace("LAB20240315000123", FAIL_ID).encode()))
    assert msa(await conn.reply())[:3] == ["MSA", "AR", FAIL_ID]
    await conn.send(frame(K))
    assert msa(await conn.reply())[1] == "AA"
    assert len(lab.messages) == 1


async def test_oversize_is_nacked_and_closed(
    server: MllpServer, lab: Lab, connect: Connect
) -> None:
    conn = await connect(server)
    big = ORU_UTF8.replace("LAB20240315000123", "BIG-1") + "\rNTE|1||" + "长" * 200
    await conn.send(START_BLOCK + big.encode())  # no end block: the cap is enough to refuse
    reply = await conn.reply()
    assert msa(reply)[:3] == ["MSA", "AR", "BIG-1"]
    assert err(reply)[3].startswith("207^")
    assert await conn.closed_by_server()
    assert lab.messages == []


async def test_idle_connection_is_closed(lab: Lab, connect: Connect) -> None:
    async with await serve_mllp(
        oru_handler(lab.accept), LOCALHOST, 0, max_message_bytes=1 << 16, idle_timeout=0.05
    ) as srv:
        conn = await connect(srv)
        assert await conn.closed_by_server()
        assert lab.messages == []


async def test_closing_the_server_closes_connections(lab: Lab, connect: Connect) -> None:
    srv = await serve_mllp(oru_handler(lab.accept), LOCALHOST, 0, max_message_bytes=1 << 16)
    conn = await connect(srv)
    await conn.send(frame(K))
    assert msa(await conn.reply())[1] == "AA"
    srv.close()
    async with asyncio.timeout(LIMIT):
        await srv.wait_closed()
    assert not srv.is_serving()
    assert await conn.closed_by_server()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(LOCALHOST, srv.port)


async def test_connection_cap(lab: Lab, connect: Connect) -> None:
    async with await serve_mllp(
        oru_handler(lab.accept), LOCALHOST, 0, max_message_bytes=1 << 16, max_connections=1
    ) as srv:
        first = await connect(srv)
        await first.send(frame(K))
        assert msa(await first.reply())[1] == "AA"
        second = await connect(srv)
        assert await second.closed_by_server()


# -- framing without sockets --------------------------------------------------------------------


def test_every_split_point_gives_the_same_frames() -> None:
    stream = b"noise" + frame(b"MSH|one") + b"\r\n" + frame(CBC) + frame(b"MSH|three")
    expected = [b"MSH|one", CBC, b"MSH|three"]
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected
    decoder = FrameDecoder()
    assert [m for byte in stream for m in decoder.feed(bytes([byte]))] == expected
    assert not decoder.pending


def test_a_new_start_block_drops_the_unfinished_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(START_BLOCK + b"MSH|cut short") == []
    assert decoder.pending
    assert decoder.feed(frame(b"MSH|again")) == [b"MSH|again"]
    assert decoder.skipped == len(b"MSH|cut short") + 1


def test_frame_size_cap() -> None:
    assert FrameDecoder(10).feed(frame(b"x" * 10)) == [b"x" * 10]
    decoder = FrameDecoder(10)
    assert decoder.feed(START_BLOCK + b"x" * 10 + END_BLOCK[:1]) == []  # could still end here
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"y")
    with pytest.raises(FrameTooLarge) as caught:
        FrameDecoder(10).feed(frame(b"MSH|" + b"x" * 7))
    assert caught.value.head.startswith(b"MSH|")
