"""Reports: structured per centre, drafted, signed (frozen, hashed), amended as new versions.

Signing stores the SHA-256 of the report's canonical form (sorted-key JSON of the consult id,
version, centre, content, signer and signing time) and moves the consult to ``reported``. The
signed report is announced to the requesting doctor and station in the same transaction; a
critical value is announced as such and must be acknowledged (see the consultation issue).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import func, select

from server.audit import Entry
from server.consultflow import ConsultAction, ConsultState
from server.consults import display_names, load_consult, requester_streams, transition
from server.events import event_payload
from server.models import Centre, Consult, Report, ReportState, utcnow
from server.policy import Action, can_work_on
from server.problems import Conflict, Forbidden, NotFound, ValidationFailed
from server.routing import Call, RequestModel, ResponseModel, Router

router = Router()

Prose = Annotated[str, Field(max_length=8000)]
Short = Annotated[str, Field(max_length=200)]


class Referral(RequestModel):
    direction: Literal["none", "up", "down"] = "none"
    green_channel: bool = False
    note: Annotated[str, Field(max_length=2000)] = ""


class _Common(RequestModel):
    findings: Prose = ""
    impression: Prose = ""
    recommendation: Prose = ""
    referral: Referral = Referral()
    critical: bool = False
    critical_note: Annotated[str, Field(max_length=2000)] = ""


class EcgMeasurements(RequestModel):
    hr_bpm: Annotated[int, Field(ge=10, le=350)] | None = None
    pr_ms: Annotated[int, Field(ge=0, le=600)] | None = None
    qrs_ms: Annotated[int, Field(ge=20, le=400)] | None = None
    qt_ms: Annotated[int, Field(ge=100, le=800)] | None = None
    qtc_ms: Annotated[int, Field(ge=100, le=900)] | None = None
    qtc_formula: Literal["bazett", "fridericia", "framingham", "hodges"] | None = None
    p_axis_deg: Annotated[int, Field(ge=-180, le=360)] | None = None
    qrs_axis_deg: Annotated[int, Field(ge=-180, le=360)] | None = None
    t_axis_deg: Annotated[int, Field(ge=-180, le=360)] | None = None


class EcgReport(_Common):
    kind: Literal["ecg"] = "ecg"
    measurements: EcgMeasurements = EcgMeasurements()
    rhythm_statements: Annotated[list[Short], Field(max_length=30)] = []


class ImagingReport(_Common):
    kind: Literal["imaging"] = "imaging"
    modality: Annotated[str, Field(max_length=16)] = ""
    body_part: Short = ""
    technique: Prose = ""


class ConsultationReport(_Common):
    kind: Literal["consultation"] = "consultation"
    assessment: Prose = ""
    plan: Prose = ""


class LabValue(RequestModel):
    code: Annotated[str, Field(max_length=32)] = ""
    name: Annotated[str, Field(min_length=1, max_length=100)]
    value: Annotated[str, Field(min_length=1, max_length=64)]
    unit: Annotated[str, Field(max_length=32)] = ""
    reference_range: Annotated[str, Field(max_length=64)] = ""
    flag: Literal["normal", "low", "high", "critical_low", "critical_high", "abnormal"] = "normal"


class LabReport(_Common):
    kind: Literal["lab"] = "lab"
    results: Annotated[list[LabValue], Field(max_length=200)] = []


class PathologyReport(_Common):
    kind: Literal["pathology"] = "pathology"
    specimen: Prose = ""
    gross: Prose = ""
    microscopic: Prose = ""
    diagnosis: Prose = ""


ReportContent = Annotated[
    EcgReport | ImagingReport | ConsultationReport | LabReport | PathologyReport,
    Field(discriminator="kind"),
]


class ReportBody(RequestModel):
    content: ReportContent


class ReportOut(ResponseModel):
    id: uuid.UUID
    consult_id: uuid.UUID
    version: int
    previous_id: uuid.UUID | None
    centre: Centre
    state: ReportState
    content: dict[str, Any]
    critical: bool
    author_user_id: uuid.UUID
    created_at: dt.datetime
    updated_at: dt.datetime
    signed_by_user_id: uuid.UUID | None
    signed_at: dt.datetime | None
    sha256: str | None
    author_name: str = ""
    signer_name: str | None = None


class ReportDetail(ReportOut):
    #: Every version of this consult's report, oldest first.
    history: list[ReportOut]


def canonical(report: Report) -> bytes:
    """The signed form: stable key order, no whitespace, UTF-8."""
    assert report.signed_at is not None
    assert report.signed_by_user_id is not None
    doc = {
        "consult_id": str(report.consult_id),
        "version": report.version,
        "centre": report.centre.value,
        "content": report.content,
        "signed_by": str(report.signed_by_user_id),
        "signed_at": report.signed_at.astimezone(dt.UTC).isoformat(),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _is_critical(content: ReportBody) -> bool:
    c = content.content
    if c.critical:
        return True
    return isinstance(c, LabReport) and any(v.flag.startswith("critical") for v in c.results)


async def _load_report(call: Call[Any, Any], report_id: uuid.UUID) -> tuple[Report, Consult]:
    report = await call.session.get(Report, report_id)
    if report is None:
        raise NotFound("no such report")
    consult, _ = await load_consult(call, report.consult_id)
    return report, consult


async def _detail(call: Call[Any, Any], report: Report, consult: Consult) -> ReportDetail:
    """The report and its versions; drafts only for the centre that writes them."""
    stmt = select(Report).where(Report.consult_id == report.consult_id)
    if not can_work_on(call.principal, consult):
        stmt = stmt.where(Report.state == ReportState.SIGNED)
    history = list(await call.session.scalars(stmt.order_by(Report.version)))
    names = await display_names(
        call.session,
        [x for r in [report, *history] for x in (r.author_user_id, r.signed_by_user_id)],
    )

    def out(r: Report) -> ReportOut:
        o = ReportOut.model_validate(r)
        o.author_name = names.get(r.author_user_id, "")
        o.signer_name = names.get(r.signed_by_user_id) if r.signed_by_user_id else None
        return o

    return ReportDetail(**out(report).model_dump(), history=[out(r) for r in history])


def _check_centre(consult: Consult, body: ReportBody) -> None:
    if body.content.kind != consult.centre.value:
        raise ValidationFailed(
            f"a {consult.centre.value} consult takes a {consult.centre.value} report",
            field="content.kind",
        )


def _require_author(call: Call[Any, Any], consult: Consult) -> None:
    p = call.principal
    if not can_work_on(p, consult):
        raise Forbidden("only a specialist of this centre writes its reports")
    if consult.state is ConsultState.CLAIMED and consult.assignee_user_id != p.user_id:
        raise Forbidden("this consult is claimed by another specialist")


@router.route(
    "POST",
    "/api/v1/consults/{consult_id}/reports",
    action=Action.CONSULT_WORK,
    summary="Start the report of a claimed (or escalated) consult as a draft",
    tags=["reports"],
    body=ReportBody,
    response=ReportDetail,
    status=201,
    errors=[409],
)
async def create_report(call: Call[ReportBody, None]) -> ReportDetail:
    consult, _ = await load_consult(call, call.path["consult_id"])
    _require_author(call, consult)
    if consult.state not in (ConsultState.CLAIMED, ConsultState.ESCALATED):
        raise Conflict(f"a {consult.state.value} consult takes no new report; amend the signed one")
    _check_centre(consult, call.body)
    existing = await call.session.scalar(select(Report.id).where(Report.consult_id == consult.id))
    if existing is not None:
        raise Conflict("this consult already has a report; edit the draft", report_id=str(existing))
    report = Report(
        consult_id=consult.id,
        version=1,
        centre=consult.centre,
        state=ReportState.DRAFT,
        content=call.body.content.model_dump(mode="json"),
        critical=_is_critical(call.body),
        author_user_id=call.principal.user_id,
    )
    call.session.add(report)
    await call.session.flush()
    await call.audit(
        Entry(
            action="report.create",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    return await _detail(call, report, consult)


@router.route(
    "GET",
    "/api/v1/reports/{report_id}",
    action=Action.CONSULT_READ,
    summary="A report with every version of it",
    tags=["reports"],
    response=ReportDetail,
)
async def get_report(call: Call[None, None]) -> ReportDetail:
    report, consult = await _load_report(call, call.path["report_id"])
    if report.state is ReportState.DRAFT and not can_work_on(call.principal, consult):
        raise NotFound("no such report")  # drafts stay inside the centre
    await call.audit(
        Entry(
            action="report.read",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    return await _detail(call, report, consult)


@router.route(
    "PATCH",
    "/api/v1/reports/{report_id}",
    action=Action.CONSULT_WORK,
    summary="Edit a draft report (a signed report is frozen)",
    tags=["reports"],
    body=ReportBody,
    response=ReportDetail,
    errors=[409],
)
async def edit_report(call: Call[ReportBody, None]) -> ReportDetail:
    report, consult = await _load_report(call, call.path["report_id"])
    _require_author(call, consult)
    if report.state is ReportState.SIGNED:
        raise Conflict("a signed report is frozen; amend it to make a new version")
    _check_centre(consult, call.body)
    report.content = call.body.content.model_dump(mode="json")
    report.critical = _is_critical(call.body)
    report.updated_at = utcnow()
    await call.session.flush()
    await call.audit(
        Entry(
            action="report.update",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    return await _detail(call, report, consult)


@router.route(
    "POST",
    "/api/v1/reports/{report_id}/sign",
    action=Action.CONSULT_WORK,
    summary="Sign a draft: freeze it, hash it, and route it back to the requesting station",
    tags=["reports"],
    response=ReportDetail,
    errors=[409],
)
async def sign_report(call: Call[None, None]) -> ReportDetail:
    report, consult = await _load_report(call, call.path["report_id"])
    _require_author(call, consult)
    if report.state is ReportState.SIGNED:
        raise Conflict("this report is already signed")
    now = utcnow()
    report.state = ReportState.SIGNED
    report.signed_by_user_id = call.principal.user_id
    report.signed_at = now
    report.updated_at = now
    report.sha256 = hashlib.sha256(canonical(report)).hexdigest()
    action = ConsultAction.REPORT if report.version == 1 else ConsultAction.AMEND
    await transition(
        call,
        consult,
        action,
        detail={"report_id": str(report.id), "version": report.version},
        reported_at=now,
        acknowledged_at=None,
        critical_since=now if report.critical else None,
        critical_reminded_at=None,
        critical_reminders=0,
    )
    await call.session.flush()
    await call.audit(
        Entry(
            action="report.sign",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    payload = event_payload(
        consult, report_id=str(report.id), version=report.version, critical=report.critical
    )
    call.publish(
        requester_streams(consult), "report.signed", consult_id=consult.id, payload=payload
    )
    if report.critical:
        call.publish(
            requester_streams(consult), "report.critical", consult_id=consult.id, payload=payload
        )
    return await _detail(call, report, consult)


@router.route(
    "POST",
    "/api/v1/reports/{report_id}/amend",
    action=Action.CONSULT_WORK,
    summary="Start an amendment: a new draft version linked to the signed one",
    tags=["reports"],
    response=ReportDetail,
    status=201,
    errors=[409],
)
async def amend_report(call: Call[None, None]) -> ReportDetail:
    report, consult = await _load_report(call, call.path["report_id"])
    if not can_work_on(call.principal, consult):
        raise Forbidden("only a specialist of this centre amends its reports")
    if report.state is not ReportState.SIGNED:
        raise Conflict("only a signed report is amended; edit the draft instead")
    latest = await call.session.scalar(
        select(func.max(Report.version)).where(Report.consult_id == consult.id)
    )
    if latest != report.version:
        raise Conflict("amend the latest version", latest_version=latest)
    amendment = Report(
        consult_id=consult.id,
        version=report.version + 1,
        previous_id=report.id,
        centre=report.centre,
        state=ReportState.DRAFT,
        content=dict(report.content),
        critical=report.critical,
        author_user_id=call.principal.user_id,
    )
    call.session.add(amendment)
    await call.session.flush()
    await call.audit(
        Entry(
            action="report.amend",
            object_type="report",
            object_id=str(amendment.id),
            patient_id=consult.patient_id,
        )
    )
    return await _detail(call, amendment, consult)
