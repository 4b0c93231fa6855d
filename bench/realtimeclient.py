"""Light socket.io clients for ``bench.realtime``, run in their own processes.

Each client is one aiohttp WebSocket speaking the Engine.IO 4 / Socket.IO 5 text protocol by hand
(open, namespace connect with auth, ping/pong, events and acks), so that a thousand of them cost
the client process little next to the server under test. python-socketio's own client would
spend several times the server's CPU on its side.

A process reads a JSON configuration from the file named on its command line, connects its
clients, prints ``ready`` and waits for commands on stdin, one a line:

* ``go <seconds> <warmup>``: (relay) the senders send for warmup + seconds; latencies measured in
  the last ``seconds`` are kept;
* ``report``: print the results as one JSON line, and forget them;
* ``stop``: close every client and exit.

Modes: ``relay`` (pairs that signal to each other, plus idle clients), ``idle`` (clients that
connect and stay), ``fanout`` (clients that note when each event reached them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import resource
import sys
import time
from typing import Any

import aiohttp

#: A trickled ICE candidate as a browser sends it (about 300 bytes on the wire with the rest).
CANDIDATE = (
    "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.12.0.5 "
    "rport 46154 generation 0 ufrag EsAw network-id 1 network-cost 10"
)


class Socket:
    """One Socket.IO connection over a raw WebSocket."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.handlers: dict[str, Any] = {}
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.next_ack = itertools.count(1)
        self.reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self, auth: dict[str, Any] | None) -> None:
        self.ws = await self.session.ws_connect(self.url, autoping=True, max_msg_size=0)
        opened = await self.ws.receive_str()
        if not opened.startswith("0"):
            raise RuntimeError(f"no engine.io open packet: {opened[:80]}")
        await self.ws.send_str("40" + (json.dumps(auth) if auth else ""))
        while True:
            answer = await self.ws.receive_str()
            if answer == "2":
                await self.ws.send_str("3")
                continue
            if answer.startswith("42"):  # an event (presence) may come before the answer
                continue
            break
        if not answer.startswith("40"):
            raise RuntimeError(f"connection refused: {answer[:200]}")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data: str = msg.data
                if data == "2":
                    await self.ws.send_str("3")
                elif data.startswith("42"):
                    body = data[2:]
                    start = body.index("[")
                    event, *args = json.loads(body[start:])
                    handler = self.handlers.get(event)
                    if handler is not None:
                        handler(*args)
                elif data.startswith("43"):
                    body = data[2:]
                    start = body.index("[")
                    future = self.acks.pop(int(body[:start]), None)
                    if future is not None and not future.done():
                        args = json.loads(body[start:])
                        future.set_result(args[0] if args else None)
        finally:
            self.closed.set()

    def emit(self, event: str, data: Any, ack: bool = False) -> asyncio.Future[Any] | None:
        """Send an event; with ``ack``, a future for the server's answer."""
        assert self.ws is not None
        future: asyncio.Future[Any] | None = None
        if ack:
            n = next(self.next_ack)
            future = asyncio.get_running_loop().create_future()
            self.acks[n] = future
            packet = f"42{n}" + json.dumps([event, data], separators=(",", ":"))
        else:
            packet = "42" + json.dumps([event, data], separators=(",", ":"))
        task = asyncio.ensure_future(self.ws.send_str(packet))
        task.add_done_callback(_ignore)
        return future

    async def call(self, event: str, data: Any) -> Any:
        future = self.emit(event, data, ack=True)
        assert future is not None
        async with asyncio.timeout(60):
            return await future

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


