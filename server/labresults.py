"""Lab results in: HL7 v2 ORU^R01 (over HTTP and MLLP) and FHIR R4, filed onto lab consults.

The laboratory information system (LIS) of the lab centre answers a lab consult with a message
whose placer order number is the consult's id. Each order's results are filed into the consult's
lab report: a draft authored by the LIS account (values with units, reference ranges and flags;
a result sent again with the same code replaces the old one), which the lab centre's specialist
reviews and signs as any report. A signed report is not changed: new or corrected results start an
amendment draft.

A critical value (危急值) does not wait for the signature: the consult's critical clock starts at
once, the station hears ``report.critical``, and the watchdog repeats and escalates until someone
there acknowledges it (``POST /api/v1/consults/{id}/critical/acknowledge``).

Refusals (an order that is not a lab consult of ours, another patient's national ID, a consult
that is closed) are ``LabRefused`` with a stable code: 422 problem+json over HTTP, an ``AE``
acknowledgement over MLLP. A message is filed whole or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imaging.fhirlab import FhirError, parse_fhir
from imaging.hl7v2 import Hl7Error, ack, encode, parse_oru
from imaging.lab import LabMessage, LabOrder
from imaging.mllp import MllpServer, serve_mllp
from server.audit import Actor, Entry, record
from server.consultflow import FINAL_STATES
from server.consults import note_in_timeline, requester_streams
from server.db import guarded_update
from server.events import PendingEvent, centre_stream, event_payload, user_stream
from server.events import write as write_events
from server.keys import ANNOUNCE, SESSIONS, SETTINGS
from server.models import (
    Centre,
    Consult,
    Patient,
    Report,
    ReportState,
    User,
    utcnow,
)
from server.policy import Action
from server.problems import Problem
from server.reports import LabValue
from server.routing import Call, ResponseModel, Router

log = logging.getLogger(__name__)
router = Router()

HL7_MEDIA = "x-application/hl7-v2+er7"
_LIMITS = {"code": 32, "name": 100, "value": 64, "unit": 32, "reference_range": 64}


class LabRefused(Problem):
    status, code, title, title_zh = 422, "lab-refused", "Lab result refused", "检验结果被拒收"


class Filed(ResponseModel):
    consult_id: uuid.UUID
    report_id: uuid.UUID
    report_version: int
    results: int
    critical: bool


class FiledList(ResponseModel):
    control_id: str
    items: list[Filed]


@dataclass(slots=True)
class Filing:
    """What filing one message wrote: audit actor, events to publish after it."""

    session: AsyncSession
    actor: Actor
    user_id: uuid.UUID
    events: list[PendingEvent]

    def publish(self, streams: Sequence[str], type: str, consult: Consult, **extra: Any) -> None:
        self.events.append(
            PendingEvent(tuple(streams), type, consult.id, event_payload(consult, **extra))
        )


def _refuse(code: str, detail: str) -> LabRefused:
    problem = LabRefused(detail)
    problem.code = f"lab-{code}"
    return problem


def _lab_value(values: dict[str, str]) -> dict[str, Any]:
    clipped = {k: (v or "")[: _LIMITS.get(k, 64)] for k, v in values.items()}
    if not clipped["value"]:
        clipped["value"] = "—"  # a result without a value (pending, cancelled) still shows
    if not clipped["name"]:
        clipped["name"] = clipped["code"] or "—"
    return LabValue.model_validate(clipped).model_dump(mode="json")


async def _consult_for(filing: Filing, order: LabOrder, message: LabMessage) -> Consult:
    try:
        consult_id = uuid.UUID(order.placer.strip())
    except ValueError:
        raise _refuse("unknown-order", "the placer order number is not a consult of ours") from None
    row = (
        await filing.session.execute(
            select(Consult, Patient.national_id)
            .join(Patient, Patient.id == Consult.patient_id)
            .where(Consult.id == consult_id)
            .with_for_update(of=Consult)
        )
    ).first()
    if row is None or row[0].centre is not Centre.LAB:
        raise _refuse("unknown-order", "the placer order number is not a lab consult of ours")
    consult, national_id = row
    if consult.state in FINAL_STATES:
        raise _refuse("consult-closed", f"the consult is {consult.state.value}")
    sent = message.national_id
    if sent is not None and sent.strip().upper() != national_id:
        raise _refuse("patient-mismatch", "the patient's national ID is not the consult's")
    return consult


def _merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New results replace old ones of the same code (a correction); others are added."""
    by_code = {r["code"]: i for i, r in enumerate(old) if r.get("code")}
    merged = list(old)
    for value in new:
        index = by_code.get(value["code"]) if value["code"] else None
        if index is None:
            merged.append(value)
        else:
            merged[index] = value
    return merged[:200]


