"""The feed when the realtime channel is unavailable, and when it comes back.

The station's browser cannot reach ``/socket.io/`` (both transports refused by the test): the
feed falls back to polling, and a claim made at the centre still reaches the open consult page
without a reload. When the channel is let through again, the page reconnects, syncs from the
last id it holds and is live: the next change arrives over the socket.
"""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import Browser, Route, WebSocketRoute, expect

from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

SOCKET = "**/socket.io/**"


async def refuse_socket(ws: WebSocketRoute) -> None:
    await ws.close()


async def refuse_polling(route: Route) -> None:
    await route.abort()


async def test_polling_fallback_then_live_again(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        await rest.login("chengguan")
        await rest.login("consult")
        found = await rest.call("GET", "/api/v1/patients?name=张桂兰", "chengguan")
        consult = await rest.call(
            "POST",
            "/api/v1/consults",
            "chengguan",
            json={
                "patient_id": found["items"][0]["id"],
                "centre": "consultation",
                "question": "头晕 3 天，请协助诊治。",
            },
        )
        cid = str(consult["id"])

        context, page, watch = await new_page(browser, live_server)
        await context.route_web_socket(SOCKET, refuse_socket)
        await context.route(SOCKET, refuse_polling)
        try:
            await page.goto("/")
            await sign_in(page, "chengguan")
            await page.get_by_test_id("home-grassroots_doctor").wait_for()
            await page.goto(f"/consults/{cid}")
            state = page.get_by_test_id("consult-state")
            await expect(state).to_have_text("待认领")
            shell = page.get_by_test_id("shell")
            await expect(shell).to_have_attribute("data-feed", "polling")

            # Polling carries the claim to the open page.
            await rest.call("POST", f"/api/v1/consults/{cid}/claim", "consult", json={})
            await expect(state).to_have_text("诊断中")
            await expect(shell).to_have_attribute("data-feed", "polling")

            # The channel comes back: the page reconnects (with back-off) and is live again.
            await context.unroute_all()
            await context.route_web_socket(SOCKET, lambda ws: ws.connect_to_server())
            await expect(shell).to_have_attribute("data-feed", "live", timeout=40_000)
            # While live there is no polling: the return arrives over the socket.
            await rest.call(
                "POST", f"/api/v1/consults/{cid}/return", "consult", json={"note": "请补充血压记录"}
            )
            await expect(state).to_have_text("已退回")

            # Refused connections are logged by the browser; nothing else may be.
            watch.problems = [p for p in watch.problems if "socket.io" not in p]
            watch.check()
        finally:
            await context.close()
