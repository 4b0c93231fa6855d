"""A video consultation between real Chromium and an aiortc peer, signalled through the server.

城关镇卫生院 (``chengguan``, in Chromium with the fake camera) calls the consultation centre's
specialist (``consult``), who has claimed the consult. The specialist is an aiortc peer in the
test: a socket.io client that hears the ring on the feed, joins the call, answers on REST and
answers the browser's offer (the browser trickles its ICE candidates; aiortc puts its own in its
SDP). Video frames arrive both ways: counted on the aiortc side by reading the received track,
and in the browser through ``getStats()`` on the call's RTCPeerConnection, which the page
exposes as ``window.__huizhenCall`` because it is opened with ``?debug``. The browser hangs up;
the peer hears the hang-up signal and the ``call.ended`` event.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from playwright.async_api import Browser, expect

from tests.helpers import DEMO_PASSWORD
from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

FRAMES = 10

# Resolves once the call's inbound video has decoded `wanted` frames (getStats() every 200 ms in
# the page: there is no event for it); rejects after 30 s. Without the debug hook: rejects at once.
BROWSER_FRAMES = """async (wanted) => {
  const deadline = Date.now() + 30000
  for (;;) {
    const pc = window.__huizhenCall
    if (!pc) throw new Error('no call exposed: open the page with ?debug')
    let decoded = 0
    ;(await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video')
        decoded = Math.max(decoded, r.framesDecoded ?? 0)
    })
    if (decoded >= wanted) return decoded
    if (Date.now() > deadline) throw new Error(`only ${decoded} frames decoded`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}"""


class Rest:
    """Bearer-token REST calls to the live server."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.tokens: dict[str, str] = {}

    async def login(self, username: str) -> str:
        async with self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}
        ) as resp:
            assert resp.status == 200
            token = str((await resp.json())["token"])
        self.tokens[username] = token
        return token

    async def call(self, method: str, path: str, username: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[username]}"}
        async with self.http.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.json()
            assert resp.status in (200, 201), body
            return body


