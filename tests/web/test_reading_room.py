"""The reading room: a station uploads a CT series and an ECG from a folder; the ECG centre reads
them beside its report and signs it.

城关镇卫生院 asks the ECG centre about chest pain and uploads a folder holding four 512×512 CT
slices and pydicom's 12-lead ECG (fresh UIDs). 心电 郑医生 claims the consult and opens the
reading room: the CT is drawn by Cornerstone3D (the canvas holds a real image, and dragging the
window/level changes its pixels), scrolls, takes the lung preset, and shows the server's JPEGs in
low-bandwidth mode. The ECG is drawn on paper with our QT and QTc (Bazett) beside the machine's;
the calipers measure 25 mm as 1000 ms (60 bpm) and 10 mm as 1 mV. "Fill from ECG" offers our QT
and QTc too, but puts the machine's measurements (and our QRS, chosen over the machine's) and
statements into the form; the report is signed with them. The station sees the same studies,
read-only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.services import HuizhenProcess
from tests.web.studyfiles import write_ct_series, write_ecg
from tests.web.support import new_page, open_reading_room, sign_in
from tests.web.test_upload import national_id, open_consult
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

# What the viewport's canvas shows: the share of lit pixels, a checksum, and distinct grey levels.
CANVAS_STATS = """(el) => {
  const c = el.querySelector('canvas')
  if (!c || !c.width || !c.height) return null
  const t = document.createElement('canvas')
  t.width = c.width
  t.height = c.height
  const ctx = t.getContext('2d')
  ctx.drawImage(c, 0, 0)
  const d = ctx.getImageData(0, 0, t.width, t.height).data
  let lit = 0, sum = 0
  const levels = new Set()
  for (let i = 0; i < d.length; i += 4) {
    sum = (sum + d[i] * ((i >> 2) % 9973 + 1)) % 2147483647
    if (d[i] > 16) lit++
    levels.add(d[i])
  }
  return { lit: lit / (d.length / 4), sum, levels: levels.size }
}"""


async def canvas(viewport: Locator) -> dict[str, Any] | None:
    stats: dict[str, Any] | None = await viewport.evaluate(CANVAS_STATS)
    return stats


async def canvas_drawn(page: Page, viewport: Locator) -> dict[str, Any]:
    """Wait until the viewport's canvas holds an image (not a black or blank canvas)."""
    handle = await viewport.element_handle()
    await page.wait_for_function(
        f"(el) => {{ const s = ({CANVAS_STATS})(el); return s && s.lit > 0.1 && s.levels > 8 }}",
        arg=handle,
        timeout=30_000,
    )
    stats = await canvas(viewport)
    assert stats is not None
    return stats


async def click_mm(page: Page, paper: Locator, x_mm: float, y_mm: float) -> None:
    box = await paper.bounding_box()
    assert box is not None
    px_per_mm = float(await paper.get_attribute("data-px-per-mm") or "0")
    await page.mouse.click(box["x"] + x_mm * px_per_mm, box["y"] + y_mm * px_per_mm)


