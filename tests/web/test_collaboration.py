"""Working a consult together, in real Chromium (Playwright), three users side by side; and the
supervisor's dashboard.

城关镇卫生院 (``chengguan``) opens a consultation-centre consult for 张桂兰, uploads a photo (a
small PNG made here) with its progress shown to the end, and writes a message that carries it.
The consultation centre's 李主任 (``consult``, a second browser context) sees the message and
the photo (previewed from the download), replies, claims the case and signs a consultation
report that advises an upward referral through the green channel. The station sees the reply
and the report, and refers the patient up to 县人民医院; the hospital's admissions desk
(``coordinator``, a third context) accepts it on the referrals page, and the station's open
page shows it accepted.

The supervisor's dashboard draws its charts (ECharts, SVG, nothing fetched from elsewhere) over
consults made through the API, and counts them on its stat cards.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, FilePayload, Page, expect

from tests.helpers import DEMO_PASSWORD
from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in
from tests.web.test_consult_journey import UUID, seeded_national_id

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

PATIENT = "张桂兰"
QUESTION = "反复胸闷 2 周，今晨胸痛 30 分钟，心电图 ST 段压低，请会诊指导下一步处理。"
PHOTO = "心电图照片.png"
MESSAGE = "已上传心电图照片，患者目前血压 150/90 mmHg，已嚼服阿司匹林。"
REPLY = "照片已阅，考虑急性冠脉综合征，请准备上转。"
IMPRESSION = "急性冠脉综合征（不稳定型心绞痛可能）。"
REFERRAL_NOTE = "建议经绿色通道上转县人民医院心内科。"


def tiny_png() -> bytes:
    """A valid 1×1 RGB PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x1f\x6f\x8b")  # filter byte, then one teal pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def state_is(page: Page, text: str) -> None:
    await expect(page.get_by_test_id("consult-state")).to_have_text(text)