class AiortcPeer:
    """The specialist: a socket.io client on the feed and an aiortc peer connection."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames = 0
        self.enough_frames = asyncio.Event()
        self.remote_candidates = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.sio.on("event", self.events.put)
        self.sio.on("call.signal", self.signals.put)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self.tasks.append(asyncio.create_task(self.count_frames(track)))

    async def connect(self) -> None:
        await self.sio.connect(
            self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10
        )
        answer = await self.sio.call("sync", {"after": 0}, timeout=10)
        assert "last_id" in answer

    async def next_event(self, consult_id: str, kind: str) -> dict[str, Any]:
        while True:
            event = await self.events.get()
            if event["consult_id"] == consult_id and event["type"] == kind:
                return event

    async def next_signal(self, kind: str) -> dict[str, Any]:
        while True:
            signal = await self.signals.get()
            if signal["kind"] == kind:
                return signal
            if signal["kind"] == "ice":
                await self.add_candidate(signal["candidate"])

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        parsed = candidate_from_sdp(str(candidate["candidate"]).removeprefix("candidate:"))
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(parsed)
        self.remote_candidates += 1

    async def trickle(self) -> None:
        """Candidates the browser sends after the offer."""
        while True:
            signal = await self.signals.get()
            if signal["kind"] == "ice":
                await self.add_candidate(signal["candidate"])
            else:
                await self.signals.put(signal)
                return

    async def count_frames(self, track: MediaStreamTrack) -> None:
        while True:
            await track.recv()
            self.frames += 1
            if self.frames >= FRAMES:
                self.enough_frames.set()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        if self.sio.connected:
            await self.sio.disconnect()


async def test_browser_calls_an_aiortc_specialist(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        await rest.login("chengguan")
        token = await rest.login("consult")
        found = await rest.call("GET", "/api/v1/patients?name=张桂兰", "chengguan")
        consult = await rest.call(
            "POST",
            "/api/v1/consults",
            "chengguan",
            json={
                "patient_id": found["items"][0]["id"],
                "centre": "consultation",
                "question": "视频会诊：胸痛待查",
            },
        )
        cid = str(consult["id"])
        await rest.call("POST", f"/api/v1/consults/{cid}/claim", "consult", json={})

        peer = AiortcPeer(live_server.url, token)
        context, page, watch = await new_page(browser, live_server)
        try:
            await peer.connect()
            await page.goto("/")
            await sign_in(page, "chengguan")
            await expect(page.get_by_test_id("home-grassroots_doctor")).to_be_visible()
            await page.goto(f"/consults/{cid}?debug")
            await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")
            # The specialist is online.
            assignee_dot = page.get_by_test_id("consult-assignee").get_by_test_id("presence-dot")
            await expect(assignee_dot).to_have_attribute("data-online", "true")

            start = page.get_by_test_id("call-start")
            await expect(start).to_contain_text("视频会诊")
            await start.click()
            await expect(page.get_by_test_id("call-panel")).to_be_visible()

            async with asyncio.timeout(30):
                ringing = await peer.next_event(cid, "call.ringing")
                call_id = str(ringing["payload"]["call_id"])
                # Join before answering, so the browser's offer (sent on call.accepted) arrives.
                joined = await peer.sio.call("call.join", {"call_id": call_id}, timeout=10)
                assert joined == {"joined": call_id}
                peer.pc.addTrack(VideoStreamTrack())
                await rest.call("POST", f"/api/v1/calls/{call_id}/accept", "consult")

                offer = await peer.next_signal("offer")
                await peer.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
                trickling = asyncio.create_task(peer.trickle())
                peer.tasks.append(trickling)
                await peer.pc.setLocalDescription(await peer.pc.createAnswer())
                relayed = await peer.sio.call(
                    "call.signal",
                    {"call_id": call_id, "kind": "answer", "sdp": peer.pc.localDescription.sdp},
                    timeout=10,
                )
                assert relayed == {"relayed": True}

                # Frames both ways.
                await peer.enough_frames.wait()
            assert await page.evaluate(BROWSER_FRAMES, FRAMES) >= FRAMES
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
            async with asyncio.timeout(30):
                await peer.next_event(cid, "call.connected")
            assert peer.remote_candidates > 0  # the browser trickled its candidates

            # The browser hangs up: the peer hears it, and the call ends.
            await page.get_by_test_id("call-hangup").click()
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)
            async with asyncio.timeout(30):
                await peer.next_event(cid, "call.ended")
            call = await rest.call("GET", f"/api/v1/calls/{call_id}", "chengguan")
            assert call["state"] == "ended"
            await expect(page.get_by_test_id("call-start")).to_be_visible()
            watch.check()
        finally:
            await peer.close()
            await context.close()


async def test_aiortc_specialist_calls_the_browser(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    """The other way round: the specialist rings while the station is on its home page; the
    notice opens the consult, where the station answers; the specialist offers (its full SDP),
    the browser answers and trickles; the specialist hangs up."""
    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        await rest.login("chengguan")
        token = await rest.login("consult")
        station_user = (await rest.call("GET", "/api/v1/auth/me", "chengguan"))["id"]
        found = await rest.call("GET", "/api/v1/patients?name=张桂兰", "chengguan")
        consult = await rest.call(
            "POST",
            "/api/v1/consults",
            "chengguan",
            json={
                "patient_id": found["items"][0]["id"],
                "centre": "consultation",
                "question": "视频会诊：心电图异常",
            },
        )
        cid = str(consult["id"])
        await rest.call("POST", f"/api/v1/consults/{cid}/claim", "consult", json={})

        peer = AiortcPeer(live_server.url, token)
        context, page, watch = await new_page(browser, live_server)
        try:
            await peer.connect()
            await page.goto("/")
            await sign_in(page, "chengguan")
            await expect(page.get_by_test_id("home-grassroots_doctor")).to_be_visible()
            await page.goto("/?debug")
            await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")

            call = await rest.call(
                "POST",
                f"/api/v1/consults/{cid}/calls",
                "consult",
                json={"invitee_ids": [station_user]},
            )
            call_id = str(call["id"])
            joined = await peer.sio.call("call.join", {"call_id": call_id}, timeout=10)
            assert joined == {"joined": call_id}

            # The ring is heard on the home page; its notice opens the consult.
            notice = page.locator(".feed-notice").filter(has_text="视频会诊来电")
            await notice.click()
            await expect(page).to_have_url(re.compile(rf"/consults/{cid}$"))
            ring = page.get_by_test_id("call-incoming")
            await expect(ring).to_contain_text("发起视频会诊")
            await expect(ring).to_contain_text("李主任")
            await ring.get_by_test_id("call-accept").click()
            await expect(page.get_by_test_id("call-panel")).to_be_visible()

            async with asyncio.timeout(30):
                await peer.next_event(cid, "call.accepted")
                peer.pc.addTrack(VideoStreamTrack())
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
                relayed = await peer.sio.call(
                    "call.signal",
                    {"call_id": call_id, "kind": "offer", "sdp": peer.pc.localDescription.sdp},
                    timeout=10,
                )
                assert relayed == {"relayed": True}
                answer = await peer.next_signal("answer")
                await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
                peer.tasks.append(asyncio.create_task(peer.trickle()))
                await peer.enough_frames.wait()
            assert await page.evaluate(BROWSER_FRAMES, FRAMES) >= FRAMES
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")

            # The specialist hangs up: the page closes the panel and says so.
            await peer.sio.call("call.signal", {"call_id": call_id, "kind": "hangup"}, timeout=10)
            ended = await rest.call("POST", f"/api/v1/calls/{call_id}/hangup", "consult")
            assert ended["state"] == "ended"
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)
            await expect(page.get_by_test_id("call-notice")).to_be_visible()
            await expect(page.get_by_test_id("call-start")).to_be_visible()
            timeline = page.get_by_test_id("consult-timeline")
            for step in ("发起视频会诊", "接听视频会诊", "视频会诊结束"):
                await expect(timeline).to_contain_text(step)
            watch.check()
        finally:
            await peer.close()
            await context.close()
