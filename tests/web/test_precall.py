"""The pre-call check in real Chromium (fake camera and microphone) against a real coturn.

With the server's TURN secret equal to coturn's, every check is green: the camera shows a
picture, the fake microphone's beeps move the level meter, and a relayed candidate is gathered
with iceTransportPolicy "relay". With a wrong secret, coturn refuses the credentials (401) and the
page says so, and why, with a failing verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.services import Coturn
from tests.web.rtc_support import relay_server
from tests.web.support import new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    server = Coturn()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("secret_ok", [True, False], ids=["right-secret", "wrong-secret"])
async def test_precall_check(
    tmp_path: Path, database_url: str, coturn: Coturn, browser: Browser, secret_ok: bool
) -> None:
    secret = coturn.secret if secret_ok else "not-coturn-s-secret"
    with relay_server(tmp_path, database_url, coturn, secret=secret) as server:
        context, page, watch = await new_page(browser, server)
        try:
            await page.goto("/")
            await sign_in(page, "chengguan")
            await expect(page.get_by_test_id("home-grassroots_doctor")).to_be_visible()
            await page.get_by_role("menuitem", name="通话前检测").click()
            await expect(page.get_by_test_id("precall")).to_contain_text("视频会诊前检测")
            await page.get_by_test_id("precall-start").click()

            await expect(page.get_by_test_id("precall-camera")).to_have_attribute(
                "data-result", "ok"
            )
            await expect(page.get_by_test_id("precall-camera")).to_contain_text("640×480")
            assert (
                await page.get_by_test_id("precall-preview").evaluate(
                    "(v) => new Promise((ok) => v.videoWidth ? ok(v.videoWidth) :"
                    " v.addEventListener('loadedmetadata', () => ok(v.videoWidth)))"
                )
                == 640
            )
            await expect(page.get_by_test_id("precall-mic")).to_have_attribute("data-result", "ok")
            turn = page.get_by_test_id("precall-turn")
            verdict = page.get_by_test_id("precall-verdict")
            if secret_ok:
                await expect(turn).to_have_attribute("data-result", "ok")
                await expect(turn).to_contain_text("可以通过中继连接（127.0.0.1:")
                await expect(verdict).to_have_attribute("data-result", "ok")
                await expect(verdict).to_contain_text("一切正常")
            else:
                await expect(turn).to_have_attribute("data-result", "fail")
                await expect(turn).to_contain_text("TURN 服务器拒绝了凭据（401")
                await expect(turn).to_contain_text("static-auth-secret 不一致")
                await expect(verdict).to_have_attribute("data-result", "fail")
            watch.check()
        finally:
            await context.close()
