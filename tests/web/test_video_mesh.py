"""A video consultation of three in real Chromium: a browser mesh (one peer connection per pair).

城关镇卫生院's doctor (``chengguan``) calls the imaging specialist (``radiology``), who has claimed
the consult. In the call panel the specialist invites a second imaging specialist (created here
through the admin API) with 邀请专家; the expert's page rings, they answer, and both members
already in the call offer to them. The consult was escalated to 省人民医院 first: the invite
list also offers that partner hospital's specialist, named with the hospital, and not the
specialist of another partner hospital. Every page then decodes video from both others
(getStats() on each pair's RTCPeerConnection, exposed with ``?debug`` as
``window.__huizhenPairs``). The expert hangs up: their tile goes from the other two pages, which
keep their call with one tile each.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD
from tests.services import HuizhenProcess
from tests.web.rtc_support import MESH_FRAMES
from tests.web.support import PageWatch, new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

FRAMES = 10
EXPERT = "radiology2"
EXPERT_NAME = "影像 钱医生"


async def second_specialist(admin: HeadlessPeer) -> str:
    """A second imaging specialist at the lead hospital; returns their user id."""
    institutions = await admin.api("GET", "/api/v1/institutions")
    lead = next(i for i in institutions["items"] if i["code"] == "xrmyy")
    user = await admin.api(
        "POST",
        "/api/v1/users",
        {
            "username": EXPERT,
            "display_name": EXPERT_NAME,
            "institution_id": lead["id"],
            "password": DEMO_PASSWORD,
            "roles": ["specialist"],
            "centres": ["imaging"],
        },
    )
    return str(user["id"])


async def partner_specialist(admin: HeadlessPeer, code: str, username: str) -> str:
    """A specialist of the partner hospital ``code`` (made first if it is not there)."""
    found = [i for i in await institutions(admin) if i["code"] == code]
    hospital = (
        found[0]
        if found
        else await admin.api(
            "POST",
            "/api/v1/institutions",
            {"code": code, "name_zh": "市第二人民医院", "kind": "partner_hospital"},
        )
    )
    user = await admin.api(
        "POST",
        "/api/v1/users",
        {
            "username": username,
            "display_name": f"{username} 教授",
            "institution_id": hospital["id"],
            "password": DEMO_PASSWORD,
            "roles": ["specialist"],
            "centres": ["imaging"],
        },
    )
    return str(user["id"])


async def institutions(admin: HeadlessPeer) -> list[dict[str, str]]:
    items: list[dict[str, str]] = (await admin.api("GET", "/api/v1/institutions"))["items"]
    return items


async def open_consult(page: Page, username: str, consult_id: str) -> None:
    await page.goto("/")
    await sign_in(page, username)
    await expect(page.get_by_test_id("shell")).to_be_visible()
    await page.goto(f"/consults/{consult_id}?debug")
    await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")


async def test_three_way_mesh(live_server: HuizhenProcess, browser: Browser) -> None:
    admin = HeadlessPeer(live_server.url)
    station_rest = HeadlessPeer(live_server.url)
    specialist_rest = HeadlessPeer(live_server.url)
    await admin.sign_in("admin", DEMO_PASSWORD)
    await station_rest.sign_in("chengguan", DEMO_PASSWORD)
    await specialist_rest.sign_in("radiology", DEMO_PASSWORD)
    expert_id = await second_specialist(admin)
    partner_id = await partner_specialist(admin, "shengyi", "shengyi-doc")
    outsider_id = await partner_specialist(admin, "shier", "shier-doc")
    found = await station_rest.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
    consult = await station_rest.api(
        "POST",
        "/api/v1/consults",
        {"patient_id": found["items"][0]["id"], "centre": "imaging", "question": "视频会诊：三方"},
    )
    cid = str(consult["id"])
    await specialist_rest.api("POST", f"/api/v1/consults/{cid}/claim", {})
    shengyi = next(i for i in await institutions(admin) if i["code"] == "shengyi")
    await specialist_rest.api(
        "POST",
        f"/api/v1/consults/{cid}/escalate",
        {"institution_id": shengyi["id"], "note": "请省医院会诊"},
    )

    pages: dict[str, Page] = {}
    watches: list[PageWatch] = []
    contexts: list[BrowserContext] = []
    try:
        for user in ("chengguan", "radiology", EXPERT):
            context, page, watch = await new_page(browser, live_server)
            contexts.append(context)
            watches.append(watch)
            pages[user] = page
            await open_consult(page, user, cid)
        station, specialist, expert = pages["chengguan"], pages["radiology"], pages[EXPERT]

        # The doctor calls the specialist; two of them in the call.
        await station.get_by_test_id("call-start").click()
        await specialist.get_by_test_id("call-incoming").get_by_test_id("call-accept").click()
        for page in (station, specialist):
            await page.evaluate(MESH_FRAMES, [FRAMES, 1])
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
        # The doctor is not the centre's: no invitation from the station.
        await expect(station.get_by_test_id("call-invite")).to_have_count(0)

        # The specialist invites the second expert from the call panel.
        await specialist.get_by_test_id("call-invite").click()
        await specialist.get_by_test_id("call-invite-select").click()
        # The escalated consult's partner specialist is offered too, never another partner's.
        await expect(specialist.get_by_test_id(f"call-invite-option-{partner_id}")).to_contain_text(
            "shengyi-doc 教授（省人民医院）"
        )
        await expect(specialist.get_by_test_id(f"call-invite-option-{outsider_id}")).to_have_count(
            0
        )
        await specialist.get_by_test_id(f"call-invite-option-{expert_id}").click()
        await specialist.get_by_test_id("call-invite-send").click()
        await expect(specialist.get_by_test_id("call-invite-notice")).to_contain_text(EXPERT_NAME)
        ring = expert.get_by_test_id("call-incoming")
        await expect(ring).to_contain_text("影像 王医生")
        await ring.get_by_test_id("call-accept").click()

        # Everyone decodes video from both others; two named tiles on each page.
        for page in (station, specialist, expert):
            decoded = await page.evaluate(MESH_FRAMES, [FRAMES, 2])
            assert len(decoded) == 2
            await expect(page.get_by_test_id("call-tile")).to_have_count(2)
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
        await expect(
            station.locator(f'[data-testid="call-tile"][data-user="{expert_id}"]')
        ).to_contain_text(EXPERT_NAME)
        await expect(
            station.locator(f'[data-testid="call-tile"][data-user="{expert_id}"]').get_by_test_id(
                "presence-dot"
            )
        ).to_have_attribute("data-online", "true")

        # The expert leaves; the other two keep their call, one tile each.
        await expert.get_by_test_id("call-hangup").click()
        await expect(expert.get_by_test_id("call-panel")).to_have_count(0)
        for page in (station, specialist):
            await expect(page.get_by_test_id("call-tile")).to_have_count(1)
            await expect(page.get_by_test_id("call-panel")).to_be_visible()
            await expect(page.get_by_test_id("call-mesh-notice")).to_contain_text(EXPERT_NAME)
            decoded = await page.evaluate(MESH_FRAMES, [FRAMES, 1])
            assert expert_id not in decoded
        call_id = (await station_rest.api("GET", f"/api/v1/consults/{cid}"))["live_call_id"]
        assert call_id
        call = await station_rest.api("GET", f"/api/v1/calls/{call_id}")
        assert call["state"] == "connected"
        left = {p["user_id"]: p["left_at"] for p in call["participants"]}
        assert left[expert_id] is not None

        await station.get_by_test_id("call-hangup").click()
        for page in (station, specialist):
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)
        for watch in watches:
            watch.check()
    finally:
        for context in contexts:
            await context.close()
        for peer in (admin, station_rest, specialist_rest):
            await peer.close()
