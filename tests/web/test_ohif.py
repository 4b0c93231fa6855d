"""OHIF Viewer 3, unchanged, against our /dicomweb.

The viewer is the prebuilt dist of npm's ``@ohif/app`` (``make ohif`` fetches the version pinned by
``tests/ohif/ohif-app.sha512``), served as static files from another origin on 127.0.0.1, as a
hospital would host it apart from Huizhen. Only its ``app-config.js`` is ours, as every OHIF site
writes its own: one DICOMweb data source whose qidoRoot and wadoRoot are our ``/dicomweb`` and
whose wadoUriRoot is our ``/wado``, and the bearer token of a station, which OHIF puts in the
Authorization header of every request through its user authentication service (OIDC at a site
that has it). Every request crosses origins, and that header makes each one preflighted.

城关镇卫生院 stores a CT series of 张三 (three 512² slices of the phantom in
``tests/web/studyfiles.py``) and one slice of 李四 over STOW-RS. OHIF's study list shows both with
the Chinese names intact; the patient filter finds 张三 by ``张`` and nothing by ``王``. Opening the
study in the basic viewer draws the CT in the viewport at the DICOM window (40/400): air and lungs
black, soft tissue grey, bone white, where the phantom has them, and the mouse wheel moves through
the slices. No request fails, nothing is logged as an error and nothing leaves 127.0.0.1.

The viewer runs with three data-source configurations: the one a Huizhen site should use, OHIF's
own shipped configuration with only the addresses changed, and WADO-URI instead of WADO-RS for the
images. OHIF's shipped configuration fetches thumbnails from our ``…/thumbnail?viewport=256,256``
(it was refused with 422 until the thumbnail resources took ``viewport`` and ``accept``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pydicom
import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    Route,
    expect,
)
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.conftest import live_env
from tests.services import ROOT, HuizhenProcess
from tests.test_dicomweb import STOW_TYPE, multipart
from tests.web.studyfiles import SIZE, write_ct_series
from tests.web.test_video_call import Rest

VIEWER = ROOT / "tests" / "ohif" / "viewer"
PATIENT, OTHER_PATIENT = "张三", "李四"
SLICES = 3


# The data source a Huizhen site configures (as OHIF documents it for dcm4chee and Orthanc).
SITE: dict[str, Any] = {
    "qidoSupportsIncludeField": True,
    "imageRendering": "wadors",
    "thumbnailRendering": "wadors",
    "enableStudyLazyLoad": True,
    "supportsFuzzyMatching": False,
    "supportsWildcard": True,
    "omitQuotationForMultipartRequest": True,
    "bulkDataURI": {"enabled": True},
}
# OHIF 3.13's dist/app-config.js as shipped (its public demo data source), addresses aside.
SHIPPED: dict[str, Any] = {
    "qidoSupportsIncludeField": False,
    "imageRendering": "wadors",
    "thumbnailRendering": "thumbnail",
    "thumbnailRequestStrategy": "fetch",
    "enableStudyLazyLoad": True,
    "supportsFuzzyMatching": False,
    "supportsWildcard": True,
    "staticWado": True,
    "singlepart": "bulkdata,video",
    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
    "omitQuotationForMultipartRequest": True,
}
CONFIGURATIONS = [
    pytest.param(SITE, id="site"),
    pytest.param(SHIPPED, id="ohif-shipped"),
    pytest.param({**SITE, "imageRendering": "wadouri"}, id="wado-uri"),
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def app_config(huizhen: str, token: str, source: dict[str, Any]) -> str:
    """An ``app-config.js``: OHIF's window.config, a function that gets OHIF's services."""
    configuration = {
        "friendlyName": "会诊 Huizhen",
        "name": "huizhen",
        "qidoRoot": f"{huizhen}/dicomweb",
        "wadoRoot": f"{huizhen}/dicomweb",
        "wadoUriRoot": f"{huizhen}/wado",
        **source,
    }
    authorization = json.dumps(f"Bearer {token}")
    return f"""window.config = ({{ servicesManager }}) => ({{
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {{}},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  defaultDataSourceName: 'huizhen',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'huizhen',
      configuration: {{
        ...{json.dumps(configuration, ensure_ascii=False)},
        // OHIF asks its user authentication service for the Authorization header (OIDC sets it
        // at sites that have an identity provider); here the station's bearer token.
        onConfiguration: (configuration) => {{
          servicesManager.services.userAuthenticationService.setServiceImplementation({{
            getAuthorizationHeader: () => ({{ Authorization: {authorization} }}),
          }})
          return configuration
        }},
      }},
    }},
  ],
}})
"""


@dataclass
class ViewerSite:
    """OHIF's dist on its own origin; ``app-config.js`` is set once the token is known."""

    url: str = ""
    config: str = ""


@pytest.fixture
def viewer_dist() -> Path:
    if not (VIEWER / "index.html").is_file():
        pytest.fail("OHIF's dist is not installed: run `make ohif`")
    return VIEWER


