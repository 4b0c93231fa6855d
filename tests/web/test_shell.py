"""The web shell in real Chromium (Playwright): sign-in, the grassroots patient panel, the
supervisor's audit log, the language switch.

The server serves the built front end from ``web/dist``: run ``cd web && npm run build`` first
(``make test`` does). The browser fixture is in ``conftest.py``, the page helpers in ``support.py``.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.async_api import Browser, expect

from server.identity import make_national_id, mask_national_id
from tests.services import HuizhenProcess
from tests.web.support import new_page, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


async def test_grassroots_registers_and_supervisor_audits(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    national_id = make_national_id("411625", dt.date(1962, 3, 14), 123)
    name = "韩立新"
    masked = mask_national_id(national_id)

    # -- the village doctor -----------------------------------------------------------
    context, page, watch = await new_page(browser, live_server)
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login$"))
    await sign_in(page, "jiaji")

    await expect(page.get_by_test_id("home-grassroots_doctor")).to_have_text("基层工作站")
    await expect(page.get_by_test_id("header-institution")).to_have_text("贾集村卫生室")
    await expect(page.get_by_test_id("home-institution")).to_have_text("贾集村卫生室")
    await expect(page.get_by_test_id("role-grassroots_doctor")).to_have_text("基层医生")
    await expect(page.get_by_test_id("my-consults")).to_contain_text("暂无会诊申请")

    # The registry: a name prefix finds the seeded patient, with the ID masked in the table.
    panel = page.get_by_test_id("patient-panel")
    await panel.get_by_label("身份证号或姓名").fill("王")
    await panel.get_by_test_id("patient-search").click()
    table = panel.get_by_test_id("patient-table")
    seeded = table.get_by_role("row").filter(has_text="王秀英")
    await expect(seeded).to_have_count(1)
    await expect(seeded.get_by_test_id("masked-id")).to_have_text(re.compile(r"^\d{6}\*{11}[\dX]$"))

    # An unknown national ID finds nobody.
    await panel.get_by_label("身份证号或姓名").fill(national_id)
    await panel.get_by_test_id("patient-search").click()
    await expect(table).to_contain_text("未找到匹配的患者")

    # Register: the form checks the check character before the server sees it.
    await panel.get_by_test_id("patient-register-open").click()
    dialog = page.get_by_role("dialog", name="登记患者")
    await expect(dialog).to_be_visible()
    id_field = dialog.get_by_label("身份证号")
    await expect(id_field).to_have_value(national_id)  # carried over from the search box
    wrong_check = national_id[:17] + ("0" if national_id[17] != "0" else "1")
    await id_field.fill(wrong_check)
    await dialog.get_by_label("姓名").fill(name)  # leaving the ID field validates it
    await expect(dialog).to_contain_text("校验位不符")
    await id_field.fill(national_id)
    await expect(dialog.get_by_test_id("register-derived")).to_have_text(
        "由身份证号得出：男，1962-03-14出生"
    )
    await dialog.get_by_role("button", name="登记", exact=True).click()
    await expect(dialog).to_be_hidden()

    row = table.get_by_role("row").filter(has_text=name)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(masked)
    await expect(row).to_contain_text("贾集村卫生室")
    await expect(table).not_to_contain_text(national_id)

    # The detail view shows the full number.
    await row.get_by_text(name).click()
    await expect(page).to_have_url(re.compile(r"/patients/[0-9a-f-]{36}$"))
    await expect(page.get_by_test_id("patient-national-id")).to_have_text(national_id)

    # Sign out: back to the sign-in page, and the session is gone for real.
    await page.get_by_test_id("sign-out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.goto("/patients")
    await expect(page).to_have_url(re.compile(r"/login\?redirect=(%2F|/)patients$"))
    watch.check()
    await context.close()

    # -- the supervisor, in a fresh browser context ------------------------------------
    context, page, watch = await new_page(browser, live_server)
    await page.goto("/")
    await sign_in(page, "supervisor")
    heading = page.get_by_test_id("home-supervisor")
    await expect(heading).to_have_text("综合监管")

    audit = page.get_by_test_id("audit-table")
    created = audit.get_by_role("row").filter(has_text="jiaji").filter(has_text="patient.create")
    await expect(created).to_have_count(1)
    await expect(created).to_contain_text("登记患者")
    await expect(created).to_contain_text("成功")

    # Filter to jiaji's sign-ins only.
    await page.get_by_label("操作人").fill("jiaji")
    await page.get_by_test_id("audit-action").click()
    await page.get_by_role("option", name="登录 (auth.login)").click()
    await page.get_by_test_id("audit-apply").click()
    await expect(created).to_have_count(0)
    rows = audit.locator("tbody tr")
    await expect(rows.first).to_contain_text("auth.login")
    for text in await rows.all_inner_texts():
        assert "jiaji" in text
        assert "auth.login" in text

    # English: the heading and the table follow, and the choice is remembered.
    await page.get_by_test_id("lang-en").click()
    await expect(heading).to_have_text("Supervision")
    await expect(page.get_by_test_id("side-menu")).to_contain_text("Audit log")
    await expect(rows.first).to_contain_text("Sign-in")
    await page.reload()
    await expect(heading).to_have_text("Supervision")
    assert await page.evaluate("localStorage.getItem('huizhen.locale')") == "en"
    assert await page.evaluate("document.documentElement.lang") == "en"
    watch.check()
    await context.close()


async def test_wrong_password_is_shown_on_the_sign_in_page(
    live_server: HuizhenProcess, browser: Browser
) -> None:
    context, page, watch = await new_page(browser, live_server)
    await page.goto("/login")
    await sign_in(page, "jiaji", "not-the-password")

    error = page.get_by_test_id("login-error")
    await expect(error).to_contain_text("用户名或密码错误")
    await expect(error.get_by_test_id("problem-request-id")).to_contain_text(
        re.compile(r"请求编号: \S+")
    )
    await expect(page).to_have_url(re.compile(r"/login$"))
    await expect(page.get_by_label("密码")).to_have_value("")

    await page.get_by_test_id("lang-en").click()
    await expect(error).to_contain_text("Wrong username or password")
    await expect(page.get_by_test_id("login-submit")).to_have_text("Sign in")
    watch.check()
    await context.close()


async def test_deep_link_and_unknown_route(live_server: HuizhenProcess, browser: Browser) -> None:
    context, page, watch = await new_page(browser, live_server)
    # An unknown client route: the SPA's 404 page, signed in or not.
    await page.goto("/no/such/page")
    await expect(page.get_by_test_id("not-found")).to_have_text("页面不存在")

    # A deep link while signed out comes back after sign-in (history-mode routing).
    await page.goto("/audit")
    await expect(page).to_have_url(re.compile(r"/login\?redirect=(%2F|/)audit$"))
    await sign_in(page, "supervisor")
    await expect(page).to_have_url(re.compile(r"/audit$"))
    await expect(page.get_by_test_id("audit-table")).to_contain_text("auth.login")
    watch.check()
    await context.close()
