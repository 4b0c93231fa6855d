"""Studies attached to consults, and ECG views of stored waveforms.

A consult lists its studies with their series, each classified for the reading room (images,
an ECG, a whole-slide image, other). A station or centre attaches a study it can see (one a
modality sent over DIMSE, say). The ECG routes read a stored 12-lead waveform: the samples for
the browser's viewer, the machine's own measurements beside ours, and the standard paper layout
as SVG.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import StringConstraints
from sqlalchemy import func, select

from imaging.aecg import read_aecg
from imaging.ecg import Ecg, EcgError, Measurements, measure, read_ecg
from imaging.ecgplot import render_svg
from server.archive import link_to_consult
from server.attachments import load_attachment, read_entry
from server.audit import Entry
from server.consultflow import FINAL_STATES
from server.consults import load_consult, may_contribute, other_side_streams
from server.dicomhttp import UID_PATHS, UID_RE
from server.events import event_payload
from server.keys import ARCHIVE, BLOBS
from server.models import DICOM, Consult, ConsultStudy, InstitutionKind, SharedStudy
from server.policy import Action, study_visible_clause
from server.problems import Conflict, Forbidden, NotFound
from server.routing import Call, RequestModel, ResponseModel, Router
from server.sharing import share_study
from server.wado import visible_instances

router = Router()

ECG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG
        "1.2.840.10008.5.1.4.1.1.9.1.2",  # general ECG
        "1.2.840.10008.5.1.4.1.1.9.1.3",  # ambulatory ECG
    }
)
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
SeriesKind = Literal["image", "ecg", "wsi", "other"]


class SeriesOut(ResponseModel):
    series_uid: str
    modality: str
    description: str
    instance_count: int
    kind: SeriesKind
    first_instance_uid: str


class StudyOut(ResponseModel):
    study_uid: str
    study_date: str
    description: str
    modalities: list[str]
    instance_count: int
    series: list[SeriesOut]


class StudyList(ResponseModel):
    items: list[StudyOut]


class AttachStudy(RequestModel):
    study_uid: Annotated[str, StringConstraints(pattern=UID_RE, max_length=64)]


def _kind(sop_class: str, frames: int | None) -> SeriesKind:
    if sop_class in ECG_SOP_CLASSES:
        return "ecg"
    if sop_class == WSI_SOP_CLASS:
        return "wsi"
    return "image" if frames else "other"


@router.route(
    "GET",
    "/api/v1/consults/{consult_id}/studies",
    action=Action.CONSULT_READ,
    summary="The DICOM studies attached to a consult, with their series",
    tags=["imaging"],
    response=StudyList,
)
async def consult_studies(call: Call[None, None]) -> StudyList:
    consult, _ = await load_consult(call, call.path["consult_id"])
    s, se, i = DICOM.studies, DICOM.series, DICOM.instances
    p = call.principal
    if p.institution_kind is InstitutionKind.PARTNER_HOSPITAL:
        # The partner reads the pseudonymised copies made for it, never the originals.
        listed = (
            select(s)
            .join(SharedStudy, SharedStudy.copy_study_uid == s.c.study_uid)
            .where(
                SharedStudy.consult_id == consult.id,
                SharedStudy.partner_institution_id == p.institution_id,
            )
            .order_by(SharedStudy.created_at, s.c.study_uid)
        )
    else:
        listed = (
            select(s)
            .join(ConsultStudy, ConsultStudy.study_uid == s.c.study_uid)
            .where(ConsultStudy.consult_id == consult.id)
            .order_by(ConsultStudy.created_at, s.c.study_uid)
        )
    studies = (await call.session.execute(listed)).all()
    uids = [row.study_uid for row in studies]
    first = (
        select(
            i.c.series_uid,
            func.min(i.c.sop_instance_uid).label("first_uid"),
        )
        .where(i.c.study_uid.in_(uids))
        .group_by(i.c.series_uid)
        .subquery()
    )
    series_rows = (
        await call.session.execute(
            select(se, i.c.sop_class_uid, i.c.frames, first.c.first_uid)
            .join(first, first.c.series_uid == se.c.series_uid)
            .join(i, i.c.sop_instance_uid == first.c.first_uid)
            .order_by(se.c.series_number, se.c.series_uid)
        )
    ).all()
    by_study: dict[str, list[SeriesOut]] = {}
    for row in series_rows:
        by_study.setdefault(row.study_uid, []).append(
            SeriesOut(
                series_uid=row.series_uid,
                modality=row.modality,
                description=row.series_description,
                instance_count=row.instance_count,
                kind=_kind(row.sop_class_uid, row.frames),
                first_instance_uid=row.first_uid,
            )
        )
    await call.audit(
        Entry(
            action="consult.studies",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
            detail={"studies": len(uids)},
        )
    )
    return StudyList(
        items=[
            StudyOut(
                study_uid=row.study_uid,
                study_date=row.study_date,
                description=row.study_description,
                modalities=row.modalities.split(),
                instance_count=row.instance_count,
                series=by_study.get(row.study_uid, []),
            )
            for row in studies
        ]
    )


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/studies",
    action=Action.IMAGING_WRITE,
    summary="Attach a stored study the caller can see to a consult",
    tags=["imaging"],
    body=AttachStudy,
    status=204,
    errors=[409],
)
async def attach_study(call: Call[AttachStudy, None]) -> None:
    """The study's patient must be the consult's (or not yet known: it then becomes so)."""
    consult, _ = await load_consult(call, call.path["consult_id"])
    if not may_contribute(call.principal, consult):
        raise Forbidden("only the requesting station and the centre add images to a consult")
    if consult.state in FINAL_STATES:
        raise Conflict(f"a {consult.state.value} consult takes no more images")
    s = DICOM.studies
    visible = (
        await call.session.execute(
            select(s.c.study_uid).where(
                s.c.study_uid == call.body.study_uid, study_visible_clause(call.principal)
            )
        )
    ).first()
    if visible is None:
        raise NotFound("no such study")
    await attach_studies(call, consult, [call.body.study_uid])


async def attach_studies(call: Call[Any, Any], consult: Consult, study_uids: list[str]) -> None:
    """Attach studies to a consult: linked (the study's patient checked or set), audited, the
    other side told, and copied pseudonymised for a partner hospital it was escalated to."""
    archive = call.app[ARCHIVE]
    added = []
    for uid in study_uids:
        if await link_to_consult(call.session, consult, uid, call.principal.user_id):
            added.append(uid)
            await share_study(call.session, archive, consult, uid)
    if not added:
        return
    await call.audit_many(
        Entry(
            action="consult.study",
            object_type="consult",
            object_id=str(consult.id),
            patient_id=consult.patient_id,
            detail={"study": uid},
        )
        for uid in added
    )
    call.publish(
        other_side_streams(call.principal, consult),
        "consult.images",
        consult_id=consult.id,
        payload=event_payload(consult, studies=len(added)),
    )


# -- ECG ------------------------------------------------------------------------------------


class LeadOut(ResponseModel):
    label: str
    microvolts: list[int]


class MachineValue(ResponseModel):
    concept: str
    text: str
    value: float | None
    unit: str


class ComputedOut(ResponseModel):
    heart_rate_bpm: float | None
    rr_ms: float | None
    qrs_ms: float | None
    qt_ms: float | None
    qtc_bazett_ms: float | None
    qtc_fridericia_ms: float | None
    lead: str
    r_peaks: list[int]


class EcgOut(ResponseModel):
    sampling_hz: float
    group_label: str
    duration_s: float
    leads: list[LeadOut]
    machine: list[MachineValue]
    computed: ComputedOut


def ecg_out(ecg: Ecg, m: Measurements) -> EcgOut:
    samples = len(ecg.leads[0].millivolts) if ecg.leads else 0
    rr = sum(m.rr_ms) / len(m.rr_ms) if m.rr_ms else None
    return EcgOut(
        sampling_hz=ecg.sampling_hz,
        group_label=ecg.group_label,
        duration_s=samples / ecg.sampling_hz if ecg.sampling_hz else 0.0,
        leads=[
            LeadOut(label=lead.label, microvolts=[round(v * 1000) for v in lead.millivolts])
            for lead in ecg.leads
        ],
        machine=[
            MachineValue(concept=a.concept, text=a.text, value=a.value, unit=a.unit)
            for a in ecg.annotations
        ],
        computed=ComputedOut(
            heart_rate_bpm=m.heart_rate_bpm,
            rr_ms=rr,
            qrs_ms=m.qrs_ms,
            qt_ms=m.qt_ms,
            qtc_bazett_ms=m.qtc_bazett_ms,
            qtc_fridericia_ms=m.qtc_fridericia_ms,
            lead=m.lead,
            r_peaks=list(m.r_peaks),
        ),
    )


def svg_response(ecg: Ecg, m: Measurements) -> web.Response:
    return web.Response(
        text=render_svg(ecg, m),
        content_type="image/svg+xml",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


async def _measured(read: Callable[[], Ecg]) -> tuple[Ecg, Measurements]:
    def run() -> tuple[Ecg, Measurements]:
        ecg = read()
        return ecg, measure(ecg)

    try:
        return await asyncio.to_thread(run)
    except EcgError as exc:
        raise NotFound(f"not a readable ECG: {exc}") from None


async def _dicom_ecg(call: Call[None, None]) -> tuple[Ecg, Measurements]:
    rows = await visible_instances(
        call, call.path["study"], call.path["series"], call.path["instance"]
    )
    row = rows[0]
    path: Path = call.app[ARCHIVE].path_of(row.sha256)
    measured = await _measured(lambda: read_ecg(path))
    await call.audit(
        Entry(
            action="imaging.ecg",
            object_type="instance",
            object_id=row.sop_instance_uid,
            patient_id=row.patient_ref,
        )
    )
    return measured


async def _aecg(call: Call[None, None]) -> tuple[Ecg, Measurements]:
    attachment, consult = await load_attachment(call, kind="aecg", missing="no such ECG")
    path = call.app[BLOBS].path(attachment.sha256)
    measured = await _measured(lambda: read_aecg(path))
    await call.audit(read_entry(attachment, consult, "imaging.ecg"))
    return measured


@router.route(
    "GET",
    "/api/v1/ecg/{study}/{series}/{instance}",
    action=Action.IMAGING_READ,
    summary="A stored ECG: samples, the machine's measurements and ours",
    tags=["imaging"],
    path_types=UID_PATHS,
    response=EcgOut,
)
async def ecg_view(call: Call[None, None]) -> EcgOut:
    """Samples are integer microvolts; the machine's annotations are kept as they came and our
    computed values are given beside them, never in their place."""
    return ecg_out(*await _dicom_ecg(call))


@router.route(
    "GET",
    "/api/v1/ecg/{study}/{series}/{instance}/svg",
    action=Action.IMAGING_READ,
    summary="A stored ECG drawn at 25 mm/s and 10 mm/mV (3×4 and a rhythm strip) as SVG",
    tags=["imaging"],
    path_types=UID_PATHS,
    produces="image/svg+xml",
)
async def ecg_svg(call: Call[None, None]) -> web.Response:
    return svg_response(*await _dicom_ecg(call))


@router.route(
    "GET",
    "/api/v1/attachments/{attachment_id}/ecg",
    action=Action.CONSULT_READ,
    summary="An HL7 aECG attached to a consult, read like a DICOM ECG",
    tags=["imaging"],
    response=EcgOut,
)
async def aecg_view(call: Call[None, None]) -> EcgOut:
    """The attachment must be of kind ``aecg``; the answer has the same shape as a stored
    DICOM ECG's."""
    return ecg_out(*await _aecg(call))


@router.route(
    "GET",
    "/api/v1/attachments/{attachment_id}/ecg/svg",
    action=Action.CONSULT_READ,
    summary="An attached aECG drawn at 25 mm/s and 10 mm/mV as SVG",
    tags=["imaging"],
    produces="image/svg+xml",
)
async def aecg_svg(call: Call[None, None]) -> web.Response:
    return svg_response(*await _aecg(call))