async def test_message_file_report_and_green_channel_referral(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    png = tiny_png()

    # -- 城关镇卫生院 opens the consult, uploads the photo, writes with it -----------------------
    station_context, station, station_watch = await new_page(browser, live_server)
    await station.goto("/")
    await sign_in(station, "chengguan")
    await station.get_by_test_id("menu-consult-new").click()
    await station.get_by_test_id("new-consult-national-id").fill(seeded_national_id(PATIENT))
    await station.get_by_test_id("new-consult-find").click()
    await expect(station.get_by_test_id("chosen-patient-name")).to_have_text(PATIENT)
    await station.get_by_test_id("centre-choice-consultation").click()
    await station.get_by_test_id("priority-choice-urgent").click()
    await station.get_by_test_id("new-consult-question").fill(QUESTION)
    await station.get_by_test_id("new-consult-submit").click()
    await expect(station).to_have_url(re.compile(rf"/consults/{UUID}$"))
    consult_url = station.url
    await state_is(station, "待认领")
    await expect(station.get_by_test_id("consult-title")).to_have_text(f"{PATIENT} · 会诊中心")
    await expect(station.get_by_test_id("message-empty")).to_be_visible()
    await expect(station.get_by_test_id("attachment-empty")).to_be_visible()

    await station.get_by_test_id("attachment-input").set_input_files(
        files=FilePayload(name=PHOTO, mimeType="image/png", buffer=png)
    )
    upload = station.get_by_test_id("upload-item")
    await expect(upload).to_have_attribute("data-state", "done")
    await expect(upload.get_by_test_id("upload-state")).to_have_text("上传完成")
    await expect(upload.get_by_test_id("upload-progress")).to_have_attribute("aria-valuenow", "100")
    listed = station.get_by_test_id("attachment-item")
    await expect(listed).to_have_count(1)
    await expect(listed.get_by_test_id("attachment-name")).to_have_text(PHOTO)
    await expect(listed).to_have_attribute("data-kind", "photo")
    await expect(listed).to_contain_text("城关镇 刘医生（我）")

    # The message carries the photo just uploaded.
    await station.get_by_test_id("message-input").fill(MESSAGE)
    await station.get_by_test_id("message-attach").click()
    option = station.get_by_role("option", name=PHOTO)
    await option.click()
    await station.keyboard.press("Escape")  # close the list before reaching for the button
    await expect(option).to_be_hidden()
    await station.get_by_test_id("message-send").click()
    sent = station.get_by_test_id("message-item")
    await expect(sent).to_have_count(1)
    await expect(sent.get_by_test_id("message-body")).to_have_text(MESSAGE)
    await expect(sent.get_by_test_id("message-author")).to_have_text("城关镇 刘医生（我）")
    await expect(sent.get_by_test_id("message-file")).to_have_text(PHOTO)
    await expect(station.get_by_test_id("message-input")).to_have_value("")

    # -- 会诊中心 李主任, in a second browser context ---------------------------------------------
    centre_context, centre, centre_watch = await new_page(browser, live_server)
    await centre.goto("/")
    await sign_in(centre, "consult")
    await expect(centre.get_by_test_id("home-specialist")).to_have_text("专科工作台")
    row = centre.get_by_test_id("worklist-consultation").get_by_role("row").filter(has_text=PATIENT)
    await expect(row).to_have_count(1)
    await row.get_by_text(PATIENT).click()
    await expect(centre).to_have_url(consult_url)
    await state_is(centre, "待认领")

    # The message, its author by name, and the photo, previewed as the server's JPEG.
    message = centre.get_by_test_id("message-item")
    await expect(message.get_by_test_id("message-body")).to_have_text(MESSAGE)
    await expect(message.get_by_test_id("message-author")).to_have_text("城关镇 刘医生")
    await expect(message.get_by_test_id("message-file")).to_have_text(PHOTO)
    photo = centre.get_by_test_id("attachment-item")
    await expect(photo.get_by_test_id("attachment-name")).to_have_text(PHOTO)
    await expect(photo).to_contain_text("城关镇 刘医生")
    await photo.get_by_test_id("attachment-preview").click()
    image = centre.get_by_test_id("attachment-preview-image")
    await expect(image).to_be_visible()
    await expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    # The preview (a JPEG made on the server) decodes: the 1×1 picture.
    await centre.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=attachment-preview-image]');"
        " return !!i && i.complete && i.naturalWidth === 1 }"
    )
    await centre.keyboard.press("Escape")
    await expect(image).to_be_hidden()

    await centre.get_by_test_id("message-input").fill(REPLY)
    await centre.get_by_test_id("message-send").click()
    await expect(centre.get_by_test_id("message-item")).to_have_count(2)

    await centre.get_by_test_id("consult-claim").click()
    await state_is(centre, "诊断中")
    await expect(centre.get_by_test_id("consult-assignee")).to_have_text("会诊 李主任（我）")

    # The consultation report, advising an upward referral by the green channel.
    editor = centre.get_by_test_id("report-editor")
    await editor.get_by_test_id("report-input-assessment").fill("胸痛症状典型，心电图动态改变。")
    await editor.get_by_test_id("report-input-impression").fill(IMPRESSION)
    await editor.get_by_test_id("report-input-plan").fill("吸氧、心电监护，建立静脉通路。")
    await editor.get_by_test_id("report-input-referral").get_by_text("上转").click()
    await editor.get_by_test_id("report-input-green-channel").click()
    await editor.get_by_test_id("report-input-referral-note").fill(REFERRAL_NOTE)
    await editor.get_by_test_id("report-sign").click()
    sign_dialog = centre.get_by_role("dialog", name="签发报告")
    await sign_dialog.get_by_test_id("sign-confirm").click()
    await expect(sign_dialog).to_be_hidden()
    signed = centre.get_by_test_id("report-view")
    await expect(signed).to_have_attribute("data-report-state", "signed")
    await expect(signed.get_by_test_id("report-signer")).to_have_text("会诊 李主任（我）")
    await expect(signed.get_by_test_id("report-referral")).to_contain_text("上转")
    await expect(signed.get_by_test_id("report-referral")).to_contain_text("绿色通道")
    # The signed report prints as a PDF.
    pdf_link = centre.get_by_test_id("report-pdf")
    await expect(pdf_link).to_have_text("打印/导出 PDF")
    href = await pdf_link.get_attribute("href")
    assert href is not None and re.fullmatch(rf"/api/v1/reports/{UUID}/pdf", href)
    pdf = await centre.request.get(href)
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert (await pdf.body()).startswith(b"%PDF-")
    # Down is the centre's to send, and the report advises up: no referral button here.
    await expect(centre.get_by_test_id("consult-refer")).to_have_count(0)

    # -- the station: the reply and the report arrive on the open page -----------------------------
    await station.bring_to_front()
    thread = station.get_by_test_id("message-item")
    await expect(thread).to_have_count(2)
    await expect(thread.nth(1).get_by_test_id("message-body")).to_have_text(REPLY)
    await expect(thread.nth(1).get_by_test_id("message-author")).to_have_text("会诊 李主任")
    await state_is(station, "已出报告")
    assert station.url == consult_url
    arrived = station.get_by_test_id("report-view")
    await expect(arrived.get_by_test_id("report-impression")).to_have_text(IMPRESSION)
    await expect(arrived.get_by_test_id("report-signer")).to_have_text("会诊 李主任")
    await expect(station.get_by_test_id("report-pdf")).to_be_visible()
    timeline = station.get_by_test_id("consult-timeline")
    await expect(timeline).to_contain_text("会诊 李主任")
    await expect(timeline).not_to_contain_text("用户 ")

    # Refer up, as the report advises: direction, green channel and reason come prefilled.
    refer = station.get_by_test_id("consult-refer")
    await expect(refer).to_contain_text("发起上转")
    await expect(refer).to_contain_text("绿色通道")
    await refer.click()
    dialog = station.get_by_test_id("referral-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_test_id("referral-target")).to_contain_text("县人民医院")
    await expect(dialog.get_by_test_id("referral-green-channel").locator("input")).to_be_checked()
    await expect(dialog.get_by_test_id("referral-reason")).to_have_value(REFERRAL_NOTE)
    await dialog.get_by_test_id("referral-submit").click()
    await expect(dialog).to_be_hidden()
    ours = station.get_by_test_id("consult-referrals")
    await expect(ours.get_by_test_id("referral-state")).to_have_text("待接收")
    await expect(ours.get_by_test_id("referral-to")).to_have_text("县人民医院")
    await expect(ours.get_by_test_id("referral-green")).to_have_text("绿色通道")
    await expect(station.get_by_test_id("consult-refer")).to_have_count(0)

    # -- the county hospital's admissions desk, in a third context ---------------------------------
    desk_context, desk, desk_watch = await new_page(browser, live_server)
    await desk.goto("/")
    await sign_in(desk, "coordinator")
    await expect(desk.get_by_test_id("menu-badge-referrals")).to_have_text("1")
    await desk.get_by_test_id("menu-referrals").click()
    await expect(desk.get_by_test_id("referrals-title")).to_have_text("双向转诊")
    incoming = desk.get_by_test_id("referrals-incoming").get_by_role("row").filter(has_text=PATIENT)
    await expect(incoming).to_have_count(1)
    await expect(incoming.get_by_test_id("referral-direction")).to_have_text("上转")
    await expect(incoming.get_by_test_id("referral-green")).to_have_text("绿色通道")
    await expect(incoming.get_by_test_id("referral-from")).to_have_text("城关镇卫生院")
    await expect(incoming.get_by_test_id("referral-state")).to_have_text("待接收")
    await incoming.get_by_test_id("referral-accept").click()
    step = desk.get_by_test_id("referral-step-dialog")
    await step.get_by_test_id("referral-note").fill("心内科已备床，请直接送急诊。")
    await step.get_by_test_id("referral-step-confirm").click()
    await expect(step).to_be_hidden()
    await expect(incoming.get_by_test_id("referral-state")).to_have_text("已接受")
    await expect(incoming.get_by_test_id("referral-complete")).to_be_visible()
    await expect(desk.get_by_test_id("menu-badge-referrals")).to_have_count(0)

    # -- the station sees it accepted, without a reload -------------------------------------------
    await station.bring_to_front()
    await expect(ours.get_by_test_id("referral-state")).to_have_text("已接受")
    assert station.url == consult_url
    await station.get_by_test_id("menu-referrals").click()
    await station.get_by_test_id("referral-tab-outgoing").click()
    outgoing = (
        station.get_by_test_id("referrals-outgoing").get_by_role("row").filter(has_text=PATIENT)
    )
    await expect(outgoing.get_by_test_id("referral-state")).to_have_text("已接受")
    await station.get_by_test_id("lang-en").click()
    await expect(outgoing.get_by_test_id("referral-state")).to_have_text("Accepted")
    await expect(outgoing.get_by_test_id("referral-cancel")).to_be_visible()

    station_watch.check()
    centre_watch.check()
    desk_watch.check()
    await station_context.close()
    await centre_context.close()
    await desk_context.close()


class ApiUser:
    """A demo user speaking the API with a bearer token (no cookies, so no CSRF)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    @classmethod
    async def sign_in(cls, http: aiohttp.ClientSession, base: str, username: str) -> ApiUser:
        async with http.post(
            f"{base}/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}
        ) as resp:
            assert resp.status == 200
            return cls(http, base, (await resp.json())["token"])

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method,
            f"{self.base}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json()


async def test_supervisor_dashboard(live_server: HuizhenProcess, browser: Browser) -> None:
    # Consults to count: two for the imaging centre, one of them reported; one ECG consult open.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        station = await ApiUser.sign_in(http, live_server.url, "chengguan")
        radiology = await ApiUser.sign_in(http, live_server.url, "radiology")
        found = await station.call(
            "GET", f"/api/v1/patients?national_id={seeded_national_id(PATIENT)}"
        )
        patient_id = found["items"][0]["id"]
        made = []
        for centre, priority in (("imaging", "urgent"), ("imaging", "routine"), ("ecg", "stat")):
            consult = await station.call(
                "POST",
                "/api/v1/consults",
                {
                    "patient_id": patient_id,
                    "centre": centre,
                    "question": "请协助诊断。",
                    "priority": priority,
                    "submit": True,
                },
            )
            made.append(consult["id"])
        await radiology.call("POST", f"/api/v1/consults/{made[0]}/claim", {})
        report = await radiology.call(
            "POST",
            f"/api/v1/consults/{made[0]}/reports",
            {"content": {"kind": "imaging", "modality": "DR", "impression": "未见明显异常。"}},
        )
        await radiology.call("POST", f"/api/v1/reports/{report['id']}/sign")

    context, page, watch = await new_page(browser, live_server)
    await page.goto("/")
    await sign_in(page, "supervisor")
    await expect(page.get_by_test_id("home-supervisor")).to_have_text("综合监管")
    # The home page leads to the dashboard, with the headline figure.
    await expect(page.get_by_test_id("summary-submitted")).to_have_text("3")
    await page.get_by_test_id("home-dashboard-open").click()
    await expect(page).to_have_url(re.compile(r"/dashboard$"))
    await expect(page.get_by_test_id("dashboard-title")).to_have_text("综合监管 · 一屏知家底")
    await expect(page.get_by_test_id("menu-dashboard")).to_be_visible()

    submitted = page.get_by_test_id("stat-submitted").get_by_test_id("stat-value")
    await expect(submitted).to_have_text("3")
    assert int(await submitted.inner_text()) >= 1
    await expect(page.get_by_test_id("stat-open").get_by_test_id("stat-value")).to_have_text("2")
    await expect(page.get_by_test_id("stat-within").get_by_test_id("stat-value")).to_have_text(
        "100%"
    )

    # Both charts are drawn (SVG), with bars for the consults.
    for chart in ("chart-volume", "chart-turnaround"):
        svg = page.get_by_test_id(chart).locator("svg")
        await expect(svg).to_have_count(1)
        await expect(svg.locator("path").nth(5)).to_be_attached()
    await expect(page.get_by_test_id("chart-volume")).to_contain_text("影像中心")

    centres = page.get_by_test_id("dashboard-centres")
    await expect(centres.get_by_role("row").filter(has_text="影像中心")).to_contain_text("2")
    institutions = page.get_by_test_id("dashboard-institutions")
    await expect(institutions.get_by_test_id("dashboard-institution-name")).to_have_text(
        "城关镇卫生院"
    )

    # Another range re-reads the figures; English relabels the charts.
    await page.get_by_test_id("dashboard-range-7").click()
    await expect(submitted).to_have_text("3")
    await page.get_by_test_id("lang-en").click()
    await expect(page.get_by_test_id("chart-volume")).to_contain_text("Imaging centre")

    watch.check()
    await context.close()
