"""A headless call participant: socket.io signalling plus an aiortc peer connection.

For station equipment that is not a browser (a cart with a camera, a recorder) and for tests.
It signs in over HTTP, joins a call, answers an offer (or makes one), trickles nothing (aiortc puts
its candidates in the SDP) but accepts trickled candidates, sends a video track, and counts or
records what it receives. An offer from a third member of the call (the recorder) is answered on
a side connection that sends the same kind of track.

``CallRecorder`` is the server's recording participant: it offers a receive-only connection to
each other member and writes every track it gets into one file (``signalling.media.FileRecorder``:
fragmented MP4 with H.264 and AAC), until its feed says the call ended or a participant stopped
the recording; then it tells the members it hung up.
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
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcicetransport import candidate_from_aioice

from signalling.media import FileRecorder

log = logging.getLogger(__name__)


@dataclass
class Received:
    video_frames: int = 0
    audio_frames: int = 0
    messages: list[str] = field(default_factory=list)


def configuration(rtc: dict[str, Any]) -> RTCConfiguration:
    """``RTCConfiguration`` from the server's ``/api/v1/rtc/ice-servers`` answer."""
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in rtc["ice_servers"]
    ]
    policy = (
        RTCIceTransportPolicy.RELAY
        if rtc.get("ice_transport_policy") == "relay"
        else RTCIceTransportPolicy.ALL
    )
    # An explicit configuration: with none, aiortc adds a public STUN server.
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def trickled(candidate: dict[str, Any] | None) -> RTCIceCandidate | None:
    """A candidate trickled by a browser (``None``, or an empty one, ends them)."""
    if candidate is None or not candidate.get("candidate"):
        return None
    parsed = candidate_from_aioice(
        Candidate.from_sdp(str(candidate["candidate"]).removeprefix("candidate:"))
    )
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    return parsed


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
        self.config = RTCConfiguration(iceServers=[])
        #: The member our main connection talks to, once known.
        self.remote: str | None = None
        #: Side connections, by the member who offered them (the recorder).
        self.sides: dict[str, RTCPeerConnection] = {}
        self.sio.on("call.signal", self._route)

    async def _route(self, message: dict[str, Any]) -> None:
        sender, kind = message.get("from"), message.get("kind")
        if isinstance(sender, str) and (
            sender in self.sides or (kind == "offer" and self.remote and sender != self.remote)
        ):
            self._tasks.append(asyncio.create_task(self._side(sender, message)))
        elif kind == "hangup" and self.remote and sender != self.remote:
            return  # a member we have no connection with (a recorder that stopped early)
        else:
            await self.signals.put(message)

    async def _side(self, sender: str, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        side = self.sides.get(sender)
        if kind == "hangup" and side is not None:
            del self.sides[sender]
            await side.close()
        elif kind == "offer" and side is None:
            side = self.sides[sender] = RTCPeerConnection(self.config)
            await side.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
            side.addTrack(VideoStreamTrack())
            await side.setLocalDescription(await side.createAnswer())
            call_id = str(message["call_id"])
            await self._send(call_id, "answer", sender, sdp=side.localDescription.sdp)

    # -- HTTP -------------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated JSON request to the server; raises on an error status."""
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base_url + path, json=body, headers=self._auth()) as resp,
        ):
            answer = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer.get('detail', '')}")
            return answer

    async def fetch(self, path: str) -> bytes:
        """One authenticated download (an attachment, a report's PDF); raises on an error
        status."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base_url + path, headers=self._auth()) as resp,
        ):
            if resp.status >= 400:
                raise RuntimeError(f"GET {path}: {resp.status}")
            return await resp.read()

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
        if self.pc is None:
            self.config = configuration(await self.api("GET", "/api/v1/rtc/ice-servers"))
            self.pc = RTCPeerConnection(self.config)
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
                self.remote = message.get("from")
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
                self.remote = message.get("from")
                await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
                self._tasks.append(asyncio.create_task(self._apply_candidates()))
                return

    async def _apply_candidates(self) -> None:
        assert self.pc is not None
        while True:
            message = await self.signals.get()
            if message["kind"] != "ice":
                continue
            await self.pc.addIceCandidate(trickled(message.get("candidate")))

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
        for side in self.sides.values():
            await side.close()
        if self.sio.connected:
            await self.sio.disconnect()


#: Events on the recorder's feed that end its recording (for its own call).
FINISHING = frozenset({"call.ended", "call.timed_out", "call.recording_stopped"})


class CallRecorder(HeadlessPeer):
    """The server's recording participant (signed in with a token the server gives it)."""

    def __init__(self, base_url: str, token: str, rtc: dict[str, Any], *, after: int = 0) -> None:
        super().__init__(base_url)
        self.token = token
        #: Its feed is read from after this event id (the server's latest when it started it).
        self.after = after
        #: The server hands the recorder its ICE configuration (it may not call the API).
        self.config = configuration(rtc)
        self.connections: dict[str, RTCPeerConnection] = {}
        self.tracks: dict[str, list[MediaStreamTrack]] = {}
        self._answers: dict[str, asyncio.Future[str]] = {}
        #: Trickled candidates per member, kept until its answer is applied.
        self._ice: dict[str, list[dict[str, Any] | None]] = {}
        self._described: set[str] = set()
        self.recorder: FileRecorder | None = None
        #: Set when the feed says the call ended or a participant stopped the recording.
        self.finished = asyncio.Event()
        self._call_id = ""
        self.sio.on("event", self._event)

    async def _event(self, event: Any) -> None:
        if (
            isinstance(event, dict)
            and event.get("type") in FINISHING
            and isinstance(event.get("payload"), dict)
            and event["payload"].get("call_id") == self._call_id
        ):
            self.finished.set()

    async def _route(self, message: dict[str, Any]) -> None:
        sender, kind = message.get("from"), message.get("kind")
        if not isinstance(sender, str) or sender not in self.connections:
            return  # the members' own negotiation, relayed to the whole call
        if kind == "answer" and sender in self._answers and not self._answers[sender].done():
            self._answers[sender].set_result(str(message["sdp"]))
        elif kind == "ice":
            self._ice.setdefault(sender, []).append(message.get("candidate"))
            if sender in self._described:
                await self._add_ice(sender)
        elif kind == "hangup":
            self.signals.put_nowait(message)

    async def _add_ice(self, member: str) -> None:
        """Candidates the member trickled, once its answer is applied."""
        for candidate in self._ice.pop(member, []):
            with contextlib.suppress(Exception):  # one aioice cannot use
                await self.connections[member].addIceCandidate(trickled(candidate))

    async def join_call(self, call_id: str, within: float = 15) -> None:
        """Join, retrying while the server has not yet committed our membership."""
        async with asyncio.timeout(within):
            while True:
                try:
                    if not self.sio.connected:
                        await self.sio.connect(
                            self.base_url,
                            auth={"token": self.token},
                            transports=["websocket"],
                            wait_timeout=10,
                        )
                    answer = await self.sio.call("call.join", {"call_id": call_id}, timeout=10)
                    if "error" in answer:
                        raise RuntimeError(answer["error"]["message"])
                    # The feed from when the recording started: the end of this call or a stop
                    # that came before we got here is replayed now, later ones arrive live.
                    self._call_id = call_id
                    await self.sio.call("sync", {"after": self.after}, timeout=10)
                    return
                except RuntimeError:
                    if self.sio.connected:
                        await self.sio.disconnect()
                    await asyncio.sleep(0.5)

    async def connect_member(self, call_id: str, member: str) -> None:
        """A receive-only connection to one member: our offer, their answer, their tracks."""
        pc = self.connections[member] = RTCPeerConnection(self.config)
        self.tracks[member] = []
        got_tracks = asyncio.Event()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks[member].append(track)
            got_tracks.set()

        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        self._answers[member] = asyncio.get_running_loop().create_future()
        await pc.setLocalDescription(await pc.createOffer())
        await self._send(call_id, "offer", member, sdp=pc.localDescription.sdp)
        answer = await self._answers[member]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self._described.add(member)
        await self._add_ice(member)
        await got_tracks.wait()

    async def start_recording(self, path: str) -> int:
        """Write every received track into ``path`` once media flows; returns the track count.

        Waits for a first frame on each track (a track that never delivers is left out). If it
        is cancelled meanwhile (stopped before media flowed), nothing is written."""
        recorder = FileRecorder(path)
        try:
            for member, tracks in self.tracks.items():
                for track in tracks:
                    try:
                        first = await asyncio.wait_for(track.recv(), 10)
                    except Exception:
                        log.warning("recorder: no %s from member %s; left out", track.kind, member)
                        continue
                    recorder.add(track, first)
        except BaseException:
            recorder.close()
            raise
        if recorder.entries:
            recorder.start()
            self.recorder = recorder
        else:
            recorder.close()
        return len(recorder.entries)

    async def stop(self) -> None:
        """Finish the file, then leave: the members drop their side connections to us."""
        if self.recorder is not None:
            await self.recorder.stop()
            self.recorder = None
        for pc in self.connections.values():
            await pc.close()
        if self._call_id and self.sio.connected:
            with contextlib.suppress(Exception):
                await self.sio.call(
                    "call.signal", {"call_id": self._call_id, "kind": "hangup"}, timeout=5
                )