async def _file_order(filing: Filing, message: LabMessage, order: LabOrder) -> Filed:
    session = filing.session
    consult = await _consult_for(filing, order, message)
    values = [_lab_value(r.as_lab_value()) for r in order.results]
    latest = await session.scalar(
        select(Report).where(Report.consult_id == consult.id).order_by(Report.version.desc())
    )
    critical = order.critical or any(v["flag"].startswith("critical") for v in values)
    if latest is not None and latest.state is ReportState.DRAFT:
        content = dict(latest.content)
        content["results"] = _merge(list(content.get("results", [])), values)
        latest.content = content
        latest.critical = latest.critical or critical
        latest.updated_at = utcnow()
        report = latest
    else:
        base: dict[str, Any] = {"kind": "lab", "results": []}
        if latest is not None:  # signed: an amendment draft carries the old values forward
            base = dict(latest.content)
        base["results"] = _merge(list(base.get("results", [])), values)
        report = Report(
            consult_id=consult.id,
            version=1 if latest is None else latest.version + 1,
            previous_id=None if latest is None else latest.id,
            centre=consult.centre,
            state=ReportState.DRAFT,
            content=base,
            critical=critical,
            author_user_id=filing.user_id,
        )
        session.add(report)
    await session.flush()
    note_in_timeline(
        session,
        consult,
        "lab.results",
        filing.user_id,
        detail={"results": str(len(values)), "report": str(report.id)},
    )
    entries = [
        Entry(
            action="lab.results",
            object_type="report",
            object_id=str(report.id),
            patient_id=consult.patient_id,
            detail={"results": len(values), "critical": critical},
        )
    ]
    streams = [centre_stream(consult.centre)]
    if consult.assignee_user_id is not None:
        streams.append(user_stream(consult.assignee_user_id))
    filing.publish(streams, "lab.results", consult, report_id=str(report.id), critical=critical)
    if critical and consult.critical_since is None:
        now = utcnow()
        await guarded_update(
            session,
            consult,
            "consult",
            critical_since=now,
            critical_reminded_at=None,
            critical_reminders=0,
        )
        note_in_timeline(
            session, consult, "lab.critical", filing.user_id, detail={"report": str(report.id)}
        )
        entries.append(
            Entry(
                action="lab.critical",
                object_type="consult",
                object_id=str(consult.id),
                patient_id=consult.patient_id,
            )
        )
        filing.publish(
            [*requester_streams(consult), centre_stream(consult.centre)],
            "report.critical",
            consult,
            report_id=str(report.id),
            version=report.version,
            critical=True,
            source="lab",
        )
    await record(session, filing.actor, entries)
    return Filed(
        consult_id=consult.id,
        report_id=report.id,
        report_version=report.version,
        results=len(values),
        critical=critical,
    )


async def file_message(filing: Filing, message: LabMessage) -> list[Filed]:
    """File every order of ``message`` in the filing's transaction (all or nothing)."""
    if not message.orders:
        raise _refuse("no-orders", "the message carries no results")
    return [await _file_order(filing, message, order) for order in message.orders]


# -- HTTP -------------------------------------------------------------------------------


async def _body(call: Call[None, None], limit: int = 4 * 1024 * 1024) -> bytes:
    data = bytearray()
    async for chunk in call.request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise _refuse("too-large", f"a lab message is at most {limit} bytes")
    return bytes(data)


def _filing(call: Call[None, None]) -> Filing:
    return Filing(call.session, call.actor(), call.principal.user_id, call.pending_events)


