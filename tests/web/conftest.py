"""Fixtures of the Chromium tests: the browser, once the front end is built."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.web.support import CHROMIUM, CHROMIUM_ARGS, DIST_INDEX

# Two shared cores and a cold server: give conditions time, but always wait on a condition.
expect.set_options(timeout=15_000)


@pytest.fixture
def prerequisites() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    if not DIST_INDEX.is_file():
        pytest.fail("web/dist is not built: run `cd web && npm run build` (or `make web`)")


@pytest.fixture
async def browser(prerequisites: None) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()
