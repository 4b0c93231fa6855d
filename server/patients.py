"""Patients: one record per national ID across the consortium, seen through institutions.

A patient is *known* at the institutions that registered or saw them (``patient_links``). A
grassroots doctor registers a patient at their own institution; registering a national ID the
consortium already holds links the existing record (results are mutually recognised, 互认) when
the name matches, and is refused otherwise without revealing the other record. Every read, search
hit and change is audited; a refused look-up is audited as denied.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Entry, Outcome
from server.identity import NationalIdError, parse_national_id
from server.models import Patient, PatientLink, Sex
from server.policy import (
    Action,
    Principal,
    can_register_patient_at,
    patient_visible_clause,
)
from server.problems import Conflict, Forbidden, NotFound, ValidationFailed
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router

router = Router()

_NAME = re.compile(r"^[\u3400-\u9fff\uf900-\ufaffA-Za-z·•\. \-]{1,64}$")
_CARD = re.compile(r"^[0-9A-Za-z]{6,32}$")
_PHONE = re.compile(r"^\+?[0-9\-]{5,20}$")


def _national_id(value: str) -> str:
    try:
        return parse_national_id(value).value
    except NationalIdError as exc:
        raise ValueError(f"invalid national ID: {exc}") from None


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("a name of Chinese characters or letters, up to 64")
    return value


def _card(value: str) -> str:
    if not _CARD.match(value):
        raise ValueError("6 to 32 letters or digits")
    return value


def _phone(value: str) -> str:
    if not _PHONE.match(value):
        raise ValueError("digits, optionally with a leading + and hyphens")
    return value


NationalIdStr = Annotated[str, Field(min_length=18, max_length=18), AfterValidator(_national_id)]
PatientName = Annotated[str, AfterValidator(_name)]
HealthCard = Annotated[str, AfterValidator(_card)]
Phone = Annotated[str, AfterValidator(_phone)]


class PatientCreate(RequestModel):
    """Sex and birth date may be omitted: they are read from the national ID. When given, they
    must agree with it."""

    national_id: NationalIdStr
    name: PatientName
    sex: Sex | None = None
    birth_date: dt.date | None = None
    health_card_no: HealthCard | None = None
    phone: Phone | None = None

    @model_validator(mode="after")
    def _agrees_with_id(self) -> PatientCreate:
        nid = parse_national_id(self.national_id)
        if self.birth_date is not None and self.birth_date != nid.birth_date:
            raise ValueError("birth_date does not match the national ID")
        expected = Sex.MALE if nid.male else Sex.FEMALE
        if self.sex is not None and self.sex is not expected:
            raise ValueError("sex does not match the national ID")
        return self


class PatientUpdate(RequestModel):
    """National ID, sex and birth date do not change; a wrong ID is a new registration."""

    name: PatientName | None = None
    health_card_no: HealthCard | None = None
    phone: Phone | None = None
    #: The version the client read; a stale one gets 409.
    version: Annotated[int, Field(ge=1)] | None = None


class PatientOut(ResponseModel):
    id: uuid.UUID
    national_id: str
    name: str
    sex: Sex
    birth_date: dt.date
    health_card_no: str | None
    phone: str | None
    registered_by_institution_id: uuid.UUID
    institution_ids: list[uuid.UUID]
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    #: True when registration linked a record the consortium already held.
    linked_existing: bool = False


class PatientList(ResponseModel):
    items: list[PatientOut]
    total: int
    limit: int
    offset: int


class PatientQuery(QueryModel):
    national_id: Annotated[str, Field(max_length=18)] | None = None
    #: A prefix of the name.
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


async def _links(db: AsyncSession, patient_ids: list[uuid.UUID]) -> dict[uuid.UUID, set[uuid.UUID]]:
    found: dict[uuid.UUID, set[uuid.UUID]] = {pid: set() for pid in patient_ids}
    if patient_ids:
        rows = await db.execute(
            select(PatientLink.patient_id, PatientLink.institution_id).where(
                PatientLink.patient_id.in_(patient_ids)
            )
        )
        for pid, iid in rows:
            found[pid].add(iid)
    return found


def _out(patient: Patient, links: set[uuid.UUID], *, linked_existing: bool = False) -> PatientOut:
    return PatientOut(
        id=patient.id,
        national_id=patient.national_id,
        name=patient.name,
        sex=patient.sex,
        birth_date=patient.birth_date,
        health_card_no=patient.health_card_no,
        phone=patient.phone,
        registered_by_institution_id=patient.registered_by_institution_id,
        institution_ids=sorted(links),
        created_at=patient.created_at,
        updated_at=patient.updated_at,
        version=patient.version,
        linked_existing=linked_existing,
    )


async def load_visible_patient(
    call: Call[Any, Any], patient_id: uuid.UUID
) -> tuple[Patient, set[uuid.UUID]]:
    """The patient if the caller may see them; otherwise a 404 (audited as denied)."""
    patient = await call.session.scalar(
        select(Patient).where(
            Patient.id == patient_id, patient_visible_clause(call.principal, Patient.id)
        )
    )
    if patient is None:
        exists = await call.session.scalar(select(Patient.id).where(Patient.id == patient_id))
        await call.audit(
            Entry(
                action="patient.read",
                object_type="patient",
                object_id=str(patient_id),
                patient_id=exists,
                outcome=Outcome.DENIED,
            )
        )
        call.commit_on_error = True
        raise NotFound("no such patient")
    links = (await _links(call.session, [patient_id]))[patient_id]
    return patient, links


@router.route(
    "GET",
    "/api/v1/patients",
    action=Action.PATIENT_READ,
    summary="Search the patients visible to the caller",
    tags=["patients"],
    query=PatientQuery,
    response=PatientList,
)
async def list_patients(call: Call[None, PatientQuery]) -> PatientList:
    """Exact national ID, or a name prefix; each patient returned is audited."""
    q = call.query
    visible = patient_visible_clause(call.principal, Patient.id)
    stmt = select(Patient).where(visible)
    if q.national_id:
        stmt = stmt.where(Patient.national_id == q.national_id.upper())
    if q.name:
        stmt = stmt.where(Patient.name.startswith(q.name, autoescape=True))
    total = await call.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    patients = list(
        await call.session.scalars(
            stmt.order_by(Patient.name, Patient.id).limit(q.limit).offset(q.offset)
        )
    )
    links = await _links(call.session, [p.id for p in patients])
    await call.audit_many(
        Entry(action="patient.search", object_type="patient", object_id=str(p.id), patient_id=p.id)
        for p in patients
    )
    return PatientList(
        items=[_out(p, links[p.id]) for p in patients], total=total, limit=q.limit, offset=q.offset
    )


@router.route(
    "POST",
    "/api/v1/patients",
    action=Action.PATIENT_WRITE,
    summary="Register a patient at the caller's institution",
    tags=["patients"],
    body=PatientCreate,
    response=PatientOut,
    status=201,
    errors=[409],
)
async def create_patient(call: Call[PatientCreate, None]) -> PatientOut:
    """A national ID the consortium already holds is linked to the caller's institution when the
    name matches (``linked_existing``); a different name, or a patient already registered here,
    is a 409."""
    p: Principal = call.principal
    if not can_register_patient_at(p, p.institution_id):
        raise Forbidden("patients are registered at your own institution")
    body = call.body
    nid = parse_national_id(body.national_id)
    existing = await call.session.scalar(select(Patient).where(Patient.national_id == nid.value))
    if existing is not None:
        links = (await _links(call.session, [existing.id]))[existing.id]
        if p.institution_id in links:
            raise Conflict("this patient is already registered here", patient_id=str(existing.id))
        if existing.name != body.name:
            raise Conflict("this national ID is registered in the consortium under another name")
        call.session.add(PatientLink(patient_id=existing.id, institution_id=p.institution_id))
        await call.session.flush()
        await call.audit(
            Entry(
                action="patient.link",
                object_type="patient",
                object_id=str(existing.id),
                patient_id=existing.id,
            )
        )
        return _out(existing, links | {p.institution_id}, linked_existing=True)

    patient = Patient(
        national_id=nid.value,
        name=body.name,
        sex=Sex.MALE if nid.male else Sex.FEMALE,
        birth_date=nid.birth_date,
        health_card_no=body.health_card_no,
        phone=body.phone,
        registered_by_institution_id=p.institution_id,
    )
    call.session.add(patient)
    await call.session.flush()
    call.session.add(PatientLink(patient_id=patient.id, institution_id=p.institution_id))
    await call.session.flush()
    await call.audit(
        Entry(
            action="patient.create",
            object_type="patient",
            object_id=str(patient.id),
            patient_id=patient.id,
        )
    )
    return _out(patient, {p.institution_id})


@router.route(
    "GET",
    "/api/v1/patients/{patient_id}",
    action=Action.PATIENT_READ,
    summary="One patient, if visible to the caller",
    tags=["patients"],
    response=PatientOut,
)
async def get_patient(call: Call[None, None]) -> PatientOut:
    patient, links = await load_visible_patient(call, call.path["patient_id"])
    await call.audit(
        Entry(
            action="patient.read",
            object_type="patient",
            object_id=str(patient.id),
            patient_id=patient.id,
        )
    )
    return _out(patient, links)


@router.route(
    "PATCH",
    "/api/v1/patients/{patient_id}",
    action=Action.PATIENT_WRITE,
    summary="Correct a patient's name, health card or phone",
    tags=["patients"],
    body=PatientUpdate,
    response=PatientOut,
    errors=[409],
)
async def update_patient(call: Call[PatientUpdate, None]) -> PatientOut:
    patient, links = await load_visible_patient(call, call.path["patient_id"])
    body = call.body
    if body.version is not None and body.version != patient.version:
        raise Conflict("the patient was changed since you read it", version=patient.version)
    changes = body.model_dump(exclude_unset=True, exclude={"version"})
    if not changes:
        raise ValidationFailed("nothing to change")
    if "name" in changes and changes["name"] is None:
        raise ValidationFailed("a patient's name cannot be removed")
    for name, value in changes.items():
        setattr(patient, name, value)
    await call.session.flush()
    await call.audit(
        Entry(
            action="patient.update",
            object_type="patient",
            object_id=str(patient.id),
            patient_id=patient.id,
            detail={"fields": sorted(changes)},
        )
    )
    return _out(patient, links)
