"""Signed reports as printable PDFs: ``GET /api/v1/reports/{id}/pdf``.

The route gathers what the printout shows (the hospital and centre, the patient with the national
ID masked, the request, the centre's structured content, the signer, the signing time and the
SHA-256 of the signed canonical form), audits the export, and has ``server.printout`` render it
with ReportLab in a worker thread. Only a signed report exports; drafts stay inside the centre.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import select

from server.audit import Entry
from server.consults import load_consult
from server.directory import CENTRE_NAMES
from server.identity import mask_national_id
from server.models import CentreSite, Consult, Institution, Patient, Report, ReportState, User
from server.policy import Action, can_work_on
from server.printable import Printable
from server.printout import render
from server.problems import Conflict, NotFound
from server.routing import Call, Router

router = Router()

# -- the route --------------------------------------------------------------------------------


async def _printable(
    call: Call[Any, Any], report: Report, consult: Consult, patient: Patient
) -> Printable:
    assert report.signed_at is not None
    assert report.signed_by_user_id is not None
    assert report.sha256 is not None
    site = (
        await call.session.execute(
            select(CentreSite.name_zh, CentreSite.name_en, Institution.name_zh)
            .join(Institution, Institution.id == CentreSite.institution_id)
            .where(CentreSite.code == consult.centre)
        )
    ).first()
    centre_zh, centre_en = CENTRE_NAMES[consult.centre]
    hospital = ""
    if site is not None:
        centre_zh, centre_en, hospital = site[0], site[1], site[2]
    users = {
        row.id: row
        for row in await call.session.execute(
            select(User.id, User.display_name, User.institution_id).where(
                User.id.in_({consult.requester_user_id, report.signed_by_user_id})
            )
        )
    }
    signer = users.get(report.signed_by_user_id)
    requester = users.get(consult.requester_user_id)
    wanted = {consult.requester_institution_id, consult.escalated_to_institution_id}
    if signer is not None:
        wanted.add(signer.institution_id)
    names = {
        row.id: row.name_zh
        for row in await call.session.execute(
            select(Institution.id, Institution.name_zh).where(
                Institution.id.in_({i for i in wanted if i is not None})
            )
        )
    }
    escalated = consult.escalated_to_institution_id
    return Printable(
        hospital=hospital,
        centre=consult.centre,
        centre_zh=centre_zh,
        centre_en=centre_en,
        consult_id=consult.id,
        priority=consult.priority,
        question=consult.question,
        clinical_summary=consult.clinical_summary,
        requester_institution=names.get(consult.requester_institution_id, ""),
        requester_doctor=requester.display_name if requester else "",
        escalated_to=names.get(escalated, "") if escalated else "",
        submitted_at=consult.submitted_at,
        patient_name=patient.name,
        patient_sex=patient.sex,
        birth_date=patient.birth_date,
        national_id_masked=mask_national_id(patient.national_id),
        version=report.version,
        content=report.content,
        critical=report.critical,
        signer=signer.display_name if signer else str(report.signed_by_user_id)[:8],
        signer_institution=names.get(signer.institution_id, "") if signer else "",
        signed_at=report.signed_at,
        sha256=report.sha256,
    )


@router.route(
    "GET",
    "/api/v1/reports/{report_id}/pdf",
    action=Action.CONSULT_READ,
    summary="A signed report as a printable PDF (A4, Chinese text embedded)",
    tags=["reports"],
    errors=[409],
    produces="application/pdf",
)
async def report_pdf(call: Call[None, None]) -> web.Response:
    """Answers ``application/pdf`` (inline, named ``report-<consult>-v<version>.pdf``) with the
    patient's national ID masked, times in Beijing time, and the SHA-256 of the signed form on
    every page. Only a signed report exports: a draft is 409 (and 404 outside its centre)."""
    report = await call.session.get(Report, call.path["report_id"])
    if report is None:
        raise NotFound("no such report")
    consult, patient = await load_consult(call, report.consult_id)
    if report.state is ReportState.DRAFT:
        if not can_work_on(call.principal, consult):
            raise NotFound("no such report")  # drafts stay inside the centre
        raise Conflict(
            "only a signed report exports as PDF; sign this draft first",
            report_state=report.state.value,
        )
    printable = await _printable(call, report, consult, patient)
    await call.audit(
        Entry(
            action="report.pdf",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
        )
    )
    pdf = await asyncio.to_thread(render, printable)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{printable.filename}"'},
    )
