"""A headless call participant: socket.io signalling plus an aiortc peer connection.

For station equipment that is not a browser (a cart with a camera, a recorder) and for tests.
It signs in over HTTP, joins a call, answers an offer (or makes one), trickles nothing (aiortc puts
its candidates in the SDP) but accepts trickled candidates, sends a video track, and counts or
records what it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio
from aioice import Candidate
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcicetransport import candidate_from_aioice

log = logging.getLogger(__name__)


@dataclass
class Received:
    video_frames: int = 0
    audio_frames: int = 0
    messages: list[str] = field(default_factory=list)


class HeadlessPeer:
    def __init__(
        self, base_url: str, *, on_track: Callable[[MediaStreamTrack], None] | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = ""
        self.user_id = ""
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pc: RTCPeerConnection | None = None
        self.received = Received()
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.on_track = on_track
        self._tasks: list[asyncio.Task[None]] = []
        self._frame = asyncio.Event()
        self.sio.on("call.signal", self.signals.put)

    # -- HTTP -------------------------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated JSON request to the server; raises on an error status."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base_url + path, json=body, headers=headers) as resp,
        ):
            answer = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer.get('detail', '')}")
            return answer

    async def sign_in(self, username: str, password: str) -> None:
        answer = await self.api(
            "POST", "/api/v1/auth/login", {"username": username, "password": password}
        )
        self.token = answer["token"]
        self.user_id = answer["user"]["id"]

    async def accept(self, call_id: str) -> None:
        await self.api("POST", f"/api/v1/calls/{call_id}/accept")

    async def report_connected(self, call_id: str) -> None:
        await self.api("POST", f"/api/v1/calls/{call_id}/connected")

    async def hang_up(self, call_id: str) -> None:
        with contextlib.suppress(RuntimeError):
            await self.sio.emit("call.signal", {"call_id": call_id, "kind": "hangup"})
            await self.api("POST", f"/api/v1/calls/{call_id}/hangup")

    # -- signalling and media ---------------------------------------------------------------------

    async def join(self, call_id: str) -> None:
        if not self.sio.connected:
            await self.sio.connect(
                self.base_url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10
            )
        answer = await self.sio.call("call.join", {"call_id": call_id}, timeout=10)
        if "error" in answer:
            raise RuntimeError(f"cannot join the call: {answer['error']['message']}")
        config = await self.api("GET", "/api/v1/rtc/ice-servers")
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in config["ice_servers"]
        ]
        policy = (
            RTCIceTransportPolicy.RELAY
            if config.get("ice_transport_policy") == "relay"
            else RTCIceTransportPolicy.ALL
        )
        # An explicit configuration: with none, aiortc adds a public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))
        self.pc.addTrack(VideoStreamTrack())
        self.pc.on("track", self._track)
        self.pc.on("datachannel", self._datachannel)

    def _track(self, track: MediaStreamTrack) -> None:
        if self.on_track is not None:
            self.on_track(track)
        self._tasks.append(asyncio.create_task(self._count(track)))

    async def _count(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                if track.kind == "video":
                    self.received.video_frames += 1
                    self._frame.set()
                else:
                    self.received.audio_frames += 1

    async def frames(self, count: int) -> None:
        """Return once ``count`` video frames have arrived (bound it with asyncio.timeout)."""
        while self.received.video_frames < count:
            self._frame.clear()
            await self._frame.wait()

    def _datachannel(self, channel: Any) -> None:
        channel.on("message", lambda message: self.received.messages.append(str(message)))

    async def offer(self, call_id: str, to: str | None = None) -> None:
        assert self.pc is not None
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send(call_id, "offer", to, sdp=self.pc.localDescription.sdp)

    async def answer_next_offer(self, call_id: str, within: float = 30) -> None:
        """Wait for an offer, answer it; apply trickled candidates that come along."""
        assert self.pc is not None
        while True:
            message = await asyncio.wait_for(self.signals.get(), within)
            if message["kind"] == "offer":
                await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self._send(
                    call_id, "answer", message["from"], sdp=self.pc.localDescription.sdp
                )
                self._tasks.append(asyncio.create_task(self._apply_candidates()))
                return
            if message["kind"] == "hangup":
                raise RuntimeError("the other side hung up")

    async def accept_answer(self, within: float = 30) -> None:
        assert self.pc is not None
        while True:
            message = await asyncio.wait_for(self.signals.get(), within)
            if message["kind"] == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
                self._tasks.append(asyncio.create_task(self._apply_candidates()))
                return

    async def _apply_candidates(self) -> None:
        assert self.pc is not None
        while True:
            message = await self.signals.get()
            if message["kind"] != "ice":
                continue
            candidate = message.get("candidate")
            if candidate is None or not candidate.get("candidate"):
                await self.pc.addIceCandidate(None)
                continue
            parsed = candidate_from_aioice(
                Candidate.from_sdp(candidate["candidate"].removeprefix("candidate:"))
            )
            parsed.sdpMid = candidate.get("sdpMid")
            parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await self.pc.addIceCandidate(parsed)

    async def _send(self, call_id: str, kind: str, to: str | None, **body: Any) -> None:
        answer = await self.sio.call(
            "call.signal", {"call_id": call_id, "kind": kind, "to": to, **body}, timeout=10
        )
        if "error" in answer:
            raise RuntimeError(f"signal refused: {answer['error']['message']}")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self.sio.connected:
            await self.sio.disconnect()
