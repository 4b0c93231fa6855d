"""Low-bandwidth modes in a call between two real Chromium pages (fake cameras, 640×480).

Chosen by hand:

The station chooses "低带宽": the encoders of both sides scale down to at most 180 lines at
15 fps (RTCRtpSender.setParameters, no renegotiation), which each receiving side sees in
getStats() (inbound-rtp frameWidth/frameHeight); the specialist's page says the other side
switched. Then "仅语音": video frames stop arriving (the video encodings are inactive) while
audio keeps flowing; back to "标准", video comes back at full size.

Taken by itself: the call goes through coturn behind a UDP link the test makes lossy once the
call is up (6 % of the datagrams dropped at each crossing; a media packet crosses twice, to
coturn and back, so about 12 % end to end: over the 8 % threshold of "低带宽", under the 20 % of
"仅语音"): the pages' quality monitors see the loss in getStats() and step the call down to
"低带宽", saying why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD
from tests.services import Coturn, HuizhenProcess
from tests.web.rtc_support import BROWSER_FRAMES, FRAMES_NOW, SELECTED_PAIR, lossy_udp, relay_server
from tests.web.support import new_page, sign_in
from tests.web.test_video_relay import claimed_consult

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

# Waits until the decoded video size satisfies `ok` ("small": at most 320×180, "full": wider
# than 320); returns [width, height].
FRAME_SIZE = """async (wanted) => {
  const deadline = Date.now() + 45000
  for (;;) {
    let size = null
    ;(await window.__huizhenCall.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video' && r.frameWidth)
        size = [r.frameWidth, r.frameHeight]
    })
    if (size) {
      const small = size[0] <= 320 && size[1] <= 180
      if (wanted === 'small' ? small : size[0] > 320) return size
    }
    if (Date.now() > deadline) throw new Error(`video still ${size}`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}"""

# Waits until no video frame has been decoded for 2 s while audio packets keep arriving;
# returns the audio packets received in that window.
VIDEO_STOPPED = """async () => {
  const read = async () => {
    let video = 0
    let audio = 0
    ;(await window.__huizhenCall.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') video = r.framesDecoded ?? 0
      if (r.type === 'inbound-rtp' && r.kind === 'audio') audio = r.packetsReceived ?? 0
    })
    return { video, audio }
  }
  const deadline = Date.now() + 45000
  let before = await read()
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const now = await read()
    if (now.video === before.video && now.audio > before.audio) return now.audio - before.audio
    if (Date.now() > deadline) throw new Error(`video frames still arrive: ${now.video}`)
    before = now
  }
}"""


async def more_frames(page: Page, wanted: int = 10) -> None:
    before = await page.evaluate(FRAMES_NOW)
    assert await page.evaluate(BROWSER_FRAMES, [wanted, before]) >= before + wanted


async def in_a_call(server: HuizhenProcess, station: Page, centre: Page, question: str) -> None:
    """The station calls the specialist, who answers; video flows both ways at full size."""
    rest_station = HeadlessPeer(server.url)
    rest_specialist = HeadlessPeer(server.url)
    await rest_station.sign_in("chengguan", DEMO_PASSWORD)
    await rest_specialist.sign_in("consult", DEMO_PASSWORD)
    cid = await claimed_consult(rest_station, rest_specialist, question)
    for page, user in ((station, "chengguan"), (centre, "consult")):
        await page.goto("/")
        await sign_in(page, user)
        await expect(page.get_by_test_id("shell")).to_be_visible()
        await page.goto(f"/consults/{cid}?debug")
        await expect(page.get_by_test_id("shell")).to_have_attribute("data-feed", "live")
    await station.get_by_test_id("call-start").click()
    await centre.get_by_test_id("call-incoming").get_by_test_id("call-accept").click()
    for page in (station, centre):
        await more_frames(page)
        await expect(page.get_by_test_id("call-status")).to_have_text("已接通")
        width, _ = await page.evaluate(FRAME_SIZE, "full")
        assert width > 320


async def test_low_bandwidth_and_audio_only(live_server: HuizhenProcess, browser: Browser) -> None:
    station_context, station, station_watch = await new_page(browser, live_server)
    centre_context, centre, centre_watch = await new_page(browser, live_server)
    try:
        await in_a_call(live_server, station, centre, "视频会诊：低带宽")

        # Low bandwidth, chosen by the station, applies to both directions.
        await station.get_by_test_id("call-mode-low").click()
        for page in (centre, station):
            width, height = await page.evaluate(FRAME_SIZE, "small")
            assert (width, height) <= (320, 180)
            await more_frames(page)
            await expect(page.get_by_test_id("call-mode")).to_have_attribute("data-mode", "low")
        await expect(centre.get_by_test_id("call-mode-notice")).to_have_text(
            "对方已切换为“低带宽”模式"
        )

        # Audio only: video stops both ways, audio goes on.
        await station.get_by_test_id("call-mode-audio").click()
        for page in (centre, station):
            assert await page.evaluate(VIDEO_STOPPED) > 0
            await expect(page.get_by_test_id("call-audio-only")).to_be_visible()
        await expect(centre.get_by_test_id("call-mode-notice")).to_have_text(
            "对方已切换为“仅语音”模式"
        )

        # The specialist brings video back at full size.
        await centre.get_by_test_id("call-mode-full").click()
        for page in (station, centre):
            await more_frames(page)
            width, _ = await page.evaluate(FRAME_SIZE, "full")
            assert width > 320
            await expect(page.get_by_test_id("call-audio-only")).to_have_count(0)
        await expect(station.get_by_test_id("call-mode-notice")).to_have_text(
            "对方已切换为“标准”模式"
        )

        await station.get_by_test_id("call-hangup").click()
        for page in (station, centre):
            await expect(page.get_by_test_id("call-panel")).to_have_count(0)
        station_watch.check()
        centre_watch.check()
    finally:
        await station_context.close()
        await centre_context.close()


async def test_poor_network_steps_down_by_itself(
    tmp_path: Path, database_url: str, browser: Browser
) -> None:
    coturn = Coturn()
    coturn.start()
    try:
        async with lossy_udp(coturn.port) as link:
            with relay_server(tmp_path, database_url, coturn, turn_url=link.url) as server:
                station_context, station, station_watch = await new_page(browser, server)
                centre_context, centre, centre_watch = await new_page(browser, server)
                try:
                    await in_a_call(server, station, centre, "视频会诊：网络差")
                    assert await station.evaluate(SELECTED_PAIR) == ["relay", "relay"]
                    for page in (station, centre):
                        mode = page.get_by_test_id("call-mode")
                        await expect(mode).to_have_attribute("data-mode", "full")

                    link.loss = 0.06
                    for page in (station, centre):
                        mode = page.get_by_test_id("call-mode")
                        # Loss alone asks for 低带宽; on a loaded machine the bitrate estimate may
                        # also fall under 80 kbit/s, which asks for 仅语音. Either is a step down.
                        await expect(mode).to_have_attribute(
                            "data-mode", re.compile(r"^(low|audio)$"), timeout=60_000
                        )
                        await expect(page.get_by_test_id("call-mode-notice")).to_have_text(
                            re.compile(r"网络较差，已自动切换为“(低带宽|仅语音)”模式")
                        )
                        if await mode.get_attribute("data-mode") == "low":
                            width, height = await page.evaluate(FRAME_SIZE, "small")
                            assert (width, height) <= (320, 180)
                    link.loss = 0
                    await station.get_by_test_id("call-hangup").click()
                    station_watch.check()
                    centre_watch.check()
                finally:
                    await station_context.close()
                    await centre_context.close()
    finally:
        coturn.stop()
