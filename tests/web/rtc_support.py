"""Shared by the video tests: a coturn that can die and come back on the same port, a live server
whose ICE configuration points at it, and the getStats() scripts run in the page."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

from tests.conftest import live_env
from tests.services import Coturn, HuizhenProcess, _udp_listening, wait_until


class RestartableCoturn(Coturn):
    """coturn that the test can kill (SIGKILL: no goodbye to anyone) and start again on the same
    port, as when the TURN host reboots."""

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        wait_until(lambda: not _udp_listening(self.port), 10, "coturn gone")

    def restart(self) -> None:
        config = self.directory / "turnserver.conf"
        self.process = subprocess.Popen(
            ["turnserver", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _udp_listening(self.port), 10, "coturn")


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, lossy: LossyUdp, client: tuple[str, int]) -> None:
        self.lossy, self.client = lossy, client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.lossy.deliver(data, self.client)


class LossyUdp(asyncio.DatagramProtocol):
    """A UDP forwarder in front of coturn that drops a share of the datagrams both ways, as a
    poor mobile or rural link does: each client gets its own upstream socket (coturn sees
    distinct clients); ``loss`` can change while packets flow."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.loss = 0.0
        self.random = random.Random(4)
        self.upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self.opening: dict[tuple[str, int], list[bytes]] = {}
        self.tasks: set[asyncio.Future[None]] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.upstreams.get(addr)
        if upstream is not None:
            if not self._dropped():
                upstream.sendto(data)
        elif addr in self.opening:
            self.opening[addr].append(data)
        else:
            self.opening[addr] = [data]
            task = asyncio.ensure_future(self._open(addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self, client: tuple[str, int]) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Upstream(self, client), remote_addr=self.target
        )
        self.upstreams[client] = transport
        for data in self.opening.pop(client):
            transport.sendto(data)

    def deliver(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None and not self._dropped():
            self.transport.sendto(data, client)

    def _dropped(self) -> bool:
        return self.loss > 0 and self.random.random() < self.loss

    @property
    def url(self) -> str:
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        return f"turn:127.0.0.1:{port}?transport=udp"

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()
        if self.transport is not None:
            self.transport.close()


@asynccontextmanager
async def lossy_udp(port: int) -> AsyncIterator[LossyUdp]:
    _, proxy = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: LossyUdp(("127.0.0.1", port)), local_addr=("127.0.0.1", 0)
    )
    try:
        yield proxy
    finally:
        proxy.close()


@contextmanager
def relay_server(
    tmp_path: Path,
    database_url: str,
    coturn: Coturn,
    *,
    secret: str | None = None,
    turn_url: str | None = None,
) -> Iterator[HuizhenProcess]:
    """``huizhen serve`` handing out TURN credentials for ``coturn`` (signed with ``secret``,
    coturn's own by default; reached at ``turn_url``, coturn's own by default) with relay-only
    ICE."""
    server = HuizhenProcess(
        env=live_env(
            tmp_path,
            database_url,
            HUIZHEN_TURN_URLS=turn_url or coturn.url,
            HUIZHEN_TURN_SECRET=coturn.secret if secret is None else secret,
            HUIZHEN_ICE_RELAY_ONLY="true",
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Resolves once the call's inbound video has decoded `wanted` frames more than `from` (getStats()
# every 200 ms in the page: there is no event for it); rejects after 45 s.
BROWSER_FRAMES = """async ([wanted, from]) => {
  const deadline = Date.now() + 45000
  for (;;) {
    const pc = window.__huizhenCall
    let decoded = 0
    if (pc) (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video')
        decoded = Math.max(decoded, r.framesDecoded ?? 0)
    })
    if (decoded >= from + wanted) return decoded
    if (Date.now() > deadline) {
      // What the page knows, for the report: is video sent, received, or switched off?
      let sent = 0, packets = 0
      if (pc) (await pc.getStats()).forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') sent = Math.max(sent, r.framesSent ?? 0)
        if (r.type === 'inbound-rtp' && r.kind === 'video') packets = Math.max(packets, r.packetsReceived ?? 0)
      })
      const mode = document.querySelector('[data-testid="call-mode"]')?.getAttribute('data-mode')
      throw new Error(`only ${decoded - from} new frames decoded (ICE ${pc?.iceConnectionState}, ` +
        `video packets received ${packets}, frames sent ${sent}, mode ${mode})`)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}"""

# The frames decoded so far (0 without a call).
FRAMES_NOW = """async () => {
  const pc = window.__huizhenCall
  let decoded = 0
  if (pc) (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video')
      decoded = Math.max(decoded, r.framesDecoded ?? 0)
  })
  return decoded
}"""

# The selected candidate pair's local and remote candidate types, e.g. ["relay", "relay"].
SELECTED_PAIR = """async () => {
  const stats = await window.__huizhenCall.getStats()
  let pairId = null
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId
  })
  const pair = pairId ? stats.get(pairId) : null
  if (!pair) return null
  const local = stats.get(pair.localCandidateId)
  const remote = stats.get(pair.remoteCandidateId)
  return [local.candidateType, remote.candidateType]
}"""

# Waits for the call's ICE connection state to be one of `states`; returns it.
ICE_STATE = """async (states) => {
  const deadline = Date.now() + 60000
  for (;;) {
    const pc = window.__huizhenCall
    if (pc && states.includes(pc.iceConnectionState)) return pc.iceConnectionState
    if (Date.now() > deadline) throw new Error(`ICE still ${pc ? pc.iceConnectionState : 'absent'}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}"""

# Mesh calls: resolves once every pair's inbound video (window.__huizhenPairs, by user id) has
# decoded more than `wanted` frames, and there are `pairs` of them; returns {user id: frames}.
# Rejects after 60 s.
MESH_FRAMES = """async ([wanted, pairs]) => {
  const deadline = Date.now() + 60000
  for (;;) {
    const all = window.__huizhenPairs ?? {}
    const decoded = {}
    for (const [user, pc] of Object.entries(all)) {
      let n = 0
      ;(await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') n = Math.max(n, r.framesDecoded ?? 0)
      })
      decoded[user] = n
    }
    const counts = Object.values(decoded)
    if (counts.length === pairs && counts.every((n) => n > wanted)) return decoded
    if (Date.now() > deadline) throw new Error(`frames per pair: ${JSON.stringify(decoded)}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}"""