@router.route(
    "POST",
    "/api/v1/lab/hl7v2",
    action=Action.LAB_RESULTS,
    summary="File an HL7 v2 ORU^R01 from the lab information system; answers its ACK",
    tags=["lab"],
    raw_body=True,
    produces=HL7_MEDIA,
    errors=[422],
)
async def hl7v2_results(call: Call[None, None]) -> web.Response:
    """The body is the ER7 message (any Content-Type; character set from MSH-18). On success the
    answer is the ``AA`` acknowledgement; a refused message is 422 problem+json whose ``ack``
    holds the ``AE``/``AR`` acknowledgement to log on the LIS side."""
    raw = await _body(call)
    try:
        message = await asyncio.to_thread(parse_oru, raw)
    except Hl7Error as exc:
        problem = _refuse("hl7-" + exc.code, str(exc))
        problem.extensions["ack"] = ack(raw, exc.ack_code, str(exc), error=exc)
        raise problem from None
    try:
        await file_message(_filing(call), message)
    except LabRefused as exc:
        exc.extensions["ack"] = ack(message, "AE", exc.detail or exc.title)
        raise
    return web.Response(body=encode(ack(message, "AA")), content_type=HL7_MEDIA)


@router.route(
    "POST",
    "/api/v1/lab/fhir",
    action=Action.LAB_RESULTS,
    summary="File FHIR R4 lab results: an Observation, a DiagnosticReport or a Bundle",
    tags=["lab"],
    raw_body=True,
    response=FiledList,
    errors=[422],
)
async def fhir_results(call: Call[None, None]) -> FiledList:
    """``basedOn`` (a ServiceRequest identifier) carries the consult id as placer order number.
    A malformed resource is 422 with ``pointer``, the JSON pointer to the bad element."""
    raw = await _body(call)
    try:
        message = await asyncio.to_thread(parse_fhir, raw)
    except FhirError as exc:
        problem = _refuse("fhir-" + exc.reason, str(exc))
        problem.extensions["pointer"] = exc.pointer
        raise problem from None
    items = await file_message(_filing(call), message)
    return FiledList(control_id=message.control_id[:64], items=items)


# -- MLLP -------------------------------------------------------------------------------


def mllp_handler(app: web.Application, senders: dict[str, uuid.UUID]) -> Any:
    """ACK after the results are committed: AA filed, AE refused (do not resend), AR a message
    we cannot read or a failure on our side (resend)."""
    factory: async_sessionmaker[AsyncSession] = app[SESSIONS]

    async def handle(raw: bytes) -> bytes:
        try:
            message = await asyncio.to_thread(parse_oru, raw)
        except Hl7Error as exc:
            log.warning("mllp: message refused: %s", exc.code)
            return encode(ack(raw, exc.ack_code, str(exc), error=exc))
        user_id = senders.get(message.sending_app)
        if user_id is None:
            log.warning("mllp: a sender that is not in HUIZHEN_LAB_SENDERS was refused")
            return encode(ack(message, "AR", "sending application not accepted"))
        events: list[PendingEvent] = []
        actor = Actor(user_id, message.sending_app[:64], None, "mllp", "mllp")
        try:
            async with factory() as session:
                try:
                    await file_message(Filing(session, actor, user_id, events), message)
                except LabRefused as exc:
                    await session.rollback()
                    return encode(ack(message, "AE", exc.detail or exc.title))
                ids = await write_events(session, events)
                await session.commit()
        except Exception:
            log.exception("mllp: filing failed")
            return encode(ack(message, "AR", "the message could not be filed; send it again"))
        if ids and ANNOUNCE in app:
            await app[ANNOUNCE](ids)
        return encode(ack(message, "AA"))

    return handle


async def mllp_listener(app: web.Application) -> Any:
    """Cleanup context: the MLLP listener when ``HUIZHEN_MLLP_PORT`` is set."""
    settings = app[SETTINGS]
    if not settings.mllp_port:
        yield
        return
    async with app[SESSIONS]() as session:
        names = dict(settings.lab_senders)
        rows = await session.execute(
            select(User.username, User.id).where(User.username.in_(list(names.values())))
        )
        accounts: dict[str, uuid.UUID] = {row.username: row.id for row in rows}
    missing = sorted(set(names.values()) - set(accounts))
    if missing:
        raise RuntimeError(f"HUIZHEN_LAB_SENDERS names unknown accounts: {', '.join(missing)}")
    senders = {app_name: accounts[username] for app_name, username in names.items()}
    server: MllpServer = await serve_mllp(
        mllp_handler(app, senders), settings.host, settings.mllp_port
    )
    log.info("MLLP listener on %s:%d", settings.host, server.port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