async def test_station_uploads_ct_and_ecg_and_the_ecg_centre_reads_and_signs(
    live_server: HuizhenProcess, browser: Browser, tmp_path: Path
) -> None:
    patient_id = national_id("张桂兰")
    folder = tmp_path / "检查"
    write_ct_series(folder / "CT", 4, patient_id)
    write_ecg(folder / "ECG" / "ECG0001.dcm", patient_id)

    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "ecg", "胸痛 2 小时，请协助判读心电图。")

        # -- the station uploads the folder -----------------------------------------------------
        station_context, station, station_watch = await new_page(browser, live_server)
        specialist_context, specialist, specialist_watch = await new_page(browser, live_server)
        try:
            await station.goto("/")
            await sign_in(station, "chengguan")
            await station.get_by_test_id("home-grassroots_doctor").wait_for()
            await station.goto(f"/consults/{cid}")
            await station.get_by_test_id("tab-images").click()
            await expect(station).to_have_url(re.compile(r"\?tab=images$"))
            await station.get_by_test_id("upload-folder-input").set_input_files(str(folder))
            items = station.get_by_test_id("upload-item")
            await expect(items).to_have_count(5)
            for i in range(5):
                await expect(items.nth(i)).to_have_attribute("data-phase", "done", timeout=60_000)
            await expect(station.get_by_test_id("upload-overall")).to_contain_text("5 / 5")
            await expect(items.get_by_test_id("upload-name").first).to_contain_text("检查/")
            # The station's own reading room lists both studies, read-only.
            await expect(station.get_by_test_id("series")).to_have_count(2)
            await expect(station.get_by_test_id("reading-room")).to_contain_text("只读查看")

            # -- the ECG centre claims it and opens the reading room -----------------------------
            room = await open_reading_room(specialist, "ecg", cid)
            ct = room.locator("[data-testid=series][data-modality=CT]")
            await expect(ct).to_contain_text("胸部 CT 平扫")
            await expect(ct).to_contain_text("4")
            # The thumbnail is a real image from the server.
            thumb = ct.get_by_test_id("series-thumb")
            await expect(thumb).to_be_visible()
            await specialist.wait_for_function(
                "(img) => img.complete && img.naturalWidth > 0", arg=await thumb.element_handle()
            )
            # The report editor stays beside the images.
            await expect(specialist.get_by_test_id("report-editor")).to_be_visible()

            # -- the CT in Cornerstone3D -----------------------------------------------------------
            await ct.click()
            viewport = specialist.get_by_test_id("cs-viewport")
            await expect(viewport).to_have_attribute("data-ready", "true", timeout=30_000)
            first = await canvas_drawn(specialist, viewport)
            frame = specialist.get_by_test_id("viewer-frame")
            window = specialist.get_by_test_id("viewer-window")
            await expect(frame).to_have_text("第 1 / 4 幅")
            await expect(window).to_have_text("窗宽 400 窗位 40")

            # Window/level by dragging with the left button changes what is drawn.
            box = await viewport.bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            await specialist.mouse.move(cx, cy)
            await specialist.mouse.down()
            await specialist.mouse.move(cx + 120, cy + 60, steps=8)
            await specialist.mouse.up()
            await expect(window).not_to_have_text("窗宽 400 窗位 40")
            await specialist.wait_for_function(
                f"([el, was]) => {{ const s = ({CANVAS_STATS})(el); return s && s.sum !== was }}",
                arg=[await viewport.element_handle(), first["sum"]],
            )

            # Presets, scrolling with the wheel, and back.
            await specialist.get_by_test_id("viewer-preset-lung").click()
            await expect(window).to_have_text("窗宽 1500 窗位 -600")
            await specialist.mouse.move(cx, cy)
            await specialist.mouse.wheel(0, 120)
            await expect(frame).to_have_text("第 2 / 4 幅")
            await canvas_drawn(specialist, viewport)

            # Low bandwidth: the server's rendered JPEGs in a plain image stack.
            await room.get_by_test_id("low-bandwidth").click()
            image = specialist.get_by_test_id("rendered-image")
            await expect(image).to_be_visible()
            await specialist.wait_for_function(
                "(img) => img.complete && img.naturalWidth >= 256", arg=await image.element_handle()
            )
            assert "/rendered?" in (await image.get_attribute("src") or "")
            await expect(specialist.get_by_test_id("viewer-frame")).to_have_text("第 1 / 4 幅")
            await room.get_by_test_id("low-bandwidth").click()
            await expect(viewport).to_have_attribute("data-ready", "true", timeout=30_000)

            # -- the ECG, with calipers ------------------------------------------------------------
            await room.locator("[data-testid=series][data-kind=ecg]").click()
            paper = specialist.get_by_test_id("ecg-paper")
            await expect(paper).to_be_visible(timeout=30_000)
            await expect(paper.locator("path[data-lead]")).to_have_count(13)  # 3×4 + rhythm
            values = specialist.get_by_test_id("ecg-values")
            await expect(values.get_by_test_id("ecg-value-qrs_ms")).to_contain_text("75")
            # Our QT and QTc (Bazett) beside the machine's 368 and 370 ms, never in their place.
            for key, machine, ours in (("qt_ms", "368", "371"), ("qtc_ms", "370", "374")):
                row = values.get_by_test_id(f"ecg-value-{key}")
                await expect(row.locator("[data-col=machine]")).to_have_text(machine)
                await expect(row.locator("[data-col=computed]")).to_have_text(ours)
            await expect(specialist.get_by_test_id("ecg-qtc-note")).to_have_text(
                "本系统的 QTc 按 Bazett 公式（QT/√RR）计算；按 Fridericia 公式（QT/∛RR）为 373 ms。"
            )
            await expect(specialist.get_by_test_id("ecg-statements")).to_contain_text(
                "RITMO SINUSALE"
            )

            mode = specialist.get_by_test_id("ecg-caliper-mode")
            await mode.get_by_text("时间").click()
            await click_mm(specialist, paper, 40, 30)
            await click_mm(specialist, paper, 65, 30)  # 25 mm at 25 mm/s
            readout = specialist.get_by_test_id("ecg-caliper-readout")
            await expect(readout).to_have_text(re.compile(r"^\d+ ms · \d+ 次/分$"))
            ms, bpm = map(int, re.findall(r"\d+", await readout.inner_text()))
            assert 985 <= ms <= 1015 and 59 <= bpm <= 61
            # Zoomed in, the same 25 mm still measures one second.
            await specialist.get_by_test_id("ecg-zoom-in").click()
            await expect(paper).to_have_attribute("data-px-per-mm", "4")
            await click_mm(specialist, paper, 40, 30)
            await click_mm(specialist, paper, 65, 30)
            ms, bpm = map(int, re.findall(r"\d+", await readout.inner_text()))
            assert 985 <= ms <= 1015 and 59 <= bpm <= 61

            await mode.get_by_text("振幅").click()
            await click_mm(specialist, paper, 50, 10)
            await click_mm(specialist, paper, 50, 20)  # 10 mm at 10 mm/mV
            await expect(readout).to_have_text(re.compile(r"^\d\.\d\d mV$"))
            mv = float((await readout.inner_text()).split()[0])
            assert 0.95 <= mv <= 1.05

            # -- fill the report from the ECG and sign it ---------------------------------------
            await specialist.get_by_test_id("report-fill-ecg").click()
            dialog = specialist.get_by_test_id("ecg-fill-dialog")
            await expect(dialog.get_by_test_id("fill-row-hr_bpm")).to_contain_text("61")
            qrs = dialog.get_by_test_id("fill-row-qrs_ms")
            await expect(qrs.locator("[data-col=machine]")).to_have_text("75")
            await expect(qrs.locator("[data-col=computed]")).to_have_text("76")
            qt = dialog.get_by_test_id("fill-row-qt_ms")
            await expect(qt.locator("[data-col=machine]")).to_have_text("368")
            await expect(qt.locator("[data-col=computed]")).to_have_text("371")
            qtc = dialog.get_by_test_id("fill-row-qtc_ms")
            await expect(qtc.locator("[data-col=computed]")).to_have_text("374")
            # The reader keeps our QRS and our QTc (Bazett) rather than the machine's.
            await dialog.get_by_test_id("fill-computed-qrs_ms").click()
            await dialog.get_by_test_id("fill-computed-qtc_ms").click()
            await dialog.get_by_test_id("fill-confirm").click()
            await expect(dialog).to_be_hidden()

            async def field(key: str) -> Locator:
                return specialist.get_by_test_id(f"report-input-{key}").locator("input")

            await expect(await field("hr_bpm")).to_have_value("61")
            await expect(await field("qrs_ms")).to_have_value("76")
            await expect(await field("pr_ms")).to_have_value("161")
            await expect(await field("qt_ms")).to_have_value("368")
            await expect(await field("qtc_ms")).to_have_value("374")
            formula = specialist.get_by_test_id("report-input-qtc-formula")
            await expect(formula).to_contain_text("Bazett")
            await expect(await field("qrs_axis_deg")).to_have_value("52")
            rhythm = specialist.get_by_test_id("report-input-rhythm")
            await expect(rhythm).to_contain_text("RITMO SINUSALE")
            await expect(rhythm).to_contain_text("ECG NORMALE")
            findings = specialist.get_by_test_id("report-input-findings")
            await expect(findings).to_have_value("RR 间期 982 ms。")
            # Still the reader's form: the heart rate is overridden by hand.
            await (await field("hr_bpm")).fill("62")
            impression = specialist.get_by_test_id("report-input-impression")
            await impression.fill("窦性心律，心电图正常。")

            await specialist.get_by_test_id("report-sign").click()
            await specialist.get_by_test_id("sign-confirm").click()
            await expect(specialist.get_by_test_id("consult-state")).to_have_text("已出报告")

            consult = await rest.call("GET", f"/api/v1/consults/{cid}", "chengguan")
            (brief,) = consult["reports"]
            report = await rest.call("GET", f"/api/v1/reports/{brief['id']}", "chengguan")
            content = report["content"]
            assert content["measurements"]["hr_bpm"] == 62
            assert content["measurements"]["qrs_ms"] == 76
            assert content["measurements"]["pr_ms"] == 161
            assert content["measurements"]["qtc_ms"] == 374
            assert content["measurements"]["qtc_formula"] == "bazett"
            assert content["rhythm_statements"] == ["RITMO SINUSALE", "ECG NORMALE"]
            assert content["findings"] == "RR 间期 982 ms。"

            station_watch.check()
            specialist_watch.check()
        finally:
            await station_context.close()
            await specialist_context.close()
