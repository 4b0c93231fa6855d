"""Shared by the Chromium tests: a page watcher that fails on script errors and CSP violations,
a fresh browser context per user, and the sign-in form."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    expect,
)

from tests.helpers import DEMO_PASSWORD
from tests.services import ROOT, HuizhenProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Video calls: a fake camera and microphone, and getUserMedia granted without a prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
DIST_INDEX = ROOT / "web" / "dist" / "index.html"


class PageWatch:
    """Fails the test on script errors, CSP violations and any request leaving the server."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.base_url = base_url
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # The start-up session probe and a refused sign-in answer 401 by design.
        if "status of 401" in message.text:
            return
        self.problems.append(f"console error: {message.text}")

    def _request(self, request: Request) -> None:
        url = request.url
        if not url.startswith((self.base_url + "/", "data:", "blob:")):
            self.problems.append(f"request outside the server: {url}")

    def check(self) -> None:
        assert self.problems == []


async def new_page(
    browser: Browser, server: HuizhenProcess
) -> tuple[BrowserContext, Page, PageWatch]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="zh-CN", base_url=server.url
    )
    page = await context.new_page()
    return context, page, PageWatch(page, server.url)


async def sign_in(page: Page, username: str, password: str = DEMO_PASSWORD) -> None:
    await expect(page.get_by_test_id("login-title")).to_be_visible()
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(password)
    await page.get_by_test_id("login-submit").click()


async def open_reading_room(page: Page, username: str, consult_id: str) -> Locator:
    """A specialist signs in, claims the consult and opens its images: the reading room."""
    await page.goto("/")
    await sign_in(page, username)
    await page.get_by_test_id("home-specialist").wait_for()
    await page.goto(f"/consults/{consult_id}")
    await page.get_by_test_id("consult-claim").click()
    await expect(page.get_by_test_id("consult-state")).to_have_text("诊断中")
    await page.get_by_test_id("tab-images").click()
    return page.get_by_test_id("reading-room")
