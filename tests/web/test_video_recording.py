"""Recording a video consult from the call panel, between two real Chromium pages.

The station asks to record; the specialist's page asks for consent and the specialist agrees;
the station's page then starts the recording: the server's recorder joins the call, each page
answers its offer on a side connection and sends its camera and microphone; both pages show
"录制中". The specialist then withdraws consent: 停止录制, confirmed (a first try is called off
with 继续录制). Both pages' indicators change; the station is told who stopped it; the recording
is saved while the call goes on, and both pages list it among the consult's files. After the
hang-up the recording is attached to the consult and holds both pages' video (decoded with
PyAV); the consult timeline names the steps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD
from tests.mediafiles import decoded_frames
from tests.services import HuizhenProcess
from tests.web.rtc_support import BROWSER_FRAMES, FRAMES_NOW
from tests.web.support import new_page, sign_in
from tests.web.test_video_relay import claimed_consult

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


async def test_record_with_consent_from_the_call_panel(
    live_server: HuizhenProcess, browser: Browser, tmp_path: Path
) -> None:
    rest = HeadlessPeer(live_server.url)
    rest_specialist = HeadlessPeer(live_server.url)
    await rest.sign_in("chengguan", DEMO_PASSWORD)
    await rest_specialist.sign_in("consult", DEMO_PASSWORD)
    cid = await claimed_consult(rest, rest_specialist, "视频会诊：录像")

    station_context, station, station_watch = await new_page(browser, live_server)
    centre_context, centre, centre_watch = await new_page(browser, live_server)
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
            assert await page.evaluate(BROWSER_FRAMES, [10, 0]) >= 10

        await station.get_by_test_id("call-record").click()
        panel = station.get_by_test_id("call-record-panel")
        await expect(panel).to_contain_text("等待对方同意录制")
        consent = centre.get_by_test_id("call-record-consent")
        await expect(consent).to_contain_text("对方请求录制本次视频会诊")
        await consent.get_by_test_id("call-record-yes").click()
        for page in (station, centre):
            await expect(page.get_by_test_id("call-recording")).to_have_text(
                "● 录制中", timeout=60_000
            )
        # Media keeps flowing on the main connection while it records.
        before = await station.evaluate("window.__huizhenPeer.restarts")
        assert await station.evaluate(BROWSER_FRAMES, [30, 10]) >= 40
        assert await station.evaluate("window.__huizhenPeer.restarts") == before

        # The specialist withdraws consent: a first try is called off, the second confirmed.
        stop = centre.get_by_test_id("call-record-stop")
        confirm = centre.get_by_test_id("call-record-stop-confirm")
        await stop.click()
        await expect(confirm).to_contain_text("停止录制？")
        await confirm.get_by_test_id("call-record-stop-no").click()
        await expect(confirm).to_have_count(0)
        await expect(centre.get_by_test_id("call-recording")).to_have_text("● 录制中")
        await stop.click()
        await confirm.get_by_test_id("call-record-stop-yes").click()
        await expect(station.get_by_test_id("call-mesh-notice")).to_contain_text("停止了录制")
        for page in (station, centre):
            await expect(page.get_by_test_id("call-record-outcome")).to_have_text(
                "录像已保存到会诊附件。", timeout=60_000
            )
            await expect(page.get_by_test_id("call-recording")).to_have_count(0)
            await expect(page.get_by_test_id("call-record-stop")).to_have_count(0)
            # The call goes on without the recorder.
            await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
        saved_at = await station.evaluate(FRAMES_NOW)
        assert await station.evaluate(BROWSER_FRAMES, [30, saved_at]) >= saved_at + 30
        call_id = (await rest.api("GET", f"/api/v1/consults/{cid}"))["live_call_id"]
        recording = await rest.api("GET", f"/api/v1/calls/{call_id}/recording")
        assert recording["state"] == "saved"

        await station.get_by_test_id("call-hangup").click()
        for page in (station, centre):
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)

        # Both pages list it among the consult's files, as soon as it is saved.
        for page in (station, centre):
            listed = page.locator('[data-testid="attachment-item"][data-kind="recording"]')
            await expect(listed).to_contain_text("视频会诊录像")
        files = (await rest.api("GET", f"/api/v1/consults/{cid}/attachments"))["items"]
        [recording] = [f for f in files if f["kind"] == "recording"]
        call_mp4 = await rest.fetch(f"/api/v1/attachments/{recording['id']}")
        (tmp_path / "call.mp4").write_bytes(call_mp4)

        frames = (await asyncio.to_thread(decoded_frames, tmp_path / "call.mp4"))["video"]
        assert len(frames) == 2  # both pages' cameras
        assert all(n > 0 for n in frames), frames

        timeline = centre.get_by_test_id("consult-timeline")
        steps = (
            "请求录制视频会诊",
            "同意录制视频会诊",
            "开始录制视频会诊",
            "停止录制视频会诊",
            "视频会诊录像已保存",
        )
        for step in steps:
            await expect(timeline).to_contain_text(step)
        station_watch.check()
        centre_watch.check()
    finally:
        await station_context.close()
        await centre_context.close()
        await rest.close()
        await rest_specialist.close()
