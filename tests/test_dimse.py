"""The DICOM (DIMSE) listener against real dcmtk peers: echoscu, storescu and findscu.

The app runs in-process (its listener on a free port); the dcmtk tools run as subprocesses,
awaited without blocking the loop the server runs on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy import func, select

from server.app import create_app
from server.keys import SESSIONS
from server.models import DICOM, AuditEvent, Institution
from server.settings import Settings, SettingsError
from tests.helpers import Api
from tests.imaging.dicomfiles import build, bundled
from tests.imaging.wsifiles import build_wsi

OUR_AE = "HUIZHEN"
PEERS = (("CGCT01", "chengguan"), ("BJDR01", "baji"))
CT = bundled("CT_small.dcm")
MR = bundled("MR_small.dcm")
ECG = bundled("waveform_ecg.dcm")
SR = bundled("test-SR.dcm")


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Node:
    client: TestClient[web.Request, web.Application]
    api: Api
    port: int
    data_dir: Path

    async def instances(self, sop_uid: str) -> int:
        i = DICOM.instances
        async with self.client.app[SESSIONS]() as db:
            count = await db.scalar(
                select(func.count()).select_from(i).where(i.c.sop_instance_uid == sop_uid)
            )
        return int(count or 0)

    async def owner_code(self, study_uid: str) -> str | None:
        s = DICOM.studies
        async with self.client.app[SESSIONS]() as db:
            return await db.scalar(
                select(Institution.code)
                .join(s, s.c.owner_id == Institution.id)
                .where(s.c.study_uid == study_uid)
            )

    async def audit(self, actor: str, action: str) -> list[AuditEvent]:
        async with self.client.app[SESSIONS]() as db:
            rows = await db.scalars(
                select(AuditEvent)
                .where(AuditEvent.actor_username == actor, AuditEvent.action == action)
                .order_by(AuditEvent.id)
            )
            return list(rows)

    async def study_uids(self, username: str) -> set[str]:
        status, body = await self.api.get("/dicomweb/studies", username)
        assert status == 200, body
        return {item["0020000D"]["Value"][0] for item in body}


@pytest.fixture
async def node(aiohttp_client: AiohttpClient, settings: Settings) -> Node:
    port = _free_port()
    app = create_app(settings.replace(dicom_port=port, dicom_peers=PEERS))
    client = await aiohttp_client(app)
    return Node(client, Api(client), port, settings.data_dir)


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str


async def dcmtk(tool: str, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        tool,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"))


async def echo(node: Node, calling: str = "CGCT01", called: str = OUR_AE) -> Run:
    return await dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(node.port))


# storescu proposes 128 storage SOP classes by default, and VL Whole Slide Microscopy is not one
# of them: a configuration profile proposes it, with JPEG baseline (its tiles' transfer syntax).
SLIDE_PROFILE = """\
[[TransferSyntaxes]]
[JPEGBaseline]
TransferSyntax1 = JPEGBaseline
[[PresentationContexts]]
[Slides]
PresentationContext1 = VLWholeSlideMicroscopyImageStorage\\JPEGBaseline
[[Profiles]]
[Slides]
PresentationContexts = Slides
"""


async def store(
    node: Node, files: Sequence[Path], calling: str = "CGCT01", config: Path | None = None
) -> Run:
    args = ["-v", "-nh", "-aet", calling, "-aec", OUR_AE]
    if config is not None:
        args += ["-xf", str(config), "Slides"]
    args += ["127.0.0.1", str(node.port)]
    return await dcmtk("storescu", *args, *(str(f) for f in files))


async def find(
    node: Node, out: Path, keys: Sequence[str], calling: str = "CGCT01"
) -> tuple[Run, list[pydicom.Dataset]]:
    def responses() -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def clear() -> None:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("rsp*.dcm"):
            old.unlink()

    await asyncio.to_thread(clear)
    args = ["-v", "-S", "-aet", calling, "-aec", OUR_AE, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    run = await dcmtk("findscu", *args, "127.0.0.1", str(node.port))
    return run, await asyncio.to_thread(responses)


# -- association ------------------------------------------------------------------------------


async def test_echo_and_refused_associations(node: Node) -> None:
    ok = await echo(node)
    assert ok.returncode == 0, ok.output

    stranger = await echo(node, calling="STRANGER")
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.output

    wrong_called = await echo(node, called="ORTHANC")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.output

    status, _ = await node.api.get("/healthz")
    assert status == 200


async def test_no_peers_no_listener(
    aiohttp_client: AiohttpClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = _free_port()
    client = await aiohttp_client(create_app(settings.replace(dicom_port=port)))
    node = Node(client, Api(client), port, settings.data_dir)
    assert "HUIZHEN_DICOM_PEERS is empty" in caplog.text
    refused = await echo(node)
    assert refused.returncode != 0
    status, _ = await node.api.get("/healthz")
    assert status == 200


async def test_an_unknown_institution_code_stops_start_up(settings: Settings) -> None:
    bad = settings.replace(dicom_port=_free_port(), dicom_peers=(("LOST01", "atlantis"),))
    runner = web.AppRunner(create_app(bad))
    try:
        with pytest.raises(SettingsError, match=r"HUIZHEN_DICOM_PEERS.*atlantis"):
            await runner.setup()
    finally:
        await runner.cleanup()


# -- C-STORE ----------------------------------------------------------------------------------


async def test_storescu_stores_for_the_calling_institution(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    caplog.set_level(logging.DEBUG, logger="server.dimse")
    # CT and MR images, a 12-lead ECG, an SR document and a whole-slide pyramid in JPEG tiles.
    slides = []
    for part in build_wsi():
        slides.append(tmp_path / f"wsi-{part.sop_instance_uid}.dcm")
        slides[-1].write_bytes(part.data)
    profile = tmp_path / "storescu.cfg"
    profile.write_text(SLIDE_PROFILE)
    images = [CT, MR, ECG, SR]
    files = [*images, *slides]

    async def healthz() -> int:
        status, _ = await node.api.get("/healthz")
        return status

    # HTTP keeps being answered while instances arrive.
    run, *health = await asyncio.gather(store(node, images), healthz(), healthz(), healthz())
    assert run.returncode == 0, run.output
    assert health == [200, 200, 200]
    assert run.output.count("Received Store Response (Success)") == len(images), run.output
    run = await store(node, slides, config=profile)
    assert run.output.count("Received Store Response (Success)") == len(slides), run.output

    studies = {_uids(f)[0] for f in files}
    for f in files:
        assert await node.instances(_uids(f)[2]) == 1
    for study in studies:
        assert await node.owner_code(study) == "chengguan"
    assert studies <= await node.study_uids("chengguan")
    assert not studies & await node.study_uids("baji")

    # One record per study and association, by the modality, for its institution.
    stored = await node.audit("CGCT01", "imaging.store")
    assert sorted(e.object_id for e in stored) == sorted(studies)
    assert all(e.actor_user_id is None and e.outcome == "ok" for e in stored)
    assert all(e.detail == {"via": "dimse"} for e in stored)
    chengguan = uuid.UUID(await node.api.institution_id("chengguan"))
    assert {e.actor_institution_id for e in stored} == {chengguan}

    # The same instances again: success, stored once.
    again = await store(node, images)
    assert again.output.count("Received Store Response (Success)") == len(images), again.output
    for f in files:
        assert await node.instances(_uids(f)[2]) == 1

    # Neither pynetdicom nor we logged a patient's name or ID.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "CGCT01" in logged
    for secret in ("CompressedSamples", "1CT1", "4MR1", "642341"):
        assert secret not in logged


async def test_broken_instances_fail_and_leave_nothing(node: Node, tmp_path: Path) -> None:
    broken = {
        "no-study.dcm": build(omit=("StudyInstanceUID",)),
        "bad-uid.dcm": build(
            SOPInstanceUID="1.2.826.0.1.3680043.8.498.77", SeriesInstanceUID="x.y"
        ),
        "no-instance.dcm": build(omit=("SOPInstanceUID",)),
        # Cut inside its last element: storescu itself refuses to read it, and sends nothing.
        "truncated.dcm": build(SOPInstanceUID="1.2.826.0.1.3680043.8.498.78")[:-6],
    }
    files = []
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)

    run = await store(node, [*files, CT])
    out = run.output
    answers = [line for line in out.splitlines() if "Received Store Response" in line]
    # Two instances reached us and were refused; the good file after them was stored.
    assert answers[-1].endswith("(Success)"), out
    refused = [line for line in answers if "CannotUnderstand" in line]
    assert len(refused) == 2, out
    assert "premature end of stream" in out

    for uid in ("1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.77"):
        assert await node.instances(uid) == 0
    assert await node.instances("1.2.826.0.1.3680043.8.498.78") == 0
    assert await node.instances(_uids(CT)[2]) == 1
    assert not list((node.data_dir / "dicom" / "tmp").iterdir())

    audit = await node.audit("CGCT01", "imaging.store")
    reasons = sorted(e.detail["reason"] for e in audit if e.outcome == "failed")
    assert reasons == ["dicom-bad-uid", "dicom-missing-uid"]

    ok = await echo(node)
    assert ok.returncode == 0
    status, _ = await node.api.get("/healthz")
    assert status == 200


async def test_a_conflicting_instance_is_a_duplicate(node: Node, tmp_path: Path) -> None:
    first = tmp_path / "first.dcm"
    first.write_bytes(build(AccessionNumber="A1"))
    second = tmp_path / "second.dcm"
    second.write_bytes(build(AccessionNumber="A2"))  # same SOP Instance UID, other content
    assert (await store(node, [first])).returncode == 0
    run = await store(node, [second])
    # 0111 is a PS3.7 general failure (Duplicate SOP Instance) that dcmtk prints without a name.
    assert "Received Store Response (Unknown Status: 0x111)" in run.output, run.output
    # Another institution's modality cannot add to chengguan's study either.
    other = tmp_path / "other.dcm"
    other.write_bytes(build(SOPInstanceUID="1.2.826.0.1.3680043.8.498.9"))
    run = await store(node, [other], calling="BJDR01")
    assert "Received Store Response (Unknown Status: 0x111)" in run.output, run.output
    assert await node.instances("1.2.826.0.1.3680043.8.498.9") == 0


# -- C-FIND -----------------------------------------------------------------------------------


def _value(ds: pydicom.Dataset, keyword: str) -> Any:
    assert keyword in ds, f"{keyword} missing from a C-FIND response"
    return ds.data_element(keyword).value  # type: ignore[union-attr]


async def test_findscu_sees_its_own_institutions_studies(node: Node, tmp_path: Path) -> None:
    assert (await store(node, [CT, ECG])).returncode == 0
    assert (await store(node, [MR], calling="BJDR01")).returncode == 0
    ct_study, ct_series, ct_instance = _uids(CT)
    mr_study = _uids(MR)[0]
    ecg_study = _uids(ECG)[0]
    out = tmp_path / "find"

    run, found = await find(
        node,
        out,
        [
            "QueryRetrieveLevel=STUDY",
            "PatientID=1CT1",
            "StudyInstanceUID",
            "PatientName",
            "StudyDate",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "InstitutionName",  # not indexed: answered empty or from the instance
        ],
    )
    assert run.returncode == 0, run.output
    assert [str(_value(ds, "StudyInstanceUID")) for ds in found] == [ct_study]
    ds = found[0]
    assert str(_value(ds, "PatientName")) == "CompressedSamples^CT1"
    assert _value(ds, "StudyDate") == "20040119"
    assert _value(ds, "ModalitiesInStudy") == "CT"
    assert int(_value(ds, "NumberOfStudyRelatedInstances")) == 1
    assert "InstitutionName" in ds

    # Everything chengguan's modality may see: its two studies, never baji's MR.
    run, found = await find(
        node, out, ["QueryRetrieveLevel=STUDY", "PatientID=*", "StudyInstanceUID"]
    )
    assert run.returncode == 0, run.output
    assert {str(_value(ds, "StudyInstanceUID")) for ds in found} == {ct_study, ecg_study}
    run, found = await find(
        node, out, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], calling="BJDR01"
    )
    assert {str(_value(ds, "StudyInstanceUID")) for ds in found} == {mr_study}
    run, found = await find(node, out, ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={mr_study}"])
    assert run.returncode == 0 and found == []

    # Wildcards and ranges, as in QIDO.
    run, found = await find(
        node,
        out,
        ["QueryRetrieveLevel=STUDY", "PatientName=compressed*", "StudyDate=20040101-20041231"],
    )
    assert {str(_value(ds, "StudyInstanceUID")) for ds in found} == {ct_study}

    # Series and image levels, inside a study.
    run, found = await find(
        node,
        out,
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={ct_study}",
            "SeriesInstanceUID",
            "Modality",
        ],
    )
    assert run.returncode == 0, run.output
    assert [(str(_value(d, "SeriesInstanceUID")), _value(d, "Modality")) for d in found] == [
        (ct_series, "CT")
    ]
    run, found = await find(
        node,
        out,
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={ct_study}",
            f"SeriesInstanceUID={ct_series}",
            "SOPInstanceUID",
            "SOPClassUID",
        ],
    )
    assert [str(_value(d, "SOPInstanceUID")) for d in found] == [ct_instance]
    assert str(_value(found[0], "SOPClassUID")) == "1.2.840.10008.5.1.4.1.1.2"

    # Chinese names, matched in their ideographic group and answered in UTF-8.
    chinese = tmp_path / "zhang.dcm"
    chinese.write_bytes(build(patient_name="Zhang^San=张三", charset="GB18030"))
    assert (await store(node, [chinese])).returncode == 0
    run, found = await find(
        node,
        out,
        [
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName=张*",
            "StudyInstanceUID",
        ],
    )
    assert run.returncode == 0, run.output
    assert [str(_value(ds, "StudyInstanceUID")) for ds in found] == ["1.2.826.0.1.3680043.8.498.1"]
    assert str(_value(found[0], "PatientName")) == "Zhang^San=张三"

    # A key we cannot match on is answered, with a warning status, not refused.
    run, found = await find(
        node, out, ["QueryRetrieveLevel=STUDY", "PatientID=1CT1", "PatientSex=O"]
    )
    assert run.returncode == 0, run.output
    assert [str(_value(ds, "StudyInstanceUID")) for ds in found] == [ct_study]
    assert "(Pending: WarningUnsupportedOptionalKeys)" in run.output, run.output

    # A malformed value is refused.
    run, found = await find(node, out, ["QueryRetrieveLevel=STUDY", "StudyDate=yesterday"])
    assert found == []
    assert "(Error: DataSetDoesNotMatchSOPClass)" in run.output, run.output  # A900

    searches = await node.audit("CGCT01", "imaging.search")
    assert {e.object_id for e in searches} == {ct_study, ecg_study, "1.2.826.0.1.3680043.8.498.1"}
    assert all(e.detail["via"] == "dimse" for e in searches)

    status, _ = await node.api.get("/healthz")
    assert status == 200
