"""DICOMweb through the API: STOW-RS in, QIDO-RS search, WADO-RS out, visibility, bad input."""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path
from typing import Any

import pydicom
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from server.app import create_app
from server.settings import Settings
from tests.helpers import Api
from tests.imaging.dicomfiles import bundled
from tests.test_consults import _open

BOUNDARY = "huizhen-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
CT = bundled("CT_small.dcm")
MR = bundled("MR_small.dcm")


def multipart(*parts: bytes | tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    for part in parts:
        ctype, data = part if isinstance(part, tuple) else ("application/dicom", part)
        out.write(f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload[:-2])  # the CRLF before the next boundary
    return parts


def with_new_uids(path: Path, **changes: Any) -> bytes:
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def uid(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


async def stow(
    api: Api, user: str, body: bytes, path: str = "/dicomweb/studies", **kwargs: Any
) -> tuple[int, Any]:
    return await api.post(
        path,
        user,
        data=body,
        headers={"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
        **kwargs,
    )


async def test_store_search_and_retrieve(api: Api) -> None:
    ct, mr = CT.read_bytes(), MR.read_bytes()
    status, body = await stow(api, "chengguan", multipart(ct, mr))
    assert status == 200, body
    stored = body["00081199"]["Value"]
    assert {uid(s, "00081155") for s in stored} == {
        pydicom.dcmread(CT).SOPInstanceUID,
        pydicom.dcmread(MR).SOPInstanceUID,
    }
    assert "00081198" not in body

    status, studies = await api.get("/dicomweb/studies?PatientID=1CT1", "chengguan")
    assert status == 200
    assert len(studies) == 1
    study = studies[0]
    ds = pydicom.dcmread(CT)
    assert uid(study, "0020000D") == ds.StudyInstanceUID
    assert study["00080061"]["Value"] == ["CT"]
    assert uid(study, "00201208") == 1
    assert uid(study, "00100010") == {"Alphabetic": "CompressedSamples^CT1"}

    # Wildcards, case-insensitive names, date ranges, modalities, paging.
    for query, expected in [
        ("PatientName=compressed*", 2),
        ("PatientName=*CT1", 1),
        ("00100010=CompressedSamples", 2),
        ("StudyDate=20040101-20041231", 2),
        ("StudyDate=20040201-", 1),
        ("StudyDate=-20040131", 1),
        ("ModalitiesInStudy=MR", 1),
        ("PatientID=1CT1,4MR1", 0),  # a list is for UIDs only: no match on this literal
        ("StudyInstanceUID=" + ds.StudyInstanceUID + ",1.2.3", 1),
        ("limit=1", 1),
        ("limit=1&offset=1", 1),
        ("offset=2", 0),
    ]:
        status, found = await api.get(f"/dicomweb/studies?{query}", "chengguan")
        assert status == 200, query
        assert len(found) == expected, query

    status, found = await api.get(
        f"/dicomweb/studies?StudyInstanceUID={ds.StudyInstanceUID}&includefield=00180050",
        "chengguan",
    )
    assert status == 200
    assert "00180050" in found[0]  # Slice Thickness, from the stored metadata

    status, series = await api.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series", "chengguan")
    assert status == 200
    assert [uid(s, "0020000E") for s in series] == [ds.SeriesInstanceUID]
    status, series = await api.get("/dicomweb/series?Modality=MR", "chengguan")
    assert status == 200 and len(series) == 1
    status, instances = await api.get(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances",
        "chengguan",
    )
    assert status == 200
    assert [uid(i, "00080018") for i in instances] == [ds.SOPInstanceUID]
    assert uid(instances[0], "00280010") == 128

    base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    status, meta = await api.get(f"{base}/metadata", "chengguan")
    assert status == 200
    assert len(meta) == 1
    pixel = meta[0]["7FE00010"]
    assert "Value" not in pixel and "InlineBinary" not in pixel
    assert pixel["BulkDataURI"].startswith("http://")
    assert pixel["BulkDataURI"].endswith(f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010")
    assert uid(meta[0], "00020010") == "1.2.840.10008.1.2.1"

    resp = await api.client.get(
        f"{base}/instances/{ds.SOPInstanceUID}",
        headers={
            **await api.headers("chengguan"),
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        },
    )
    assert resp.status == 200
    parts = split_multipart(await resp.read(), resp.headers["Content-Type"])
    assert parts == [ct]

    resp = await api.client.get(
        f"{base}/instances/{ds.SOPInstanceUID}/frames/1",
        headers={
            **await api.headers("chengguan"),
            "Accept": 'multipart/related; type="application/octet-stream"',
        },
    )
    assert resp.status == 200
    frames = split_multipart(await resp.read(), resp.headers["Content-Type"])
    assert frames == [ds.PixelData]

    resp = await api.client.get(
        f"{base}/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010",
        headers=await api.headers("chengguan"),
    )
    assert resp.status == 200
    assert split_multipart(await resp.read(), resp.headers["Content-Type"]) == [ds.PixelData]

    for bad in ("7FE00011", "zz", "00081111.0.00081150.1"):
        resp = await api.client.get(
            f"{base}/instances/{ds.SOPInstanceUID}/bulkdata/{bad}",
            headers=await api.headers("chengguan"),
        )
        assert resp.status == 404, bad


async def test_store_is_idempotent_and_refuses_other_content_under_a_known_uid(api: Api) -> None:
    ct = CT.read_bytes()
    assert (await stow(api, "chengguan", multipart(ct)))[0] == 200
    status, body = await stow(api, "chengguan", multipart(ct))
    assert status == 200, body  # the same instance again: stored already, not twice
    status, studies = await api.get("/dicomweb/studies", "chengguan")
    assert uid(studies[0], "00201208") == 1

    ds = pydicom.dcmread(CT)
    ds.PatientName = "Other^Content"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    status, body = await stow(api, "chengguan", multipart(buf.getvalue()))
    assert status == 409
    failed = body["00081198"]["Value"]
    assert uid(failed[0], "00081197") == 0x0111
    status, studies = await api.get("/dicomweb/studies", "chengguan")
    assert uid(studies[0], "00100010") == {"Alphabetic": "CompressedSamples^CT1"}


async def test_each_bad_part_is_listed_and_nothing_half_indexed(
    api: Api, settings: Settings
) -> None:
    good = with_new_uids(MR)
    truncated = with_new_uids(CT)[:-5000]
    wrong_preamble = b"\x00" * 128 + b"DICX" + with_new_uids(CT)[132:]
    status, body = await stow(
        api,
        "chengguan",
        multipart(good, truncated, wrong_preamble, b"not dicom at all", ("text/plain", b"hello")),
    )
    assert status == 202, body
    assert len(body["00081199"]["Value"]) == 1
    reasons = [uid(f, "00081197") for f in body["00081198"]["Value"]]
    assert reasons == [0xC000] * 4
    status, studies = await api.get("/dicomweb/studies", "chengguan")
    assert [uid(s, "00201208") for s in studies] == [1]
    leftovers = list((settings.data_dir / "dicom" / "tmp").iterdir())
    assert leftovers == []

    status, body = await stow(api, "chengguan", multipart(b"garbage"))
    assert status == 409  # none stored
    # The server keeps serving.
    status, _ = await api.get("/dicomweb/studies", "chengguan")
    assert status == 200


async def test_malformed_requests_get_problems(api: Api) -> None:
    status, body = await api.post(
        "/dicomweb/studies", "chengguan", data=b"x", headers={"Content-Type": "application/dicom"}
    )
    assert status == 415 and body["code"] == "unsupported-media-type"
    status, body = await api.post(
        "/dicomweb/studies",
        "chengguan",
        data=b"--nope\r\n\r\nbroken",
        headers={"Content-Type": STOW_TYPE},
    )
    assert status in (400, 409), body
    for query in (
        "Nonsense=1",
        "StudyDate=2020",
        "PatientWeight=70",
        "limit=-1",
        "SOPInstanceUID=1",
    ):
        status, body = await api.get(f"/dicomweb/studies?{query}", "chengguan")
        assert status == 400, query
        assert body["code"] == "bad-request"
    status, body = await api.get("/dicomweb/studies/not-a-uid/series", "chengguan")
    assert status == 404
    status, body = await api.get(
        "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/0", "chengguan"
    )
    assert status == 400


async def test_an_instance_over_the_limit_is_refused_whole(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(settings.replace(max_instance_bytes=20_000))
    )
    api = Api(client)
    status, body = await stow(api, "chengguan", multipart(MR.read_bytes(), CT.read_bytes()))
    assert status == 413, body
    assert body["code"] == "payload-too-large"
    status, studies = await api.get("/dicomweb/studies", "chengguan")
    assert status == 200
    assert [uid(s, "00100020") for s in studies] == ["4MR1"]  # the whole one before it stays
    assert list((settings.data_dir / "dicom" / "tmp").iterdir()) == []


async def test_visibility_follows_institutions_and_consults(api: Api) -> None:
    ct = with_new_uids(CT)
    ds = pydicom.dcmread(io.BytesIO(ct))
    assert (await stow(api, "chengguan", multipart(ct)))[0] == 200
    for user in ("baji", "radiology", "coordinator"):
        status, found = await api.get("/dicomweb/studies", user)
        assert (status, found) == (200, []), user
        status, _ = await api.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata", user)
        assert status == 404, user
    for user in ("supervisor", "admin", "ambulance-01"):
        status, _ = await api.get("/dicomweb/studies", user)
        assert status == 403, user

    consult = await _open(api)
    status, _ = await api.post(
        f"/api/v1/consults/{consult['id']}/studies", "baji", json={"study_uid": ds.StudyInstanceUID}
    )
    assert status == 404  # another station's consult
    status, body = await api.post(
        f"/api/v1/consults/{consult['id']}/studies",
        "chengguan",
        json={"study_uid": ds.StudyInstanceUID},
    )
    assert status == 204, body
    await api.post(f"/api/v1/consults/{consult['id']}/submit", "chengguan")
    status, found = await api.get("/dicomweb/studies", "radiology")
    assert [uid(s, "0020000D") for s in found] == [ds.StudyInstanceUID]
    status, listing = await api.get(f"/api/v1/consults/{consult['id']}/studies", "radiology")
    assert status == 200
    (study,) = listing["items"]
    assert study["study_uid"] == ds.StudyInstanceUID
    assert study["series"][0]["kind"] == "image"
    assert study["series"][0]["first_instance_uid"] == ds.SOPInstanceUID
    status, found = await api.get("/dicomweb/studies", "baji")
    assert found == []
    # The ECG centre's specialists do not see the imaging consult's study.
    status, found = await api.get("/dicomweb/studies", "ecg")
    assert found == []


async def test_store_into_a_consult_notifies_the_centre(api: Api) -> None:
    consult = await _open(api)
    await api.post(f"/api/v1/consults/{consult['id']}/submit", "chengguan")
    ct = with_new_uids(CT, PatientID="X9")
    status, body = await stow(api, "chengguan", multipart(ct), params={"consult": consult["id"]})
    assert status == 200, body
    status, feed = await api.get("/api/v1/events", "radiology")
    assert "consult.images" in [e["type"] for e in feed["items"]]
    status, listing = await api.get(f"/api/v1/consults/{consult['id']}/studies", "chengguan")
    assert len(listing["items"]) == 1


async def test_only_admins_delete(api: Api, settings: Settings) -> None:
    ct = with_new_uids(CT)
    ds = pydicom.dcmread(io.BytesIO(ct))
    assert (await stow(api, "chengguan", multipart(ct)))[0] == 200
    path = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    status, _ = await api.call("DELETE", path, "chengguan")
    assert status == 403
    status, _ = await api.call(
        "DELETE", f"{path}/series/{ds.SeriesInstanceUID}/instances/1.2.3", "admin"
    )
    assert status == 404
    status, _ = await api.call("DELETE", path, "admin")
    assert status == 204
    status, found = await api.get("/dicomweb/studies", "chengguan")
    assert found == []
    stored = [p for p in (settings.data_dir / "dicom" / "sha256").rglob("*") if p.is_file()]
    assert stored == []
    status, _ = await api.call("DELETE", path, "admin")
    assert status == 404


async def test_cors_preflight_for_configured_origins(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(
        create_app(settings.replace(cors_origins=("http://viewer.test",)))
    )
    resp = await client.options(
        "/dicomweb/studies",
        headers={"Origin": "http://viewer.test", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://viewer.test"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    resp = await client.options(
        "/dicomweb/studies",
        headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 403
    resp = await client.get("/dicomweb/studies", headers={"Origin": "http://viewer.test"})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "http://viewer.test"


async def test_resumable_upload(api: Api) -> None:
    consult = await _open(api)
    data = with_new_uids(bundled("waveform_ecg.dcm"))
    status, up = await api.post(
        "/api/v1/uploads",
        "chengguan",
        json={"size": len(data), "filename": "ecg.dcm", "consult_id": consult["id"]},
    )
    assert status == 201, up
    url = f"/api/v1/uploads/{up['id']}"
    half = len(data) // 2
    octet = {"Content-Type": "application/octet-stream"}
    status, body = await api.call(
        "PUT", url, "chengguan", params={"offset": 0}, data=data[:half], headers=octet
    )
    assert status == 200 and body["offset"] == half
    # A lost client resends from 0: refused, and told where to carry on.
    status, body = await api.call(
        "PUT", url, "chengguan", params={"offset": 0}, data=data[:half], headers=octet
    )
    assert status == 409 and body["offset"] == half
    status, body = await api.get(url, "chengguan")
    assert body["offset"] == half
    status, body = await api.get(url, "baji")
    assert status == 404
    status, body = await api.post(f"{url}/complete", "chengguan")
    assert status == 409  # not whole yet
    status, body = await api.call(
        "PUT", url, "chengguan", params={"offset": half}, data=data[half:] + b"extra", headers=octet
    )
    assert status == 413
    status, body = await api.call(
        "PUT", url, "chengguan", params={"offset": half}, data=data[half:], headers=octet
    )
    assert status == 200 and body["offset"] == len(data)
    status, stored = await api.post(f"{url}/complete", "chengguan")
    assert status == 200, stored
    assert stored["stored"] is True
    ds = pydicom.dcmread(io.BytesIO(data))
    assert stored["instance_uid"] == ds.SOPInstanceUID
    status, listing = await api.get(f"/api/v1/consults/{consult['id']}/studies", "chengguan")
    assert listing["items"][0]["series"][0]["kind"] == "ecg"

    status, ecg = await api.get(
        f"/api/v1/ecg/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}", "chengguan"
    )
    assert status == 200, ecg
    assert [lead["label"] for lead in ecg["leads"]][:3] == ["I", "II", "III"]
    assert len(ecg["leads"]) == 12
    assert 55 < ecg["computed"]["heart_rate_bpm"] < 67
    assert abs(ecg["computed"]["qt_ms"] - 368) <= 40  # the machine's QT Interval
    assert any(m["value"] is not None for m in ecg["machine"])
    status, svg = await api.get(
        f"/api/v1/ecg/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}/svg",
        "chengguan",
    )
    assert status == 200 and svg.startswith(b"<svg")


async def test_upload_of_a_file_that_is_not_dicom(api: Api) -> None:
    data = b"\x89PNG not a dicom file" * 10
    status, up = await api.post(
        "/api/v1/uploads", "chengguan", json={"size": len(data), "filename": "photo.png"}
    )
    assert status == 201
    url = f"/api/v1/uploads/{up['id']}"
    status, _ = await api.call(
        "PUT",
        url,
        "chengguan",
        params={"offset": 0},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 200
    status, body = await api.post(f"{url}/complete", "chengguan")
    assert status == 422
    assert body["code"] == "dicom-not-dicom"
    status, body = await api.post(
        "/api/v1/uploads", "chengguan", json={"size": 10**12, "filename": "huge.dcm"}
    )
    assert status == 413


async def test_a_modalitys_patient_id_is_learnt_from_the_first_attachment(api: Api) -> None:
    first = await _open(api)
    await api.post(f"/api/v1/consults/{first['id']}/submit", "chengguan")
    ct = with_new_uids(CT, PatientID="CG-CT-0001")
    status, _ = await stow(api, "chengguan", multipart(ct), params={"consult": first["id"]})
    assert status == 200
    # A later study with the same Patient ID from the same station is the same patient's:
    later = with_new_uids(CT, PatientID="CG-CT-0001")
    later_uid = pydicom.dcmread(io.BytesIO(later)).StudyInstanceUID
    assert (await stow(api, "chengguan", multipart(later)))[0] == 200
    status, patients = await api.get("/api/v1/patients?name=赵志强", "chengguan")
    other_patient = patients["items"][0]["id"]
    status, other = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": other_patient, "centre": "imaging", "question": "复查"},
    )
    assert status == 201
    status, problem = await api.post(
        f"/api/v1/consults/{other['id']}/studies", "chengguan", json={"study_uid": later_uid}
    )
    assert status == 409 and problem["code"] == "patient-mismatch"
    second = await _open(api)  # the first consult's patient again
    status, _ = await api.post(
        f"/api/v1/consults/{second['id']}/studies", "chengguan", json={"study_uid": later_uid}
    )
    assert status == 204
    # Another station's modality may use the same ID for someone else: not linked.
    elsewhere = with_new_uids(CT, PatientID="CG-CT-0001")
    elsewhere_uid = pydicom.dcmread(io.BytesIO(elsewhere)).StudyInstanceUID
    assert (await stow(api, "baji", multipart(elsewhere)))[0] == 200
    status, patients = await api.get("/api/v1/patients?name=李建国", "baji")
    status, baji_consult = await api.post(
        "/api/v1/consults",
        "baji",
        json={"patient_id": patients["items"][0]["id"], "centre": "imaging", "question": "x"},
    )
    status, _ = await api.post(
        f"/api/v1/consults/{baji_consult['id']}/studies", "baji", json={"study_uid": elsewhere_uid}
    )
    assert status == 204


async def test_thumbnails_and_rendered_as_viewers_ask_for_them(api: Api) -> None:
    """OHIF's forms: ``?viewport=`` on thumbnails, the ``accept`` query parameter in place of the
    Accept header, and a series or study rendered as its representative image."""
    ds = pydicom.dcmread(CT)
    assert (await stow(api, "chengguan", multipart(CT.read_bytes())))[0] == 200
    study = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"
    instance = f"{series}/instances/{ds.SOPInstanceUID}"

    async def image(path: str, headers: dict[str, str] | None = None) -> tuple[str, Image.Image]:
        resp = await api.client.get(
            path, headers={**await api.headers("chengguan"), **(headers or {})}
        )
        assert resp.status == 200, await resp.text()
        return resp.content_type, Image.open(io.BytesIO(await resp.read()))

    for level in (study, series, instance):
        ctype, picture = await image(f"{level}/thumbnail?viewport=64,64")
        assert ctype == "image/jpeg"
        assert max(picture.size) == 64  # 128×128 CT, fitted into the viewport
        ctype, picture = await image(f"{level}/thumbnail?accept=image%2Fpng")
        assert (ctype, picture.format) == ("image/png", "PNG")
    for level in (study, series):
        ctype, picture = await image(f"{level}/rendered?viewport=256,256&window=40,400")
        assert ctype == "image/jpeg"
        assert picture.size == (256, 256)
        same = await image(f"{instance}/rendered?viewport=256,256&window=40,400")
        assert picture.tobytes() == same[1].tobytes()
    # QIDO takes them too (and answers DICOM JSON whatever they say).
    status, found = await api.get(
        "/dicomweb/studies?accept=application%2Fdicom%2Bjson&charset=utf-8&PatientID=1CT1",
        "chengguan",
    )
    assert status == 200 and len(found) == 1
    # The parameter wins over the header.
    ctype, _ = await image(f"{instance}/rendered?accept=image/png", {"Accept": "image/jpeg"})
    assert ctype == "image/png"
    resp = await api.client.get(
        f"{instance}/frames/1?accept="
        + urllib.parse.quote('multipart/related; type="application/octet-stream"'),
        headers={**await api.headers("chengguan"), "Accept": "application/dicom+json"},
    )
    assert resp.status == 200
    assert resp.content_type == "multipart/related"
    # Still refused: what no one can render, a malformed viewport, an unknown parameter.
    for path, status in [
        (f"{series}/thumbnail?accept=image/gif", 406),
        (f"{series}/rendered?viewport=0,x", 400),
        (f"{series}/thumbnail?size=64", 422),
    ]:
        got, body = await api.get(path, "chengguan")
        assert got == status, (path, body)


async def test_a_patient_id_that_is_a_known_national_id_links_on_arrival(api: Api) -> None:
    status, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    patient = found["items"][0]
    national_id = patient["national_id"]
    status, record = await api.get(f"/api/v1/patients/{patient['id']}", "chengguan")
    assert status == 200 and record["national_id"] == national_id
    # Lower-case check digit as some modalities send it: still the same patient.
    ct = with_new_uids(CT, PatientID=national_id.lower())
    study_uid = pydicom.dcmread(io.BytesIO(ct)).StudyInstanceUID
    assert (await stow(api, "chengguan", multipart(ct)))[0] == 200
    status, others = await api.get("/api/v1/patients?name=赵志强", "chengguan")
    status, other = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": others["items"][0]["id"], "centre": "imaging", "question": "复查"},
    )
    status, problem = await api.post(
        f"/api/v1/consults/{other['id']}/studies", "chengguan", json={"study_uid": study_uid}
    )
    assert status == 409 and problem["code"] == "patient-mismatch"
    mine = await _open(api)  # 张桂兰's
    status, _ = await api.post(
        f"/api/v1/consults/{mine['id']}/studies", "chengguan", json={"study_uid": study_uid}
    )
    assert status == 204
