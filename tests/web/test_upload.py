"""The station uploads studies to a consult from the browser, in resumable 4 MiB chunks.

城关镇卫生院 chooses three files for an imaging consult: a 9 MiB multi-frame image (three chunks),
a text file and a truncated DICOM file. The second chunk of the large file is cut off by the
test (``page.route`` aborts the request): the page waits, asks the server where the upload
stands, sends the rest and completes it; the archive then holds exactly the file's bytes. The
text file is refused in the browser without being sent, the truncated one by the server, each
with a clear message, in Chinese and then in English.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Request, Route, expect

from server.identity import make_national_id
from server.seed import PATIENTS, REGION
from tests.services import HuizhenProcess
from tests.web.studyfiles import write_multiframe, write_not_dicom, write_truncated
from tests.web.support import new_page, sign_in
from tests.web.test_video_call import Rest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

CHUNK = 4 * 1024 * 1024
CHUNK_URL = re.compile(r"/api/v1/uploads/([0-9a-f-]{36})\?offset=(\d+)$")
STATUS_URL = re.compile(r"/api/v1/uploads/([0-9a-f-]{36})$")


def national_id(name: str) -> str:
    for patient_name, birth, seq, _card, _sites in PATIENTS:
        if patient_name == name:
            return make_national_id(REGION, birth, seq)
    raise AssertionError(name)


async def open_consult(rest: Rest, centre: str, question: str) -> str:
    """A consult from 城关镇卫生院 for 张桂兰 (over the API: the consult form has its own test)."""
    await rest.login("chengguan")
    found = await rest.call("GET", "/api/v1/patients?name=张桂兰", "chengguan")
    consult = await rest.call(
        "POST",
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": found["items"][0]["id"], "centre": centre, "question": question},
    )
    return str(consult["id"])


async def test_resumable_upload_survives_a_cut_chunk_and_explains_refusals(
    live_server: HuizhenProcess, browser: Browser, tmp_path: Path
) -> None:
    patient_id = national_id("张桂兰")
    large = write_multiframe(tmp_path / "study" / "MF0001.dcm", 18, patient_id)
    assert large.stat().st_size > 2 * CHUNK
    text = write_not_dicom(tmp_path / "study" / "说明.txt")
    truncated = write_truncated(tmp_path / "study" / "CT0099.dcm", patient_id)

    async with aiohttp.ClientSession(base_url=live_server.url) as http:
        rest = Rest(http)
        cid = await open_consult(rest, "imaging", "多帧图像，请协助阅片。")

        context, page, watch = await new_page(browser, live_server)
        cut: list[str] = []
        sent: list[tuple[str, int]] = []
        asked: list[str] = []

        async def chunks(route: Route) -> None:
            match = CHUNK_URL.search(route.request.url)
            assert match is not None
            upload_id, offset = match.group(1), int(match.group(2))
            sent.append((upload_id, offset))
            if offset == CHUNK and not cut:
                cut.append(upload_id)
                await route.abort("connectionreset")
                return
            await route.continue_()

        def seen(request: Request) -> None:
            match = STATUS_URL.search(request.url)
            if match and request.method == "GET":
                asked.append(match.group(1))

        await page.route(CHUNK_URL, chunks)
        page.on("request", seen)
        try:
            await page.goto("/")
            await sign_in(page, "chengguan")
            await page.get_by_test_id("home-grassroots_doctor").wait_for()
            await page.goto(f"/consults/{cid}?tab=images")
            await expect(page.get_by_test_id("studies-none")).to_be_visible()

            await page.get_by_test_id("upload-files-input").set_input_files(
                [str(large), str(text), str(truncated)]
            )
            items = page.get_by_test_id("upload-item")
            await expect(items).to_have_count(3)
            big, note, broken = items.nth(0), items.nth(1), items.nth(2)
            await expect(big.get_by_test_id("upload-name")).to_have_text("MF0001.dcm")
            # The cut chunk is waited out and resumed from the server's offset.
            await expect(big).to_have_attribute("data-phase", "done", timeout=60_000)
            await expect(big.get_by_test_id("upload-phase")).to_have_text("已完成")
            await expect(note).to_have_attribute("data-phase", "failed")
            await expect(note.get_by_test_id("upload-error")).to_have_text(
                "不是 DICOM 文件（缺少 DICM 标识），未上传。"
            )
            await expect(broken).to_have_attribute("data-phase", "failed", timeout=30_000)
            await expect(broken.get_by_test_id("upload-error")).to_have_text(
                "DICOM 文件不完整（被截断），请重新导出后上传。"
            )
            await expect(page.get_by_test_id("upload-overall")).to_contain_text("3 / 3")

            # The same messages in English.
            await page.get_by_test_id("lang-en").click()
            await expect(note.get_by_test_id("upload-error")).to_have_text(
                "Not a DICOM file (no DICM marker); not uploaded."
            )
            await expect(broken.get_by_test_id("upload-error")).to_contain_text(
                "incomplete (truncated)"
            )
            await page.get_by_test_id("lang-zh").click()

            # The large file's upload: chunk 2 cut once, the offset asked, chunk 2 sent again.
            (upload_id,) = cut
            assert upload_id in asked
            mine = [offset for uid, offset in sent if uid == upload_id]
            assert mine == [0, CHUNK, CHUNK, 2 * CHUNK]
            # The text file never left the browser: two uploads were begun, not three.
            assert len({uid for uid, _ in sent}) == 2

            # The consult shows the new series (announced on the feed, re-read on upload).
            series = page.get_by_test_id("series")
            await expect(series).to_have_count(1)
            await expect(series).to_have_attribute("data-modality", "OT")
            await expect(series).to_contain_text("多帧图像")

            # The archive holds exactly the file's bytes.
            studies = await rest.call("GET", f"/api/v1/consults/{cid}/studies", "chengguan")
            (study,) = studies["items"]
            (one,) = study["series"]
            assert one["instance_count"] == 1
            path = (
                f"/dicomweb/studies/{study['study_uid']}/series/{one['series_uid']}"
                f"/instances/{one['first_instance_uid']}"
            )
            headers = {
                "Authorization": f"Bearer {rest.tokens['chengguan']}",
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
            }
            async with http.get(path, headers=headers) as resp:
                assert resp.status == 200
                body = await resp.read()
            assert large.read_bytes() in body

            # The cut request and the server's refusal of the truncated file are the only errors.
            expected = ("ERR_CONNECTION_RESET", "status of 422")
            watch.problems = [p for p in watch.problems if not any(e in p for e in expected)]
            watch.check()
        finally:
            await context.close()