@pytest.fixture
async def viewer_site(viewer_dist: Path) -> AsyncIterator[ViewerSite]:
    site = ViewerSite()

    async def config(request: web.Request) -> web.Response:
        assert site.config, "app-config.js asked for before the test wrote it"
        return web.Response(text=site.config, content_type="text/javascript", charset="utf-8")

    async def static(request: web.Request) -> web.StreamResponse:
        path = (viewer_dist / request.match_info["tail"]).resolve()
        if not path.is_relative_to(viewer_dist) or not path.is_file():
            path = viewer_dist / "index.html"  # a single-page application: /viewer?…
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/app-config.js", config)
    app.router.add_get("/{tail:.*}", static)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    site.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield site
    finally:
        await runner.cleanup()


@pytest.fixture
def huizhen(tmp_path: Path, database_url: str, viewer_site: ViewerSite) -> Iterator[HuizhenProcess]:
    """``huizhen serve`` that lets the viewer's origin call DICOMweb."""
    server = HuizhenProcess(
        env=live_env(tmp_path, database_url, HUIZHEN_CORS_ORIGINS=viewer_site.url)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def store(
    http: aiohttp.ClientSession, token: str, folder: Path, name: str, slices: int
) -> pydicom.Dataset:
    """A new CT series of patient `name` over STOW-RS; its first slice's header."""
    paths = write_ct_series(folder, slices, f"OHIF-{folder.name}")
    parts = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName = name
        ds.save_as(path, enforce_file_format=True)
        parts.append(path.read_bytes())
    async with http.post(
        "/dicomweb/studies",
        data=io.BytesIO(multipart(*parts)),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": STOW_TYPE,
            "Accept": "application/dicom+json",
        },
    ) as resp:
        assert resp.status == 200, await resp.text()
    return pydicom.dcmread(paths[0], stop_before_pixels=True)


class Watch:
    """What the viewer did: console errors, failed requests, error answers, requests that would
    have left 127.0.0.1 (refused), and the DICOMweb and WADO-URI requests it made."""

    def __init__(self, page: Page, huizhen: str) -> None:
        self.huizhen = huizhen
        self.errors: list[tuple[str, str]] = []  # (what, URL it concerns)
        self.outside: list[str] = []
        self.calls: list[str] = []
        self.aborted: list[str] = []  # cancelled by the page (not errors)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append((f"page error: {error}", "")))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    async def keep_local(self, route: Route) -> None:
        self.outside.append(route.request.url)
        await route.abort()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append((f"console error: {message.text}", message.location.get("url", "")))

    def _failed(self, request: Request) -> None:
        if request.failure == "net::ERR_ABORTED":
            # Cancelled by the page itself: OHIF aborts the study list's thumbnail fetches when
            # it moves on to the viewer. A server that fails shows as a status or a reset.
            self.aborted.append(request.url)
            return
        self.errors.append(
            (f"failed: {request.method} {request.url} {request.failure}", request.url)
        )

    def _response(self, response: Response) -> None:
        url = response.request.url
        if url.startswith(self.huizhen):
            self.calls.append(url.removeprefix(self.huizhen))
            if response.status >= 400:
                self.errors.append((f"{response.status} {response.request.method} {url}", url))

    def check(self) -> None:
        assert self.outside == []
        assert [what for what, _url in self.errors] == []


# The viewport's canvas: the share of lit pixels and the number of distinct grey levels.
CANVAS_STATS = """(c) => {
  if (!c.width || !c.height) return null
  const t = document.createElement('canvas')
  t.width = c.width
  t.height = c.height
  const ctx = t.getContext('2d')
  ctx.drawImage(c, 0, 0)
  const d = ctx.getImageData(0, 0, t.width, t.height).data
  let lit = 0
  const levels = new Set()
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] > 16) lit++
    levels.add(d[i])
  }
  return { lit: lit / (d.length / 4), levels: levels.size }
}"""
# The grey drawn at image points [[x, y], …] of the 512² slice, which OHIF fits to the canvas
# (scaled to its shorter side, centred).
GREYS_AT = """(c, [points, size]) => {
  const t = document.createElement('canvas')
  t.width = c.width
  t.height = c.height
  const ctx = t.getContext('2d')
  ctx.drawImage(c, 0, 0)
  const s = Math.min(c.width, c.height) / size
  return points.map(([x, y]) => ctx.getImageData(
    Math.round(c.width / 2 + (x + 0.5 - size / 2) * s),
    Math.round(c.height / 2 + (y + 0.5 - size / 2) * s), 1, 1).data[0])
}"""
# OHIF's basic viewer mode, as its zh-CN translation names it.
BASIC_VIEWER = "基础查看器"
C = SIZE // 2
# Where the phantom has (studyfiles._phantom) air, a lung, soft tissue and bone, on every slice.
BLACK = [(20, 20), (C - 95, C), (C + 95, C)]  # air outside the body; both lungs
GREY = [(C, C - 60), (C - 208, C)]  # soft tissue between the lungs; beside the ring
WHITE = [(C, C + 120), (C, C - 152)]  # the spine; the bony ring at the front
# Just inside the edge of the left lung on the last slice (half-width 80), outside it on the
# first (70): black on one slice, grey on another.
LUNG_EDGE = (C - 95 + 78, C)


