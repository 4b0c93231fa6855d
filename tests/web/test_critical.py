"""A critical value from the LIS reaches the requesting station's consult page live, and the
station acknowledges it there.

城关镇卫生院 asks the lab centre about 张桂兰's electrolytes. The county LIS (account ``lis``)
answers over HL7 v2 with a critical potassium (6.8 mmol/L, HH) before anyone signs. The station's
open consult page shows the red 危急值 banner without a reload (``report.critical`` on the feed),
and the lab specialist's page says the station has not acknowledged yet. The station acknowledges
with a note: its banner goes, and the specialist's page shows who acknowledged it and when, also
without a reload (``critical.acknowledged``), as does the timeline.
"""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.imaging import labmessages as lab
from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in
from tests.web.test_upload import national_id, open_consult
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

NOTE = "已电话通知患者立即返院复查"


async def test_a_critical_lab_value_is_acknowledged_by_the_station_live(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "lab", "乏力、心悸，请查电解质与心肌标志物。")
        await rest.login("lis")

        station_context, station, station_watch = await new_page(browser, live_server)
        lab_context, specialist, lab_watch = await new_page(browser, live_server)
        try:
            await station.goto("/")
            await sign_in(station, "chengguan")
            await station.get_by_test_id("home-grassroots_doctor").wait_for()
            await station.goto(f"/consults/{cid}")
            await expect(station.get_by_test_id("consult-state")).to_have_text("待认领")
            await expect(station.get_by_test_id("critical-banner")).to_have_count(0)

            await specialist.goto("/")
            await sign_in(specialist, "lab")
            await specialist.get_by_test_id("home-specialist").wait_for()
            await specialist.goto(f"/consults/{cid}")
            await expect(specialist.get_by_test_id("consult-state")).to_have_text("待认领")
            await expect(specialist.get_by_test_id("critical-pending")).to_have_count(0)

            # -- the LIS files results with a critical potassium ---------------------------------
            message = lab.ORU_UTF8.replace(lab.CONSULT, cid).replace(
                lab.NATIONAL_ID, national_id("张桂兰")
            )
            async with http.post(
                "/api/v1/lab/hl7v2",
                data=message.encode(),
                headers={
                    "Authorization": f"Bearer {rest.tokens['lis']}",
                    "Content-Type": "x-application/hl7-v2+er7",
                },
            ) as resp:
                answer = await resp.read()
                assert resp.status == 200, answer
            assert b"MSA|AA|" in answer

            # The station's page shows the banner as the event arrives (no reload).
            banner = station.get_by_test_id("critical-banner")
            await expect(banner).to_be_visible()
            await expect(banner).to_contain_text("危急值")
            await expect(banner).to_contain_text("检验中心的检验结果含危急值")
            acknowledge = banner.get_by_test_id("critical-acknowledge")
            await expect(acknowledge).to_have_text("确认已接收危急值")
            await station.get_by_test_id("lang-en").click()
            await expect(acknowledge).to_have_text("Acknowledge critical value")
            await expect(banner).to_contain_text("Critical value")
            await station.get_by_test_id("lang-zh").click()
            await expect(acknowledge).to_have_text("确认已接收危急值")

            # The lab's page (also live) says the station has not acknowledged it yet.
            waiting = specialist.get_by_test_id("critical-pending")
            await expect(waiting).to_be_visible()
            await expect(waiting).to_contain_text("等待其确认接收")
            await expect(specialist.get_by_test_id("critical-banner")).to_have_count(0)
            consult = await rest.call("GET", f"/api/v1/consults/{cid}", "chengguan")
            assert consult["critical_pending"] is True

            # -- the station acknowledges, with a note ---------------------------------------------
            await banner.get_by_test_id("critical-note").fill(NOTE)
            await acknowledge.click()
            await expect(banner).to_have_count(0)
            done = station.get_by_test_id("critical-acknowledged")
            await expect(done).to_be_visible()
            await expect(done).to_contain_text(NOTE)

            consult = await rest.call("GET", f"/api/v1/consults/{cid}", "chengguan")
            assert consult["critical_pending"] is False
            (entry,) = [e for e in consult["timeline"] if e["action"] == "critical.acknowledge"]
            assert entry["note"] == NOTE

            # The lab specialist sees it acknowledged, live: who, and the note.
            await expect(waiting).to_have_count(0)
            seen = specialist.get_by_test_id("critical-acknowledged")
            await expect(seen).to_be_visible()
            await expect(seen).to_contain_text("申请机构已确认接收危急值")
            await expect(seen).to_contain_text(str(entry["actor_name"]))
            await expect(seen).to_contain_text(NOTE)
            timeline = specialist.locator(
                "[data-testid=timeline-entry][data-action='critical.acknowledge']"
            )
            await expect(timeline).to_contain_text("确认已接收危急值")
            await expect(timeline).to_contain_text(NOTE)
            lab_timeline = specialist.locator(
                "[data-testid=timeline-entry][data-action='lab.critical']"
            )
            await expect(lab_timeline).to_contain_text("检验危急值上报")

            station_watch.check()
            lab_watch.check()
        finally:
            await station_context.close()
            await lab_context.close()
