"""A signed report as a PDF: the route, its visibility, and that the Chinese text really is there.

The text is read back with Poppler's ``pdftotext`` and the fonts with ``pdffonts`` (Debian's
``poppler-utils``, installed by .ci/run), so these tests see what a viewer sees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import uuid
from typing import Any

import pytest

from server.consultflow import Priority
from server.models import Centre, Sex
from server.pdffonts import load_fonts
from server.printable import Printable
from server.printout import render
from tests.helpers import Api

IMAGING_FINDINGS = "右下肺见斑片状高密度影，边界模糊，心影大小形态正常。"
IMAGING_REPORT = {
    "content": {
        "kind": "imaging",
        "modality": "DX",
        "body_part": "胸部",
        "technique": "胸部正位 DR 摄影。",
        "findings": IMAGING_FINDINGS,
        "impression": "右下肺炎。",
        "recommendation": "抗感染治疗后两周复查胸片。",
        "referral": {"direction": "up", "green_channel": False, "note": "转呼吸内科"},
    }
}
ECG_REPORT = {
    "content": {
        "kind": "ecg",
        "measurements": {
            "hr_bpm": 78,
            "pr_ms": 160,
            "qrs_ms": 92,
            "qt_ms": 380,
            "qtc_ms": 433,
            "qtc_formula": "bazett",
            "qrs_axis_deg": 40,
        },
        "rhythm_statements": ["窦性心律", "ST-T 改变"],
        "impression": "窦性心律，ST-T 改变。",
    }
}
LAB_REPORT = {
    "content": {
        "kind": "lab",
        "results": [
            {
                "code": "K",
                "name": "血钾",
                "value": "2.5",
                "unit": "mmol/L",
                "reference_range": "3.5-5.5",
                "flag": "critical_low",
            },
            {
                "code": "GLU",
                "name": "葡萄糖",
                "value": "6.8",
                "unit": "mmol/L",
                "reference_range": "3.9-6.1",
                "flag": "high",
            },
        ],
        "impression": "低钾血症。",
        "critical_note": "已电话通知申请医生",
    }
}


# -- helpers ----------------------------------------------------------------------------------


def pdf_text(pdf: bytes) -> str:
    """The text Poppler extracts, without whitespace (lines wrap wherever the layout says)."""
    out = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-", "-"], input=pdf, capture_output=True, check=True
    )
    return re.sub(r"\s+", "", out.stdout.decode())


def pdf_fonts(pdf: bytes) -> list[list[str]]:
    """``pdffonts`` rows: name, type…, emb, sub, uni, object id, generation."""
    out = subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, check=True)
    return [line.split() for line in out.stdout.decode().splitlines()[2:] if line.strip()]


def pdf_pages(pdf: bytes) -> int:
    out = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True, check=True)
    found = re.search(r"^Pages:\s+(\d+)", out.stdout.decode(), re.M)
    assert found is not None
    return int(found.group(1))


async def fetch_pdf(
    api: Api, report_id: str, user: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = await api.headers(user) if user else {}
    resp = await api.client.get(f"/api/v1/reports/{report_id}/pdf", headers=headers)
    return resp.status, dict(resp.headers), await resp.read()


async def signed_report(
    api: Api,
    centre: str,
    specialist: str,
    report: dict[str, Any],
    *,
    sign: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A chengguan consult for 张桂兰 to ``centre``, claimed and reported (signed or draft)."""
    status, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    assert status == 200
    status, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": centre,
            "priority": "urgent",
            "question": "胸闷气短两天，请协助诊断",
            "clinical_summary": "既往高血压病史十年。",
        },
    )
    assert status == 201, consult
    cid = consult["id"]
    assert (await api.post(f"/api/v1/consults/{cid}/claim", specialist, json={}))[0] == 200
    status, draft = await api.post(f"/api/v1/consults/{cid}/reports", specialist, json=report)
    assert status == 201, draft
    if not sign:
        return consult, draft
    status, signed = await api.post(f"/api/v1/reports/{draft['id']}/sign", specialist)
    assert status == 200, signed
    return consult, signed


# -- through the API --------------------------------------------------------------------------


