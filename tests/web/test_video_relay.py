"""Relay only: real Chromium calls an aiortc peer with every packet through a coturn the test
starts (``use-auth-secret``, ``allow-loopback-peers``). The server hands out relay-only ICE
configuration (``HUIZHEN_ICE_RELAY_ONLY``); the browser and the headless peer both follow it.
Frames flow both ways, and the pair ICE selected is relayed on both ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD
from tests.services import HuizhenProcess
from tests.web.rtc_support import BROWSER_FRAMES, SELECTED_PAIR, RestartableCoturn, relay_server
from tests.web.support import new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


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


async def claimed_consult(station: HeadlessPeer, specialist: HeadlessPeer, question: str) -> str:
    found = await station.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
    consult = await station.api(
        "POST",
        "/api/v1/consults",
        {"patient_id": found["items"][0]["id"], "centre": "consultation", "question": question},
    )
    await specialist.api("POST", f"/api/v1/consults/{consult['id']}/claim", {})
    return str(consult["id"])


async def live_call(peer: HeadlessPeer, consult_id: str) -> str:
    """The consult's live call, once the browser has started it."""
    while True:
        detail = await peer.api("GET", f"/api/v1/consults/{consult_id}")
        if detail.get("live_call_id"):
            return str(detail["live_call_id"])
        await asyncio.sleep(0.2)


async def test_browser_and_aiortc_peer_through_turn_only(
    server: HuizhenProcess, browser: Browser
) -> None:
    station = HeadlessPeer(server.url)
    specialist = HeadlessPeer(server.url)
    context, page, watch = await new_page(browser, server)
    try:
        await station.sign_in("chengguan", DEMO_PASSWORD)
        await specialist.sign_in("consult", DEMO_PASSWORD)
        config = await specialist.api("GET", "/api/v1/rtc/ice-servers")
        assert config["ice_transport_policy"] == "relay"
        cid = await claimed_consult(station, specialist, "视频会诊：仅中继")

        await page.goto("/")
        await sign_in(page, "chengguan")
        await expect(page.get_by_test_id("home-grassroots_doctor")).to_be_visible()
        await page.goto(f"/consults/{cid}?debug")
        await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")
        await page.get_by_test_id("call-start").click()
        await expect(page.get_by_test_id("call-panel")).to_be_visible()

        async with asyncio.timeout(60):
            call_id = await live_call(specialist, cid)
            await specialist.join(call_id)
            await specialist.accept(call_id)
            await specialist.answer_next_offer(call_id)
            await specialist.frames(10)
        assert specialist.pc is not None
        candidates = [
            line for line in specialist.pc.localDescription.sdp.splitlines() if "candidate:" in line
        ]
        assert candidates
        assert all(" typ relay" in line for line in candidates), candidates

        assert await page.evaluate(BROWSER_FRAMES, [10, 0]) >= 10
        await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
        assert await page.evaluate(SELECTED_PAIR) == ["relay", "relay"]
        await page.get_by_test_id("call-hangup").click()
        await expect(page.get_by_test_id("call-panel")).to_have_count(0)
        watch.check()
    finally:
        await specialist.close()
        await station.close()
        await context.close()
