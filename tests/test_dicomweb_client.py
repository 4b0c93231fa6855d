"""A real DICOMweb peer: dicomweb-client (as OHIF's tooling and scripts use it) against a live
server process."""

from __future__ import annotations

import asyncio
import io

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from tests.helpers import DEMO_PASSWORD
from tests.imaging.dicomfiles import bundled
from tests.services import HuizhenProcess
from tests.test_dicomweb import with_new_uids


def _client(server: HuizhenProcess, username: str) -> DICOMwebClient:
    login = requests.post(
        f"{server.url}/api/v1/auth/login",
        json={"username": username, "password": DEMO_PASSWORD},
        timeout=30,
    )
    login.raise_for_status()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {login.json()['token']}"
    return DICOMwebClient(url=f"{server.url}/dicomweb", session=session)


def _roundtrip(server: HuizhenProcess) -> None:
    client = _client(server, "chengguan")
    ct = pydicom.dcmread(io.BytesIO(with_new_uids(bundled("CT_small.dcm"))))
    mr = pydicom.dcmread(io.BytesIO(with_new_uids(bundled("MR_small.dcm"))))
    stored = client.store_instances([ct, mr])
    assert len(stored.ReferencedSOPSequence) == 2
    assert "FailedSOPSequence" not in stored

    found = client.search_for_studies(search_filters={"PatientID": "1CT1"})
    assert [s["0020000D"]["Value"][0] for s in found] == [ct.StudyInstanceUID]
    found = client.search_for_studies(search_filters={"PatientName": "Compressed*"})
    assert len(found) == 2  # dicomweb-client percent-encodes '*' and '^'
    series = client.search_for_series(ct.StudyInstanceUID)
    assert series[0]["0020000E"]["Value"][0] == ct.SeriesInstanceUID
    instances = client.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert instances[0]["00080018"]["Value"][0] == ct.SOPInstanceUID

    metadata = client.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert metadata[0]["00100020"]["Value"] == ["1CT1"]
    # dicomweb-client sends "Host: 127.0.0.1" without the port, so URLs we build from Host lack it.
    assert metadata[0]["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    back = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert back.SOPInstanceUID == ct.SOPInstanceUID
    assert back.PixelData == ct.PixelData
    frames = client.retrieve_instance_frames(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, frame_numbers=[1]
    )
    assert frames == [ct.PixelData]
    jpeg = client.retrieve_instance_rendered(
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        media_types=("image/jpeg",),
        params={"window": "40,400,linear", "viewport": "64,64"},
    )
    assert jpeg[:3] == b"\xff\xd8\xff"
    study = client.retrieve_study(ct.StudyInstanceUID)
    assert [d.SOPInstanceUID for d in study] == [ct.SOPInstanceUID]

    # Another station sees nothing of it.
    assert _client(server, "baji").search_for_studies() == []


async def test_dicomweb_client_round_trip(live_server: HuizhenProcess) -> None:
    await asyncio.to_thread(_roundtrip, live_server)