async def test_signed_imaging_report_exports_with_extractable_chinese(api: Api) -> None:
    consult, report = await signed_report(api, "imaging", "radiology", IMAGING_REPORT)
    status, headers, pdf = await fetch_pdf(api, report["id"], "chengguan")
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    short = consult["id"][:8]
    assert headers["Content-Disposition"] == f'inline; filename="report-{short}-v1.pdf"'
    assert headers["Cache-Control"] == "no-store"
    assert pdf.startswith(b"%PDF-")

    text = pdf_text(pdf)
    for expected in (
        "县人民医院",
        "远程影像中心",
        "诊断报告",
        "张桂兰",
        "女",
        re.sub(r"\s+", "", IMAGING_FINDINGS),
        "右下肺炎。",
        "抗感染治疗后两周复查胸片。",
        "胸闷气短两天，请协助诊断",
        "城关镇卫生院",
        "城关镇刘医生",  # the requesting doctor
        "影像王医生",  # the signer
        "上转",
        report["sha256"],
        "北京时间",
        "第1页/共1页",
        short,
    ):
        assert expected in text, expected

    # The national ID is printed masked only.
    status, patient = await api.get(f"/api/v1/patients/{consult['patient']['id']}", "chengguan")
    assert status == 200
    national_id = patient["national_id"]
    assert national_id not in text
    assert national_id[:6] + "*" * 11 + national_id[-1] in text

    # Signed at, in Beijing time.
    signed_at = dt.datetime.fromisoformat(report["signed_at"]).astimezone(
        dt.timezone(dt.timedelta(hours=8))
    )
    assert signed_at.strftime("%Y-%m-%d%H:%M:%S") in text

    # Every font is embedded, and the Chinese one is a CJK TrueType subset.
    fonts = pdf_fonts(pdf)
    assert fonts, "no fonts"
    assert all(row[-5] == "yes" for row in fonts), fonts  # the emb column
    assert any(
        re.search(r"CJK|WenQuanYi|Hei|Song|Ming", row[0]) and row[-5] == "yes" for row in fonts
    ), fonts

    # The centre and the coordinator may print it too; the read is audited.
    for user in ("radiology", "coordinator"):
        assert (await fetch_pdf(api, report["id"], user))[0] == 200
    status, audit = await api.get(
        f"/api/v1/audit?action=report.pdf&object_id={report['id']}", "supervisor"
    )
    assert status == 200
    assert {e["actor_username"] for e in audit["items"]} == {
        "chengguan",
        "radiology",
        "coordinator",
    }
    assert all(e["patient_id"] == consult["patient"]["id"] for e in audit["items"])


async def test_ecg_and_lab_reports_print_their_tables(api: Api) -> None:
    _, ecg = await signed_report(api, "ecg", "ecg", ECG_REPORT)
    status, _, pdf = await fetch_pdf(api, ecg["id"], "chengguan")
    assert status == 200
    text = pdf_text(pdf)
    for expected in ("远程心电中心", "心率", "QTc(Bazett)", "433", "380", "窦性心律", "ST-T改变"):
        assert expected in text, expected
    assert "危急值" not in text

    _, lab = await signed_report(api, "lab", "lab", LAB_REPORT)
    assert lab["critical"] is True
    status, _, pdf = await fetch_pdf(api, lab["id"], "chengguan")
    assert status == 200
    text = pdf_text(pdf)
    for expected in (
        "远程检验中心",
        "检验报告",
        "危急值CRITICALVALUE",
        "已电话通知申请医生",
        "血钾",
        "2.5",
        "mmol/L",
        "3.5-5.5",
        "危急低值",
        "葡萄糖",
        "偏高",
        lab["sha256"],
    ):
        assert expected in text, expected


async def test_only_signed_reports_export_and_drafts_stay_in_the_centre(api: Api) -> None:
    _, draft = await signed_report(api, "imaging", "radiology", IMAGING_REPORT, sign=False)
    status, answer = await api.get(f"/api/v1/reports/{draft['id']}/pdf", "radiology")
    assert status == 409
    assert answer["code"] == "conflict"
    assert "signed" in answer["detail"]
    assert answer["report_state"] == "draft"
    # The requesting station does not learn that a draft exists.
    assert (await api.get(f"/api/v1/reports/{draft['id']}/pdf", "chengguan"))[0] == 404


async def test_other_stations_and_anonymous_callers_get_nothing(api: Api) -> None:
    _, report = await signed_report(api, "imaging", "radiology", IMAGING_REPORT)
    status, answer = await api.get(f"/api/v1/reports/{report['id']}/pdf", "baji")
    assert status == 404
    assert answer["code"] == "not-found"
    status, answer = await api.get(f"/api/v1/reports/{report['id']}/pdf")
    assert status == 401
    assert answer["code"] == "unauthenticated"
    assert (await api.get(f"/api/v1/reports/{uuid.uuid4()}/pdf", "radiology"))[0] == 404
    assert (await api.get("/api/v1/reports/not-a-uuid/pdf", "radiology"))[0] == 404
    # Roles without consult.read: 403 before anything is looked up.
    assert (await api.get(f"/api/v1/reports/{report['id']}/pdf", "supervisor"))[0] == 403


async def test_an_amendment_prints_as_an_amended_version(api: Api) -> None:
    consult, v1 = await signed_report(api, "imaging", "radiology", IMAGING_REPORT)
    status, v2 = await api.post(f"/api/v1/reports/{v1['id']}/amend", "radiology")
    assert status == 201
    # While the amendment is a draft, v1 still prints and v2 does not.
    assert (await fetch_pdf(api, v1["id"], "chengguan"))[0] == 200
    assert (await api.get(f"/api/v1/reports/{v2['id']}/pdf", "radiology"))[0] == 409
    status, v2 = await api.post(f"/api/v1/reports/{v2['id']}/sign", "radiology")
    assert status == 200
    status, headers, pdf = await fetch_pdf(api, v2["id"], "chengguan")
    assert status == 200
    assert headers["Content-Disposition"].endswith(f'filename="report-{consult["id"][:8]}-v2.pdf"')
    text = pdf_text(pdf)
    assert "更正报告" in text
    assert "amended" in text
    assert "第2版" in text
    assert v2["sha256"] in text
    assert v1["sha256"] not in text


