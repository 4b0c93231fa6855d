"""Files attached to a consult: streamed, limited, content-addressed, served as downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from sqlalchemy import func, select

from imaging.photo import MAX_PIXELS
from server.app import create_app
from server.db import make_engine, make_sessionmaker, unit_of_work
from server.models import Attachment
from server.settings import Settings
from tests.conftest import AiohttpClient
from tests.helpers import Api

PHOTO = "皮疹照片.jpg"


async def _consult(api: Api) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    status, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": "pathology",
            "question": "皮损性质？",
        },
    )
    assert status == 201
    return str(consult["id"])


async def _upload(
    api: Api, cid: str, user: str, data: bytes, filename: str = PHOTO, ctype: str = "image/jpeg"
) -> tuple[int, dict[str, object]]:
    headers = {**await api.headers(user), "Content-Type": ctype}
    resp = await api.client.post(
        f"/api/v1/consults/{cid}/attachments",
        params={"filename": filename, "kind": "photo"},
        data=io.BytesIO(data),
        headers=headers,
    )
    return resp.status, await resp.json()


async def test_upload_list_download(api: Api, settings: Settings) -> None:
    cid = await _consult(api)
    data = bytes(range(256)) * 4000  # ~1 MB
    status, meta = await _upload(api, cid, "chengguan", data)
    assert status == 201, meta
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["size"] == len(data)
    assert meta["filename"] == PHOTO
    status, listing = await api.get(f"/api/v1/consults/{cid}/attachments", "pathology")
    assert [a["id"] for a in listing["items"]] == [meta["id"]]
    assert listing["items"][0]["uploaded_by_name"] == "城关镇 刘医生"
    assert listing["items"][0]["message_id"] is None
    resp = await api.client.get(
        f"/api/v1/attachments/{meta['id']}", headers=await api.headers("pathology")
    )
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["X-Original-Content-Type"] == "image/jpeg"
    _, feed = await api.get("/api/v1/events", "pathology")
    assert "consult.attachment" in [e["type"] for e in feed["items"]]
    # The same bytes again are kept once.
    status, _ = await _upload(api, cid, "chengguan", data, filename="again.jpg")
    assert status == 201
    kept = list((settings.data_dir / "blobs" / "sha256").rglob("*"))
    assert len([p for p in kept if p.is_file()]) == 1


async def test_too_large_leaves_nothing_behind(
    aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path
) -> None:
    small = dataclasses.replace(settings, max_attachment_bytes=1000)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(small))
    api = Api(client)
    cid = await _consult(api)
    status, problem = await _upload(api, cid, "chengguan", b"x" * 5000)
    assert status == 413
    assert problem["code"] == "payload-too-large"
    blobs = settings.data_dir / "blobs"
    assert [p for p in blobs.rglob("*") if p.is_file()] == []
    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            assert await db.scalar(select(func.count()).select_from(Attachment)) == 0
    finally:
        await engine.dispose()
    assert (await _upload(api, cid, "chengguan", b"ok"))[0] == 201


async def test_bad_names_and_outsiders(api: Api) -> None:
    cid = await _consult(api)
    for name in ("../etc/passwd", "a/b.jpg", "..", "", "x\x01.jpg"):
        status, _ = await _upload(api, cid, "chengguan", b"x", filename=name)
        assert status == 422, name
    assert (await _upload(api, cid, "baji", b"x"))[0] == 404
    assert (await _upload(api, cid, "radiology", b"x"))[0] == 404
    status, meta = await _upload(api, cid, "chengguan", b"x")
    resp = await api.client.get(
        f"/api/v1/attachments/{meta['id']}", headers=await api.headers("baji")
    )
    assert resp.status == 404
    # A cancelled consult takes no more files.
    await api.post(f"/api/v1/consults/{cid}/cancel", "chengguan", json={})
    assert (await _upload(api, cid, "chengguan", b"y"))[0] == 409


async def test_a_tiff_photo_is_previewed_as_a_small_jpeg(api: Api) -> None:
    """Browsers show no TIFF and a township link chokes on 20 MB: the preview is what they see."""
    cid = await _consult(api)
    picture = Image.new("RGB", (3000, 2000), (200, 40, 40))
    buf = io.BytesIO()
    picture.save(buf, format="TIFF")
    status, meta = await _upload(api, cid, "chengguan", buf.getvalue(), "切片.tif", "image/tiff")
    assert status == 201, meta
    resp = await api.client.get(
        f"/api/v1/attachments/{meta['id']}/preview",
        params={"size": "600"},
        headers=await api.headers("pathology"),
    )
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    shown = Image.open(io.BytesIO(await resp.read()))
    assert shown.size == (600, 400)
    assert len(await resp.read()) < len(buf.getvalue()) // 100
    # Audited as a read of the attachment.
    _, log = await api.get(
        "/api/v1/audit", "admin", params={"object_id": str(meta["id"]), "action": "attachment.read"}
    )
    assert any(entry["detail"] == {"preview": 600} for entry in log["items"]), log
    # A scan over the pixel limit is not decoded at all.
    side = int(MAX_PIXELS**0.5) + 10
    huge = io.BytesIO()
    Image.new("1", (side, side)).save(huge, format="PNG")
    status, big = await _upload(api, cid, "chengguan", huge.getvalue(), "scan.png", "image/png")
    status, problem = await api.get(f"/api/v1/attachments/{big['id']}/preview", "pathology")
    assert (status, problem["code"]) == (422, "attachment-too-large")
    # Not a picture, a bad size, an outsider.
    status, meta = await _upload(api, cid, "chengguan", b"%PDF-1.7 not a picture", "r.pdf")
    status, problem = await api.get(f"/api/v1/attachments/{meta['id']}/preview", "pathology")
    assert (status, problem["code"]) == (422, "attachment-not-previewable")
    status, _ = await api.get(f"/api/v1/attachments/{meta['id']}/preview?size=5", "pathology")
    assert status == 422
    status, _ = await api.get(f"/api/v1/attachments/{meta['id']}/preview", "baji")
    assert status == 404
