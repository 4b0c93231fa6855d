"""Cine in the reading room: a multi-frame image is a loop of frames, played at its own rate.

城关镇卫生院 sends an imaging consult one multi-frame Secondary Capture over STOW-RS: eight
512×512 frames of a ramp that moves 16 pixels to the right in each frame (``write_multiframe``,
so no two frames look alike), recorded at Frame Time 200 ms (5 frames a second). 影像 王医生
claims the consult and opens it. In Cornerstone3D every frame is one image of the stack (the
loader fetches ``.../frames/1`` to ``.../frames/8``): the viewer counts eight frames, offers cine
at the file's 5 fps, and playing it moves through all the frames, changing the canvas; the space
bar stops it and the arrows step again. The low-bandwidth viewer steps through the server's
rendered frames (``.../frames/N/rendered``) alike.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import aiohttp
import pydicom
import pytest
from playwright.async_api import Browser, Request, expect

from tests.services import HuizhenProcess
from tests.test_dicomweb import STOW_TYPE, multipart
from tests.web.studyfiles import write_multiframe
from tests.web.support import new_page, open_reading_room
from tests.web.test_reading_room import CANVAS_STATS, canvas_drawn
from tests.web.test_upload import national_id, open_consult
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

FRAMES = 8
FRAME_URL = re.compile(r"/frames/(\d+)$")
RENDERED_URL = re.compile(r"/frames/(\d+)/rendered\?")

# A checksum of a loaded <img>'s pixels.
IMAGE_SUM = """(img) => {
  if (!img.complete || !img.naturalWidth) return null
  const c = document.createElement('canvas')
  c.width = img.naturalWidth
  c.height = img.naturalHeight
  const x = c.getContext('2d')
  x.drawImage(img, 0, 0)
  const d = x.getImageData(0, 0, c.width, c.height).data
  let sum = 0
  for (let i = 0; i < d.length; i += 4) sum = (sum + d[i] * ((i >> 2) % 9973 + 1)) % 2147483647
  return sum
}"""


def loop_file(folder: Path, patient_id: str) -> bytes:
    """The eight-frame loop at 5 frames a second (fresh UIDs)."""
    path = write_multiframe(folder / "LOOP.dcm", FRAMES, patient_id)
    ds = pydicom.dcmread(path)
    ds.FrameTime = 200.0
    ds.SeriesDescription = "心脏超声 电影"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


async def test_a_multi_frame_loop_plays_frame_by_frame(
    live_server: HuizhenProcess, browser: Browser, tmp_path: Path
) -> None:
    data = loop_file(tmp_path, national_id("张桂兰"))

    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "imaging", "心脏超声电影，请协助判读。")
        async with http.post(
            f"/dicomweb/studies?consult={cid}",
            data=io.BytesIO(multipart(data)),  # 4 MiB: streamed, not one raw body
            headers={
                "Authorization": f"Bearer {rest.tokens['chengguan']}",
                "Content-Type": STOW_TYPE,
                "Accept": "application/dicom+json",
            },
        ) as resp:
            assert resp.status == 200, await resp.text()

        context, page, watch = await new_page(browser, live_server)
        frames: set[int] = set()
        rendered: set[int] = set()

        def requested(request: Request) -> None:
            if match := FRAME_URL.search(request.url):
                frames.add(int(match.group(1)))
            if match := RENDERED_URL.search(request.url):
                rendered.add(int(match.group(1)))

        page.on("request", requested)
        try:
            room = await open_reading_room(page, "radiology", cid)
            series = room.locator("[data-testid=series][data-modality=OT]")
            await expect(series).to_contain_text("心脏超声 电影")
            await series.click()

            # -- Cornerstone3D: one image per frame ----------------------------------------------
            viewport = page.get_by_test_id("cs-viewport")
            await expect(viewport).to_have_attribute("data-ready", "true", timeout=30_000)
            first = await canvas_drawn(page, viewport)
            frame = page.get_by_test_id("viewer-frame")
            await expect(frame).to_have_text(f"第 1 / {FRAMES} 帧")
            # Cine is the control of a loop, offered at the file's own rate.
            cine = page.get_by_test_id("viewer-cine")
            await expect(cine).to_have_text("电影播放")
            await expect(page.get_by_test_id("viewer-fps")).to_contain_text("5 帧/秒")

            await cine.click()
            await expect(cine).to_have_attribute("data-playing", "true")
            # Every frame comes round, and what is drawn changes with it.
            await page.evaluate("window.__framesSeen = new Set()")
            await page.wait_for_function(
                f"""([el, vp, was]) => {{
                  window.__framesSeen.add(el.dataset.index)
                  const s = ({CANVAS_STATS})(vp)
                  return window.__framesSeen.size === {FRAMES} && s && s.sum !== was
                }}""",
                arg=[await frame.element_handle(), await viewport.element_handle(), first["sum"]],
                polling=50,
                timeout=30_000,
            )
            assert frames == set(range(1, FRAMES + 1))

            # The space bar stops it; the arrows step frame by frame again.
            await page.locator(".stack-viewer .screen").focus()
            await page.keyboard.press(" ")
            await expect(cine).to_have_attribute("data-playing", "false")
            index = int(await frame.get_attribute("data-index") or "-1")
            key, to = ("ArrowUp", index - 1) if index == FRAMES - 1 else ("ArrowDown", index + 1)
            await page.keyboard.press(key)
            await expect(frame).to_have_text(f"第 {to + 1} / {FRAMES} 帧")

            # -- low bandwidth: the server's rendered frames -------------------------------------
            await room.get_by_test_id("low-bandwidth").click()
            image = page.get_by_test_id("rendered-image")
            await expect(image).to_have_attribute("src", re.compile(r"/frames/1/rendered\?"))
            await expect(frame).to_have_text(f"第 1 / {FRAMES} 帧")
            await expect(page.get_by_test_id("viewer-fps")).to_contain_text("5 帧/秒")
            await page.wait_for_function(
                f"(img) => ({IMAGE_SUM})(img) !== null", arg=await image.element_handle()
            )
            first_jpeg = await image.evaluate(IMAGE_SUM)
            await cine.click()
            await page.wait_for_function(
                f"""([img, was]) => {{
                  const s = ({IMAGE_SUM})(img)
                  return !/\\/frames\\/1\\/rendered/.test(img.src) && s !== null && s !== was
                }}""",
                arg=[await image.element_handle(), first_jpeg],
                polling=50,
            )
            await cine.click()
            await expect(cine).to_have_attribute("data-playing", "false")
            assert {1, 2} <= rendered

            watch.check()
        finally:
            await context.close()
