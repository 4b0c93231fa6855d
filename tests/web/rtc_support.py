"""Shared by the video tests: a coturn that can die and come back on the same port, a live server
whose ICE configuration points at it, and the getStats() scripts run in the page."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import SECRET
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


@contextmanager
def relay_server(
    tmp_path: Path, database_url: str, coturn: Coturn, *, secret: str | None = None
) -> Iterator[HuizhenProcess]:
    """``huizhen serve`` handing out TURN credentials for ``coturn`` (signed with ``secret``,
    coturn's own by default) with relay-only ICE."""
    server = HuizhenProcess(
        env={
            "HUIZHEN_DATA_DIR": str(tmp_path / "live"),
            "HUIZHEN_DATABASE_URL": database_url,
            "HUIZHEN_SECRET_KEY": SECRET,
            "HUIZHEN_LOG_LEVEL": "WARNING",
            "HUIZHEN_TURN_URLS": coturn.url,
            "HUIZHEN_TURN_SECRET": coturn.secret if secret is None else secret,
            "HUIZHEN_ICE_RELAY_ONLY": "true",
        }
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
    if (Date.now() > deadline) throw new Error(`only ${decoded - from} new frames decoded`)
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