def _ignore(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class Client:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.flavour: str = cfg["flavour"]  # "huizhen" or "bare"
        self.sockets: list[Socket] = []
        self.latencies: list[float] = []
        self.sent_at: dict[int, float] = {}
        self.seq = itertools.count(1)
        self.measuring_from = float("inf")
        self.sent = 0
        self.received = 0
        self.ack_errors: list[Any] = []
        self.arrivals: dict[str, list[float]] = {}
        self.connect_errors = 0

    async def open(self, session: aiohttp.ClientSession, url: str, token: str | None) -> Socket:
        sock = Socket(session, url)
        auth = {"token": token} if token else None
        await sock.connect(auth)
        self.sockets.append(sock)
        if self.flavour == "huizhen":
            answer = await sock.call("sync", {"after": self.cfg.get("after", 0)})
            if "last_id" not in answer:
                raise RuntimeError(f"sync failed: {answer}")
        else:
            answer = await sock.call("join", {"room": self.cfg.get("room", "all")})
        return sock

    # -- relay --------------------------------------------------------------------------------

    def on_signal(self, message: dict[str, Any]) -> None:
        mid = (message.get("candidate") or {}).get("sdpMid")
        if not isinstance(mid, str) or not mid.startswith("m"):
            return
        sent = self.sent_at.pop(int(mid[1:]), None)
        if sent is None:
            return
        self.received += 1
        now = time.perf_counter()
        if sent >= self.measuring_from:
            self.latencies.append((now - sent) * 1000)

    async def join_pair(self, session: aiohttp.ClientSession, pair: dict[str, Any]) -> list[Socket]:
        sides = []
        for side in ("a", "b"):
            sock = await self.open(session, pair["url"], pair[f"{side}_token"])
            sock.handlers["call.signal"] = self.on_signal
            if self.flavour == "huizhen":
                answer = await sock.call("call.join", {"call_id": pair["call_id"]})
            else:
                answer = await sock.call("join", {"room": pair["call_id"]})
            if isinstance(answer, dict) and "error" in answer:
                raise RuntimeError(f"join refused: {answer}")
            sides.append(sock)
        return sides

    async def sender(self, sock: Socket, call_id: str, to: str, until: float) -> None:
        rate: float = self.cfg["rate"]
        next_at = time.perf_counter() + random.random() / rate  # a random phase
        while next_at < until:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            seq = next(self.seq)
            now = time.perf_counter()
            self.sent_at[seq] = now
            message = {
                "call_id": call_id,
                "kind": "ice",
                "to": to,
                "candidate": {"candidate": CANDIDATE, "sdpMid": f"m{seq}", "sdpMLineIndex": 0},
            }
            future = self.emit_signal(sock, message)
            future.add_done_callback(self._acked)
            self.sent += 1
            next_at += 1 / rate

    def emit_signal(self, sock: Socket, message: dict[str, Any]) -> asyncio.Future[Any]:
        future = sock.emit("call.signal", message, ack=True)
        assert future is not None
        return future

    def _acked(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        answer = future.result()
        if not (isinstance(answer, dict) and answer.get("relayed") is True):
            self.ack_errors.append(answer)


async def run(cfg: dict[str, Any]) -> None:
    client = Client(cfg)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gate = asyncio.Semaphore(cfg.get("concurrency", 50))
    pairs: list[tuple[list[Socket], dict[str, Any]]] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def idle(url: str, token: str | None) -> None:
            async with gate:
                try:
                    sock = await client.open(session, url, token)
                except Exception as exc:
                    client.connect_errors += 1
                    if client.connect_errors <= 3:
                        sys.stderr.write(f"connect failed: {exc!r}\n")
                    return
                if cfg["mode"] == "fanout":
                    sock.handlers["event"] = lambda event: client.arrivals.setdefault(
                        str(event.get("consult_id") or event.get("note")), []
                    ).append(time.monotonic())

        async def pair(p: dict[str, Any]) -> None:
            async with gate:
                pairs.append((await client.join_pair(session, p), p))

        started = time.monotonic()
        await asyncio.gather(
            *(pair(p) for p in cfg.get("pairs", [])),
            *(idle(c["url"], c.get("token")) for c in cfg.get("idle", [])),
        )
        # The clients are not under test: their own collections would show up as latency.
        gc.collect()
        gc.freeze()
        gc.disable()
        say(
            {
                "ready": len(client.sockets),
                "errors": client.connect_errors,
                "connect_s": time.monotonic() - started,
            }
        )
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "stop":
                break
            if line[0] == "go":
                seconds, warmup = float(line[1]), float(line[2])
                now = time.perf_counter()
                client.measuring_from = now + warmup
                until = now + warmup + seconds
                usage = resource.getrusage(resource.RUSAGE_SELF)
                senders = []
                for (a, b), p in pairs:
                    senders.append(client.sender(a, p["call_id"], p["b_user"], until))
                    senders.append(client.sender(b, p["call_id"], p["a_user"], until))
                await asyncio.gather(*senders)
                await asyncio.sleep(1.0)  # the last messages in flight
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
                say({"done": True, "cpu_s": cpu})
            elif line[0] == "report":
                say(
                    {
                        "latencies_ms": client.latencies,
                        "sent": client.sent,
                        "received": client.received,
                        "lost": len(client.sent_at),
                        "ack_errors": client.ack_errors[:5],
                        "ack_error_count": len(client.ack_errors),
                        "arrivals": client.arrivals,
                        "open": sum(1 for s in client.sockets if not s.closed.is_set()),
                    }
                )
                client.latencies, client.arrivals, client.ack_errors = [], {}, []
                client.sent = client.received = 0
                client.sent_at.clear()
        await asyncio.gather(*(s.close() for s in client.sockets), return_exceptions=True)


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as fh:
        cfg = json.load(fh)
    asyncio.run(run(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
