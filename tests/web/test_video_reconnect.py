"""A video consult that survives losing the network, between two real Chromium pages.

城关镇卫生院's doctor (``chengguan``) calls the consultation centre's specialist (``consult``);
all media goes through a coturn the test starts (relay-only ICE). Then, for real:

1. coturn dies (SIGKILL) and comes back on the same port: every allocation is gone, both sides
   see ICE go ``disconnected``; the caller restarts ICE with fresh TURN credentials until it
   works, and frames flow again without anyone dialling.
2. The specialist's realtime channel is cut (the test closes its socket.io websocket and refuses
   new ones) while coturn dies again: the caller's restart offers cannot reach the specialist.
   When the channel and coturn come back, the specialist's page reconnects, re-joins the call,
   and the restart goes through: frames flow again.

Frames are counted in each page with getStats() (the call's RTCPeerConnection is exposed with
``?debug``); the call stays one and the same on the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD
from tests.services import HuizhenProcess
from tests.web.rtc_support import (
    BROWSER_FRAMES,
    FRAMES_NOW,
    ICE_STATE,
    SELECTED_PAIR,
    RestartableCoturn,
    relay_server,
)
from tests.web.support import new_page, sign_in
from tests.web.test_video_relay import claimed_consult

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

SOCKET = "**/socket.io/**"
FRAMES = 10


@pytest.fixture
def coturn() -> Iterator[RestartableCoturn]:
    server = RestartableCoturn()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(
    tmp_path: Path, database_url: str, coturn: RestartableCoturn
) -> Iterator[HuizhenProcess]:
    with relay_server(tmp_path, database_url, coturn) as live:
        yield live


class SocketSwitch:
    """The page's socket.io websocket passes through the test, which can cut it."""

    def __init__(self) -> None:
        self.blocked = False
        self.open: list[WebSocketRoute] = []

    async def route(self, ws: WebSocketRoute) -> None:
        if self.blocked:
            await ws.close()
            return
        ws.connect_to_server()
        self.open.append(ws)

    async def refuse_polling(self, route: Route) -> None:
        if self.blocked:
            await route.abort()
        else:
            await route.continue_()

    async def cut(self) -> None:
        self.blocked = True
        for ws in self.open:
            await ws.close()
        self.open.clear()


async def frames_again(page: Page) -> None:
    """ICE connected again, and at least FRAMES more frames decoded than now."""
    before = await page.evaluate(FRAMES_NOW)
    await page.evaluate(ICE_STATE, ["connected", "completed"])
    assert await page.evaluate(BROWSER_FRAMES, [FRAMES, before]) >= before + FRAMES


async def test_the_call_comes_back_by_itself(
    server: HuizhenProcess, coturn: RestartableCoturn, browser: Browser
) -> None:
    rest_station = HeadlessPeer(server.url)
    rest_specialist = HeadlessPeer(server.url)
    await rest_station.sign_in("chengguan", DEMO_PASSWORD)
    await rest_specialist.sign_in("consult", DEMO_PASSWORD)
    cid = await claimed_consult(rest_station, rest_specialist, "视频会诊：网络中断后自动恢复")

    station_context, station, station_watch = await new_page(browser, server)
    centre_context, centre, centre_watch = await new_page(browser, server)
    switch = SocketSwitch()
    await centre_context.route_web_socket(SOCKET, switch.route)
    await centre_context.route(SOCKET, switch.refuse_polling)
    try:
        for page, user in ((station, "chengguan"), (centre, "consult")):
            await page.goto("/")
            await sign_in(page, user)
            await expect(page.get_by_test_id("shell")).to_be_visible()
            await page.goto(f"/consults/{cid}?debug")
            await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")

        await station.get_by_test_id("call-start").click()
        await centre.get_by_test_id("call-incoming").get_by_test_id("call-accept").click()
        for page in (station, centre):
            assert await page.evaluate(BROWSER_FRAMES, [FRAMES, 0]) >= FRAMES
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
            assert await page.evaluate(SELECTED_PAIR) == ["relay", "relay"]
        call_id = (await rest_station.api("GET", f"/api/v1/consults/{cid}"))["live_call_id"]

        # 1. The TURN server dies and comes back.
        coturn.kill()
        for page in (station, centre):
            await page.evaluate(ICE_STATE, ["disconnected", "failed"])
            await expect(page.get_by_test_id("call-status")).to_have_text("网络中断，正在重连…")
        coturn.restart()
        await asyncio.gather(frames_again(station), frames_again(centre))
        for page in (station, centre):
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
            assert await page.evaluate(SELECTED_PAIR) == ["relay", "relay"]

        # 2. The specialist loses the realtime channel while the media path dies too.
        await switch.cut()
        await expect(centre.get_by_test_id("shell")).to_have_attribute("data-feed", "polling")
        coturn.kill()
        for page in (station, centre):
            await page.evaluate(ICE_STATE, ["disconnected", "failed"])
        coturn.restart()
        switch.blocked = False  # the page's next reconnection attempt goes through
        await expect(centre.get_by_test_id("shell")).to_have_attribute(
            "data-feed", "live", timeout=40_000
        )
        await asyncio.gather(frames_again(station), frames_again(centre))
        for page in (station, centre):
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")

        # Nobody dialled: the same call, still connected.
        call = await rest_station.api("GET", f"/api/v1/calls/{call_id}")
        assert call["state"] == "connected"
        restarts = await station.evaluate("window.__huizhenPeer.restarts")
        assert restarts >= 2

        await station.get_by_test_id("call-hangup").click()
        for page in (station, centre):
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)
        station_watch.check()
        # The cut channel is logged by the browser; nothing else may be.
        centre_watch.problems = [p for p in centre_watch.problems if "socket.io" not in p]
        centre_watch.check()
    finally:
        await station_context.close()
        await centre_context.close()
        await rest_station.close()
        await rest_specialist.close()
