"""The reading room's whole-slide viewer, and HL7 aECG files beside the DICOM ECGs.

城关镇卫生院 sends a pathology consult's slide (the synthetic three-level pyramid of
``tests/imaging/wsifiles.py``: 1024², 512², 256² in 256-pixel tiles, every tile one flat colour
``tile_colour(level, column, row)``, level 1 sparse with tile (1, 1) missing) over STOW-RS.
病理 孙医生 opens it: the canvas shows the tiles of the level that suits the whole-slide view
(sampled pixels against ``tile_colour``; the missing tile blank), the wheel zooms around the cursor
to the finest level (only the tiles on screen are fetched), dragging pans, the scale bar measures
in µm from the pixel spacing, and the label and thumbnail are shown beside.

For an ECG consult the station uploads aECG XML files from the upload panel: a good one is
attached and read on ECG paper in the reading room; a broken one is refused with the server's
reason in Chinese and English.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, Request, Response, expect

from imaging.ecg import read_ecg
from tests.imaging import wsifiles
from tests.imaging.aecgfiles import build_aecg
from tests.imaging.dicomfiles import bundled
from tests.services import HuizhenProcess
from tests.test_dicomweb import STOW_TYPE, multipart
from tests.web.support import new_page, open_reading_room, sign_in
from tests.web.test_upload import open_consult
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

TILE_URL = re.compile(r"/api/v1/slides/[0-9.]+/[0-9.]+/tiles/(\d+)/(\d+)/(\d+)$")
MISSING_404 = "console error: Failed to load resource: the server responded with a status of 404"

# One pixel of the slide canvas, as [r, g, b].
PIXEL = """([c, x, y]) =>
  Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))"""
# The middle pixel of a loaded <img>, as [r, g, b].
IMAGE_PIXEL = """(img) => {
  const c = document.createElement('canvas')
  c.width = img.naturalWidth
  c.height = img.naturalHeight
  const x = c.getContext('2d')
  x.drawImage(img, 0, 0)
  return Array.from(x.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3))
}"""


def close(got: list[int], want: tuple[int, int, int], tolerance: int = 16) -> bool:
    return all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True))


async def settled(page: Page, screen: Locator, level: int) -> dict[str, float]:
    """Wait until the viewer draws `level` with every tile on screen in, and return its view."""
    await expect(screen).to_have_attribute("data-level", str(level))
    await expect(screen).to_have_attribute("data-pending", "0")
    view: dict[str, float] = json.loads(await screen.get_attribute("data-view") or "{}")
    return view


async def canvas_size(canvas: Locator) -> tuple[int, int]:
    size: list[int] = await canvas.evaluate("(c) => [c.width, c.height]")
    return size[0], size[1]


def tile_centres(
    view: dict[str, float], level: int, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """(column, row, x, y): the canvas point at the middle of each tile of `level` on screen
    (or of its part on screen, at least 10 pixels from any edge)."""
    factor = wsifiles.SIZES[0] // wsifiles.SIZES[level]
    tiles = wsifiles.SIZES[level] // wsifiles.TILE
    scale, vx, vy = view["scale"], view["x"], view["y"]
    out = []
    for row in range(tiles):
        for column in range(tiles):
            # The tile's rectangle on the canvas, clipped to it.
            left = max(0.0, (column * wsifiles.TILE * factor - vx) * scale)
            right = min(float(width), ((column + 1) * wsifiles.TILE * factor - vx) * scale)
            top = max(0.0, (row * wsifiles.TILE * factor - vy) * scale)
            bottom = min(float(height), ((row + 1) * wsifiles.TILE * factor - vy) * scale)
            if right - left > 20 and bottom - top > 20:
                out.append((column, row, int((left + right) / 2), int((top + bottom) / 2)))
    return out


async def check_tiles(page: Page, canvas: Locator, view: dict[str, float], level: int) -> int:
    """Every tile of `level` on screen shows its colour (a missing one: blank). How many."""
    width, height = await canvas_size(canvas)
    handle = await canvas.element_handle()
    centres = tile_centres(view, level, width, height)
    assert centres
    for column, row, x, y in centres:
        got: list[int] = await page.evaluate(PIXEL, [handle, x, y])
        if level == wsifiles.SPARSE_LEVEL and (column, row) in wsifiles.MISSING:
            assert close(got, (255, 255, 255), 2), (level, column, row, got)
        else:
            want = wsifiles.tile_colour(level, column, row)
            assert close(got, want), (level, column, row, got, want)
    return len(centres)


async def test_the_pathology_centre_pans_and_zooms_a_whole_slide(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "pathology", "宫颈活检，请协助病理诊断。")
        body = multipart(*(f.data for f in wsifiles.build_wsi()))
        async with http.post(
            f"/dicomweb/studies?consult={cid}",
            data=body,
            headers={
                "Authorization": f"Bearer {rest.tokens['chengguan']}",
                "Content-Type": STOW_TYPE,
                "Accept": "application/dicom+json",
            },
        ) as resp:
            assert resp.status == 200, await resp.text()

        context, page, watch = await new_page(browser, live_server)
        tiles: list[tuple[int, int, int]] = []
        not_found: list[str] = []

        def requested(request: Request) -> None:
            match = TILE_URL.search(request.url)
            if match:
                level, column, row = map(int, match.groups())
                tiles.append((level, column, row))

        def answered(response: Response) -> None:
            if response.status == 404:
                not_found.append(response.url)

        page.on("request", requested)
        page.on("response", answered)
        try:
            room = await open_reading_room(page, "pathology", cid)
            slide = room.locator("[data-testid=series][data-kind=wsi]")
            await expect(slide).to_contain_text("病理切片")
            await slide.click()

            viewer = page.get_by_test_id("slide-viewer")
            await expect(viewer).to_have_attribute("data-ready", "true")
            screen = page.get_by_test_id("slide-screen")
            canvas = page.get_by_test_id("slide-canvas")

            # -- the whole slide: level 1 (512²) suits it; its missing tile is blank ------------
            view = await settled(page, screen, 1)
            assert view["scale"] < 1
            assert await check_tiles(page, canvas, view, 1) == 4
            assert set(tiles) == {(2, 0, 0), (1, 0, 0), (1, 1, 0), (1, 0, 1), (1, 1, 1)}
            await expect(page.get_by_test_id("slide-zoom")).to_contain_text("第 2 / 3 层")

            # The scale bar: 0.25 µm per pixel at level 0.
            text = await page.get_by_test_id("slide-scale-text").inner_text()
            match = re.fullmatch(r"(\d+) µm", text)
            assert match, text
            bar = page.get_by_test_id("slide-scale-bar").locator(".bar")
            bar_box = await bar.bounding_box()
            assert bar_box is not None
            measured = bar_box["width"] * wsifiles.BASE_SPACING_MM * 1000 / view["scale"]
            assert abs(measured - int(match.group(1))) <= 0.03 * int(match.group(1)) + 1

            # The label and the thumbnail beside, rendered by the server.
            for kind, colour in (("LABEL", (200, 200, 60)), ("THUMBNAIL", (120, 90, 160))):
                image = page.locator(f"[data-testid=slide-associated-image][data-kind={kind}] img")
                handle = await image.element_handle()
                await page.wait_for_function(
                    "(img) => img.complete && img.naturalWidth > 0", arg=handle
                )
                rgb: list[int] = await image.evaluate(IMAGE_PIXEL)
                assert close(rgb, colour, 20), (kind, rgb)

            # -- the wheel zooms around the cursor to level 0, fetching only what shows ----------
            box = await canvas.bounding_box()
            assert box is not None
            width, height = await canvas_size(canvas)
            px, py = width * 0.4, height * 0.45
            before = (view["x"] + px / view["scale"], view["y"] + py / view["scale"])
            await page.mouse.move(box["x"] + px, box["y"] + py)
            seen = len(tiles)
            await page.mouse.wheel(0, -300)
            view = await settled(page, screen, 0)
            assert view["scale"] > 0.5
            after = (view["x"] + px / view["scale"], view["y"] + py / view["scale"])
            # The slide point under the cursor stayed under it.
            assert abs(after[0] - before[0]) < 2 and abs(after[1] - before[1]) < 2, (before, after)
            await expect(page.get_by_test_id("slide-zoom")).to_contain_text("第 1 / 3 层")
            shown = await check_tiles(page, canvas, view, 0)
            fetched = {t for t in tiles[seen:] if t[0] == 0}
            on_screen = {(0, c, r) for c, r, _, _ in tile_centres(view, 0, width, height)}
            assert on_screen <= fetched
            # Only tiles on (or touching) the screen: fewer than the level's sixteen.
            assert len(fetched) < 16 and len(fetched) <= shown + 6, (fetched, shown)

            # -- dragging pans ------------------------------------------------------------------
            seen = len(tiles)
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            await page.mouse.move(cx, cy)
            await page.mouse.down()
            await page.mouse.move(cx - 160, cy - 120, steps=8)
            await page.mouse.up()
            await expect(screen).not_to_have_attribute("data-view", json.dumps(view))
            panned = await settled(page, screen, 0)
            assert abs((panned["x"] - view["x"]) * view["scale"] - 160) < 2, (view, panned)
            assert abs((panned["y"] - view["y"]) * view["scale"] - 120) < 2, (view, panned)
            assert panned["scale"] == view["scale"]
            await check_tiles(page, canvas, panned, 0)
            new_tiles = {t for t in tiles[seen:] if t[0] == 0} - fetched
            assert new_tiles, "panning brought no new tile into view"

            # -- the zoom buttons and back to the whole slide -----------------------------------
            await page.get_by_test_id("slide-zoom-out").click()
            await page.get_by_test_id("slide-zoom-out").click()
            await settled(page, screen, 2)
            await page.get_by_test_id("slide-home").click()
            view = await settled(page, screen, 1)
            await check_tiles(page, canvas, view, 1)

            # The only 404s were the sparse level's missing tile.
            column, row = next(iter(wsifiles.MISSING))
            assert not_found and all(
                url.endswith(f"/tiles/{wsifiles.SPARSE_LEVEL}/{column}/{row}") for url in not_found
            ), not_found
            watch.problems = [p for p in watch.problems if not p.startswith(MISSING_404)]
            watch.check()
        finally:
            await context.close()


async def test_the_station_uploads_aecg_files_and_the_reading_room_shows_them(
    live_server: HuizhenProcess, browser: Browser, tmp_path: Path
) -> None:
    good = tmp_path / "心电图.xml"
    good.write_bytes(build_aecg(read_ecg(bundled("waveform_ecg.dcm"))))
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<AnnotatedECG><unclosed></AnnotatedECG>")
    other = tmp_path / "other.xml"
    other.write_bytes(b'<?xml version="1.0"?><report xmlns="urn:example"/>')

    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "ecg", "心悸，请协助判读心电图（aECG）。")
        station_context, station, station_watch = await new_page(browser, live_server)
        reader_context, reader, reader_watch = await new_page(browser, live_server)
        try:
            await station.goto("/")
            await sign_in(station, "chengguan")
            await station.get_by_test_id("home-grassroots_doctor").wait_for()
            await station.goto(f"/consults/{cid}?tab=images")
            await expect(station.get_by_test_id("studies-none")).to_be_visible()
            await station.get_by_test_id("upload-files-input").set_input_files(
                [str(good), str(broken), str(other)]
            )
            items = station.get_by_test_id("upload-item")
            await expect(items).to_have_count(3)
            ok, bad, alien = items.nth(0), items.nth(1), items.nth(2)
            await expect(ok).to_have_attribute("data-phase", "done")
            await expect(bad).to_have_attribute("data-phase", "failed")
            await expect(bad.get_by_test_id("upload-error")).to_have_text(
                "不是格式正确的 XML 文件。"
            )
            await expect(alien).to_have_attribute("data-phase", "failed")
            await expect(alien.get_by_test_id("upload-error")).to_have_text(
                "不是 HL7 aECG 文件（根元素不是 AnnotatedECG）。"
            )
            await station.get_by_test_id("lang-en").click()
            await expect(bad.get_by_test_id("upload-error")).to_have_text(
                "Not a well-formed XML file."
            )
            await expect(alien.get_by_test_id("upload-error")).to_contain_text("not AnnotatedECG")
            await station.get_by_test_id("lang-zh").click()

            # Only the good file was kept, as an aECG; the station's room shows it on paper.
            listing = await rest.call("GET", f"/api/v1/consults/{cid}/attachments", "chengguan")
            assert [(a["filename"], a["kind"]) for a in listing["items"]] == [
                ("心电图.xml", "aecg")
            ]
            entry = station.get_by_test_id("aecg-item")
            await expect(entry).to_have_count(1)
            await expect(entry).to_contain_text("心电图.xml")
            await expect(station.get_by_test_id("ecg-paper")).to_be_visible()

            # The ECG centre reads it like a DICOM ECG: leads on paper, values beside.
            await reader.goto("/")
            await sign_in(reader, "ecg")
            await reader.get_by_test_id("home-specialist").wait_for()
            await reader.goto(f"/consults/{cid}?tab=images")
            await reader.get_by_test_id("aecg-item").click()
            paper = reader.get_by_test_id("ecg-paper")
            await expect(paper).to_be_visible()
            await expect(paper.locator("path[data-lead]")).to_have_count(13)
            await expect(reader.get_by_test_id("ecg-values")).to_contain_text("QRS")

            # The two refusals (422) are the only errors.
            station_watch.problems = [p for p in station_watch.problems if "status of 422" not in p]
            station_watch.check()
            reader_watch.check()
        finally:
            await station_context.close()
            await reader_context.close()