async def greys(canvas: Locator, points: list[tuple[int, int]]) -> list[int]:
    found: list[int] = await canvas.evaluate(GREYS_AT, [points, SIZE])
    return found


@pytest.mark.parametrize("source", CONFIGURATIONS)
async def test_ohif_lists_and_draws_our_ct(
    source: dict[str, Any],
    huizhen: HuizhenProcess,
    viewer_site: ViewerSite,
    browser: Browser,
    tmp_path: Path,
) -> None:
    async with aiohttp.ClientSession(base_url=huizhen.url) as http:
        token = await Rest(http).login("chengguan")
        ct = await store(http, token, tmp_path / "zhang", PATIENT, SLICES)
        await store(http, token, tmp_path / "li", OTHER_PATIENT, 1)
    viewer_site.config = app_config(huizhen.url, token, source)

    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    watch = Watch(page, huizhen.url)
    await context.route(lambda url: not url.startswith("http://127.0.0.1:"), watch.keep_local)
    try:
        # The study list: both patients, their names as stored.
        await page.goto(viewer_site.url + "/")
        zhang = page.get_by_text(PATIENT, exact=True)
        li = page.get_by_text(OTHER_PATIENT, exact=True)
        await expect(zhang).to_be_visible(timeout=60_000)  # a cold start of a 20 MB bundle
        await expect(li).to_be_visible()
        assert any(call.startswith("/dicomweb/studies?") for call in watch.calls)

        # The patient filter is a QIDO-RS search, PatientName=*张*, answered by our server.
        patient_filter = page.locator("input").first  # the Patient column's
        for typed, listed, gone in (("张", zhang, li), ("王", None, zhang), ("", li, None)):
            wanted = f"PatientName=*{quote(typed)}*" if typed else "studies?limit="
            async with page.expect_response(re.compile(re.escape(wanted))) as searched:
                await patient_filter.fill(typed)
            assert (await searched.value).status == 200
            if gone is not None:
                await expect(gone).to_have_count(0)
            if listed is not None:
                await expect(listed).to_be_visible()

        # Open the study: the series appears in the study browser, the CT in the viewport.
        await zhang.click()
        await page.get_by_role("button", name=BASIC_VIEWER).click()
        await page.wait_for_url(f"**/viewer?*StudyInstanceUIDs={ct.StudyInstanceUID}*")
        await expect(page.get_by_text("胸部 CT 平扫").first).to_be_visible()
        canvas = page.locator("[data-cy=viewport-pane] canvas.cornerstone-canvas").first
        await expect(canvas).to_be_visible()
        await page.wait_for_function(
            f"(c) => {{ const s = ({CANVAS_STATS})(c); return s && s.lit > 0.1 && s.levels > 8 }}",
            arg=await canvas.element_handle(),
            timeout=30_000,
        )
        black, grey, white = [await greys(canvas, p) for p in (BLACK, GREY, WHITE)]
        assert all(v < 30 for v in black), black
        assert all(60 < v < 200 for v in grey), grey
        assert all(v > 230 for v in white), white

        # The overlay shows the window from the metadata; the wheel moves through the slices,
        # each with its own lungs (wider on the slice of the highest instance number).
        overlay = page.locator("[data-cy=viewport-overlay-bottom-left]")
        await expect(overlay).to_have_text(re.compile(r"W:\s*400\s*L:\s*40"))
        position = page.locator("[data-cy=viewport-overlay-bottom-right]")
        box = await canvas.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        shown: list[int] = []
        for index in range(1, SLICES + 1):
            await expect(position).to_have_text(re.compile(rf"I:\d+ \({index}/{SLICES}\)"))
            found = re.search(r"I:(\d+)", await position.inner_text())
            assert found is not None
            shown.append(instance := int(found[1]))
            lung = "< 30" if instance == SLICES else "> 60"
            try:
                await page.wait_for_function(
                    f"(c) => ({GREYS_AT})(c, [[{list(LUNG_EDGE)}], {SIZE}])[0] {lung}",
                    arg=await canvas.element_handle(),
                    timeout=10_000,
                )
            except PlaywrightTimeout:
                edge = await greys(canvas, [LUNG_EDGE])
                pytest.fail(f"instance {instance}: grey {edge} at the lung's edge, not {lung}")
            await page.mouse.wheel(0, 120)
        assert sorted(shown) == list(range(1, SLICES + 1)), shown

        # Every image came from our server, the way the configuration says.
        if source["imageRendering"] == "wadouri":
            pixels = [c for c in watch.calls if c.startswith("/wado?requestType=WADO&")]
        else:
            pixels = [c for c in watch.calls if "/frames/1" in c]
        assert len(pixels) >= SLICES, watch.calls
        if source["thumbnailRendering"] == "thumbnail":  # fetched from us, not drawn locally
            assert any("/thumbnail?viewport=256" in c for c in watch.calls), watch.calls
        watch.check()
    finally:
        await context.close()
