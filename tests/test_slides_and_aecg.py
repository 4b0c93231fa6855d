"""Whole-slide tiles for the pathology centre, and HL7 aECG files attached to ECG consults."""

from __future__ import annotations

import io

import pydicom
from PIL import Image

from imaging.ecg import read_ecg
from tests.helpers import Api
from tests.imaging import wsifiles
from tests.imaging.aecgfiles import build_aecg
from tests.imaging.dicomfiles import bundled
from tests.test_consults import _open
from tests.test_dicomweb import multipart, stow


async def test_slide_pyramid_and_tiles(api: Api) -> None:
    files = wsifiles.build_wsi()
    status, body = await stow(api, "chengguan", multipart(*(f.data for f in files)))
    assert status == 200, body
    base = f"/api/v1/slides/{wsifiles.STUDY_UID}/{wsifiles.SERIES_UID}"
    status, pyramid = await api.get(base, "chengguan")
    assert status == 200, pyramid
    assert [(lv["width"], lv["tiles_across"]) for lv in pyramid["levels"]] == [
        (1024, 4),
        (512, 2),
        (256, 1),
    ]
    assert {a["kind"] for a in pyramid["associated"]} == {"LABEL", "THUMBNAIL"}

    for level, column, row in ((0, 3, 2), (1, 0, 1), (2, 0, 0)):
        resp = await api.client.get(
            f"{base}/tiles/{level}/{column}/{row}", headers=await api.headers("chengguan")
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"
        image = Image.open(io.BytesIO(await resp.read())).convert("RGB")
        assert image.size == (wsifiles.TILE, wsifiles.TILE)
        got = image.getpixel((128, 128))
        want = wsifiles.tile_colour(level, column, row)
        assert isinstance(got, tuple)
        assert all(abs(g - w) < 12 for g, w in zip(got, want, strict=True)), (got, want)

    missing_column, missing_row = next(iter(wsifiles.MISSING))
    for path in (
        f"{base}/tiles/{wsifiles.SPARSE_LEVEL}/{missing_column}/{missing_row}",  # sparse gap
        f"{base}/tiles/0/4/0",  # outside the grid
        f"{base}/tiles/3/0/0",  # no such level
    ):
        status, problem = await api.get(path, "chengguan")
        assert status == 404, path
        assert problem["code"] == "not-found"
    status, _ = await api.get(base, "baji")
    assert status == 404
    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    assert (await stow(api, "chengguan", multipart(bundled("CT_small.dcm").read_bytes())))[0] == 200
    status, problem = await api.get(
        f"/api/v1/slides/{ct.StudyInstanceUID}/{ct.SeriesInstanceUID}", "chengguan"
    )
    assert status == 404  # a CT is not a slide
    assert "whole-slide" in problem["detail"]


async def test_an_attached_aecg_reads_like_a_dicom_ecg(api: Api) -> None:
    consult = await _open(api, centre="ecg")
    document = build_aecg(read_ecg(bundled("waveform_ecg.dcm")))
    resp = await api.client.post(
        f"/api/v1/consults/{consult['id']}/attachments",
        params={"filename": "ecg.xml", "kind": "aecg"},
        data=document,
        headers={**await api.headers("chengguan"), "Content-Type": "application/xml"},
    )
    assert resp.status == 201, await resp.text()
    attachment = (await resp.json())["id"]
    status, ecg = await api.get(f"/api/v1/attachments/{attachment}/ecg", "chengguan")
    assert status == 200, ecg
    assert len(ecg["leads"]) == 12
    assert 55 < ecg["computed"]["heart_rate_bpm"] < 67
    status, svg = await api.get(f"/api/v1/attachments/{attachment}/ecg/svg", "chengguan")
    assert status == 200 and svg.startswith(b"<svg")
    status, _ = await api.get(f"/api/v1/attachments/{attachment}/ecg", "baji")
    assert status == 404

    for bad in (b"<not-xml", b'<?xml version="1.0"?><AnnotatedECG xmlns="urn:hl7-org:v3"/>'):
        resp = await api.client.post(
            f"/api/v1/consults/{consult['id']}/attachments",
            params={"filename": "bad.xml", "kind": "aecg"},
            data=bad,
            headers={**await api.headers("chengguan"), "Content-Type": "application/xml"},
        )
        assert resp.status == 422
        assert (await resp.json())["code"].startswith("aecg-")
    status, listing = await api.get(f"/api/v1/consults/{consult['id']}/attachments", "chengguan")
    assert [a["id"] for a in listing["items"]] == [attachment]
    status, _ = await api.get(
        f"/api/v1/attachments/{attachment}/ecg".replace(attachment, consult["id"]), "chengguan"
    )
    assert status == 404
