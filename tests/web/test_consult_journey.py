"""A consult across the consortium, in real Chromium (Playwright), two users side by side.

城关镇卫生院 (``chengguan``) opens an urgent imaging consult for its patient 张桂兰; the imaging
centre's radiologist (``radiology``, in a second browser context) finds it on the worklist with
its countdown running, claims it, writes and signs the report; the report reaches the township's
open page through the event feed (no reload), where the doctor acknowledges it; both sides then
show the consult as acknowledged.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page, expect

from server.identity import make_national_id
from server.seed import PATIENTS, REGION
from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

PATIENT = "张桂兰"
QUESTION = "咳嗽发热 5 天，胸片右下肺片状阴影，请协助明确性质。"
FINDINGS = "右肺下叶见斑片状密度增高影，边缘模糊；双侧肋膈角锐利。"
IMPRESSION = "右肺下叶炎症，建议抗感染治疗后复查。"
RECOMMENDATION = "抗感染治疗 7–10 天后复查胸片。"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def seeded_national_id(name: str) -> str:
    for patient_name, birth, seq, _card, _sites in PATIENTS:
        if patient_name == name:
            return make_national_id(REGION, birth, seq)
    raise AssertionError(f"{name} is not a seeded patient")


async def state_is(page: Page, text: str) -> None:
    await expect(page.get_by_test_id("consult-state")).to_have_text(text)


async def test_imaging_consult_from_request_to_acknowledgement(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    # -- 城关镇卫生院 opens the consult ----------------------------------------------------------
    station_context, station, station_watch = await new_page(browser, live_server)
    await station.goto("/")
    await sign_in(station, "chengguan")
    await expect(station.get_by_test_id("home-grassroots_doctor")).to_have_text("基层工作站")
    await expect(station.get_by_test_id("my-consults")).to_contain_text("暂无会诊申请")
    # The feed rides on the realtime channel (socket.io), not on polling.
    await expect(station.get_by_test_id("shell")).to_have_attribute("data-feed", "live")

    await station.get_by_test_id("menu-consult-new").click()
    await expect(station.get_by_test_id("new-consult-title")).to_have_text("新建会诊")
    # Nothing can be sent before a patient is chosen.
    await expect(station.get_by_test_id("new-consult-submit")).to_be_disabled()
    await station.get_by_test_id("new-consult-national-id").fill(seeded_national_id(PATIENT))
    await station.get_by_test_id("new-consult-find").click()
    await expect(station.get_by_test_id("chosen-patient-name")).to_have_text(PATIENT)

    await station.get_by_test_id("centre-choice-imaging").click()
    await station.get_by_test_id("priority-choice-urgent").click()
    await station.get_by_test_id("new-consult-question").fill(QUESTION)
    await station.get_by_test_id("new-consult-summary").fill("体温 38.6℃，右下肺可闻及湿啰音。")
    await station.get_by_test_id("new-consult-submit").click()

    await expect(station).to_have_url(re.compile(rf"/consults/{UUID}$"))
    consult_url = station.url
    consult_id = consult_url.rsplit("/", 1)[-1]
    await state_is(station, "待认领")
    await expect(station.get_by_test_id("consult-priority")).to_have_text("加急")
    await expect(station.get_by_test_id("consult-title")).to_have_text(f"{PATIENT} · 影像中心")
    await expect(station.get_by_test_id("consult-question")).to_have_text(QUESTION)
    await expect(station.get_by_test_id("report-none")).to_contain_text("报告尚未签发")

    # -- the radiologist, in a second browser context ------------------------------------------
    centre_context, centre, centre_watch = await new_page(browser, live_server)
    await centre.goto("/")
    await sign_in(centre, "radiology")
    await expect(centre.get_by_test_id("home-specialist")).to_have_text("专科工作台")
    await expect(centre.get_by_test_id("shell")).to_have_attribute("data-feed", "live")

    worklist = centre.get_by_test_id("worklist-imaging")
    row = worklist.get_by_role("row").filter(has_text=PATIENT)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("加急")
    await expect(row).to_contain_text("城关镇卫生院")
    await expect(row.get_by_test_id("consult-state")).to_have_text("待认领")
    # The requesting station is online (its page holds the realtime channel).
    await expect(row.get_by_test_id("presence-dot")).to_have_attribute("data-online", "true")
    # The time left to the 30-minute target ticks down each second.
    countdown = row.get_by_test_id("countdown")
    await expect(countdown).to_have_text(re.compile(r"^剩余 (29|30):\d\d$"))
    await expect(countdown).to_have_attribute("data-overdue", "false")
    first_reading = await countdown.inner_text()
    await expect(countdown).not_to_have_text(first_reading)

    await row.get_by_test_id("worklist-claim").click()
    await expect(centre).to_have_url(consult_url)
    await state_is(centre, "诊断中")
    await expect(centre.get_by_test_id("consult-status-text")).to_contain_text("由您诊断中")
    requester_dot = centre.get_by_test_id("consult-requester").get_by_test_id("presence-dot")
    await expect(requester_dot).to_have_attribute("data-online", "true")

    # The report beside the case: the imaging form.
    editor = centre.get_by_test_id("report-editor")
    await expect(editor).to_be_visible()
    await editor.get_by_test_id("report-input-modality").click()
    await centre.get_by_role("option", name="DR", exact=True).click()
    await editor.get_by_test_id("report-input-body-part").fill("胸部正位")
    await editor.get_by_test_id("report-input-findings").fill(FINDINGS)
    await editor.get_by_test_id("report-input-impression").fill(IMPRESSION)
    await editor.get_by_test_id("report-input-recommendation").fill(RECOMMENDATION)
    await expect(editor.get_by_test_id("report-dirty")).to_have_text("有未保存的修改")
    await editor.get_by_test_id("report-save").click()
    await expect(editor.get_by_test_id("report-dirty")).to_have_text("第 1 版草稿已保存")

    # Signing asks first, saying that it freezes the report.
    await editor.get_by_test_id("report-sign").click()
    sign_dialog = centre.get_by_role("dialog", name="签发报告")
    await expect(sign_dialog).to_contain_text("冻结")
    await sign_dialog.get_by_test_id("sign-confirm").click()
    await expect(sign_dialog).to_be_hidden()

    signed = centre.get_by_test_id("report-view")
    await expect(signed).to_have_attribute("data-report-state", "signed")
    await expect(signed.get_by_test_id("report-state")).to_have_text("已签发")
    await expect(signed.get_by_test_id("report-impression")).to_have_text(IMPRESSION)
    await expect(signed.get_by_test_id("report-modality")).to_have_text("DR")
    await expect(signed.get_by_test_id("report-signer")).to_have_text("影像 王医生（我）")
    short_hash = signed.get_by_test_id("report-sha256")
    await expect(short_hash).to_have_text(re.compile(r"^[0-9a-f]{12}$"))
    await expect(centre.get_by_test_id("report-editor")).to_have_count(0)
    await expect(centre.get_by_test_id("report-amend")).to_be_visible()
    await state_is(centre, "已出报告")

    # The short hash is the start of the SHA-256 the server stored when signing.
    detail = await (await centre.request.get(f"/api/v1/consults/{consult_id}")).json()
    report_id = detail["reports"][0]["id"]
    report = await (await centre.request.get(f"/api/v1/reports/{report_id}")).json()
    assert report["sha256"].startswith(await short_hash.inner_text())

    # -- back at the station: the report arrives on the open page ----------------------------
    await station.bring_to_front()
    await state_is(station, "已出报告")
    assert station.url == consult_url  # no navigation, no reload
    arrived = station.get_by_test_id("report-view")
    await expect(arrived.get_by_test_id("report-findings")).to_have_text(FINDINGS)
    await expect(arrived.get_by_test_id("report-impression")).to_have_text(IMPRESSION)
    await expect(arrived.get_by_test_id("report-sha256")).to_have_text(
        await short_hash.inner_text()
    )
    await expect(arrived.get_by_test_id("report-critical")).to_have_count(0)
    assignee_dot = station.get_by_test_id("consult-assignee").get_by_test_id("presence-dot")
    await expect(assignee_dot).to_have_attribute("data-online", "true")
    # The results inbox counts it in the menu until it is acknowledged.
    await expect(station.get_by_test_id("menu-badge-inbox")).to_have_text("1")

    await station.get_by_test_id("consult-acknowledge").click()
    await state_is(station, "已确认")
    await expect(station.get_by_test_id("menu-badge-inbox")).to_have_count(0)
    await expect(station.get_by_test_id("consult-acknowledge")).to_have_count(0)
    timeline = station.get_by_test_id("consult-timeline")
    for step in ("创建申请", "提交申请", "认领", "签发报告", "确认收到"):
        await expect(timeline).to_contain_text(step)

    # My consults lists it as acknowledged.
    await station.get_by_test_id("menu-consults").click()
    listed = station.get_by_test_id("consult-list").get_by_role("row").filter(has_text=PATIENT)
    await expect(listed.get_by_test_id("consult-state")).to_have_text("已确认")

    # -- and at the centre, without a reload -----------------------------------------------------
    await centre.bring_to_front()
    await state_is(centre, "已确认")
    await expect(centre.get_by_test_id("consult-status-text")).to_contain_text("申请方已于")
    await centre.get_by_test_id("lang-en").click()
    await state_is(centre, "Acknowledged")
    await expect(centre.get_by_test_id("report-state")).to_have_text("Signed")

    # The case has left the worklist.
    await centre.get_by_test_id("menu-worklist").click()
    await expect(centre.get_by_test_id("worklist-imaging")).to_contain_text(
        "No cases on the worklist"
    )

    station_watch.check()
    centre_watch.check()
    # When the radiologist's last page closes, the station's open page sees them go offline.
    await station.goto(consult_url)
    assignee_dot = station.get_by_test_id("consult-assignee").get_by_test_id("presence-dot")
    await expect(assignee_dot).to_have_attribute("data-online", "true")
    await centre_context.close()
    await expect(assignee_dot).to_have_attribute("data-online", "false")
    station_watch.check()
    await station_context.close()