async def test_concurrent_exports_are_all_whole(api: Api) -> None:
    _, report = await signed_report(api, "imaging", "radiology", IMAGING_REPORT)
    await api.headers("chengguan")
    results = await asyncio.gather(*(fetch_pdf(api, report["id"], "chengguan") for _ in range(4)))
    for status, _, pdf in results:
        assert status == 200
        text = pdf_text(pdf)
        assert "张桂兰" in text
        assert report["sha256"] in text


async def test_openapi_documents_the_pdf(api: Api) -> None:
    status, doc = await api.get("/api/v1/openapi.json")
    assert status == 200
    op = doc["paths"]["/api/v1/reports/{report_id}/pdf"]["get"]
    assert op["x-huizhen-action"] == "consult.read"
    assert "application/pdf" in op["responses"]["200"]["content"]
    assert {"401", "403", "404", "409"} <= set(op["responses"])


# -- the renderer alone -----------------------------------------------------------------------


def _printable(centre: Centre, content: dict[str, Any], **extra: Any) -> Printable:
    fields: dict[str, Any] = {
        "hospital": "县人民医院",
        "centre": centre,
        "centre_zh": "远程病理中心",
        "centre_en": "Remote pathology centre",
        "consult_id": uuid.uuid4(),
        "priority": Priority.ROUTINE,
        "question": "请协助诊断",
        "clinical_summary": "",
        "requester_institution": "城关镇卫生院",
        "requester_doctor": "城关镇 刘医生",
        "escalated_to": "",
        "submitted_at": dt.datetime(2026, 1, 5, 1, 0, tzinfo=dt.UTC),
        "patient_name": "孙小明",
        "patient_sex": Sex.MALE,
        "birth_date": dt.date(2025, 11, 20),
        "national_id_masked": "411625***********3",
        "version": 1,
        "content": content,
        "critical": False,
        "signer": "病理 孙医生",
        "signer_institution": "县人民医院",
        # 23:30 UTC is 07:30 the next day in Beijing.
        "signed_at": dt.datetime(2026, 1, 5, 23, 30, tzinfo=dt.UTC),
        "sha256": "0123456789abcdef" * 4,
    }
    fields.update(extra)
    return Printable(**fields)


def test_a_long_report_flows_onto_numbered_pages() -> None:
    long = "镜下见肿瘤细胞呈巢状排列，核大深染，可见病理性核分裂象。" * 60
    content = {
        "kind": "pathology",
        "specimen": "胃窦活检组织 3 块",
        "gross": "灰白色组织 3 块，直径 0.2-0.3 cm。",
        "microscopic": long + "\n<b>不是标记</b> & 保留原文",
        "diagnosis": "（胃窦）中分化腺癌。",
        "recommendation": "建议上级医院进一步治疗。",
    }
    pdf = render(_printable(Centre.PATHOLOGY, content))
    pages = pdf_pages(pdf)
    assert pages >= 2
    text = pdf_text(pdf)
    for n in range(1, pages + 1):
        assert f"第{n}页/共{pages}页" in text
    assert "（续）" in text  # the running header of later pages
    for expected in ("标本", "大体所见", "镜下所见", "病理诊断", "（胃窦）中分化腺癌。"):
        assert expected in text, expected
    assert "<b>不是标记</b>&保留原文" in text  # user text is text, not markup
    assert "1个月" in text  # an infant's age: months, on the day of signing
    assert "2026-01-0607:30:00" in text  # Beijing time


def test_symbols_the_font_lacks_are_spelled_out() -> None:
    fonts = load_fonts()
    content = {"kind": "consultation", "assessment": "体温 38.5℃，心率 110 次/分。"}
    text = pdf_text(render(_printable(Centre.CONSULTATION, content), fonts=fonts))
    assert ("38.5°C" if ord("℃") in fonts.substitutes else "38.5℃") in text


def test_without_a_cjk_truetype_font_it_falls_back_to_stsong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fonts = load_fonts(candidates=(("/nonexistent/font.ttc", 0),), mono=())
    assert not fonts.embedded
    assert fonts.body == "STSong-Light"
    assert "not embedded" in caplog.text
    pdf = render(_printable(Centre.CONSULTATION, {"kind": "consultation", "plan": "随访"}), fonts)
    # Named, not embedded (Poppler itself only shows it with the poppler-data language pack).
    assert b"/BaseFont /STSong-Light" in pdf
    assert b"/FontFile2" not in pdf


def test_this_machine_has_an_embeddable_cjk_font() -> None:
    """.ci/run installs fonts-wqy-microhei; without a TrueType CJK font PDFs would rely on the
    viewer's own Song face."""
    fonts = load_fonts()
    assert fonts.embedded, "install fonts-wqy-microhei (or another TrueType CJK font)"
