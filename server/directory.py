"""The consortium directory: institutions in tiers and the lead hospital's five centres.

The directory holds no patient data: every signed-in user may read it; admins change it.
Tier rules: a lead hospital and a partner hospital have no parent in the consortium; a township
health centre belongs to a lead hospital; a village clinic belongs to a township health centre.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Entry
from server.models import Centre, CentreSite, Institution, InstitutionKind
from server.policy import Action
from server.problems import Conflict, NotFound, ValidationFailed
from server.routing import Call, RequestModel, ResponseModel, Router

router = Router()

PARENT_KIND: dict[InstitutionKind, InstitutionKind | None] = {
    InstitutionKind.LEAD_HOSPITAL: None,
    InstitutionKind.PARTNER_HOSPITAL: None,
    InstitutionKind.TOWNSHIP_CENTRE: InstitutionKind.LEAD_HOSPITAL,
    InstitutionKind.VILLAGE_CLINIC: InstitutionKind.TOWNSHIP_CENTRE,
}

_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _code(value: str) -> str:
    if not _CODE.match(value):
        raise ValueError("2 to 32 lower-case letters, digits or hyphens")
    return value


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


Code = Annotated[str, AfterValidator(_code)]
NameZh = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
NameEn = Annotated[str, Field(max_length=200), AfterValidator(_printable)]


class InstitutionOut(ResponseModel):
    id: uuid.UUID
    code: str
    name_zh: str
    name_en: str
    kind: InstitutionKind
    parent_id: uuid.UUID | None
    active: bool
    created_at: dt.datetime


class InstitutionList(ResponseModel):
    items: list[InstitutionOut]


class InstitutionCreate(RequestModel):
    code: Code
    name_zh: NameZh
    name_en: NameEn = ""
    kind: InstitutionKind
    parent_id: uuid.UUID | None = None


class InstitutionUpdate(RequestModel):
    name_zh: NameZh | None = None
    name_en: NameEn | None = None
    active: bool | None = None


class CentreOut(ResponseModel):
    code: Centre
    name_zh: str
    name_en: str
    institution_id: uuid.UUID


class CentreList(ResponseModel):
    items: list[CentreOut]


async def check_parent(
    db: AsyncSession, kind: InstitutionKind, parent_id: uuid.UUID | None
) -> None:
    wanted = PARENT_KIND[kind]
    if wanted is None:
        if parent_id is not None:
            raise ValidationFailed(f"a {kind.value} has no parent institution")
        return
    if parent_id is None:
        raise ValidationFailed(f"a {kind.value} needs a parent {wanted.value}")
    parent = await db.get(Institution, parent_id)
    if parent is None:
        raise ValidationFailed("unknown parent institution", field="parent_id")
    if parent.kind is not wanted:
        raise ValidationFailed(f"the parent of a {kind.value} must be a {wanted.value}")


async def get_institution(db: AsyncSession, institution_id: uuid.UUID) -> Institution:
    inst = await db.get(Institution, institution_id)
    if inst is None:
        raise NotFound("no such institution")
    return inst


async def add_institution(
    db: AsyncSession,
    *,
    code: str,
    name_zh: str,
    name_en: str,
    kind: InstitutionKind,
    parent_id: uuid.UUID | None,
) -> Institution:
    """Add an institution after checking its code and tier (the API and the CLI both use it)."""
    _code(code)
    await check_parent(db, kind, parent_id)
    if await db.scalar(select(Institution.id).where(Institution.code == code)):
        raise Conflict(f"institution code {code!r} is taken")
    inst = Institution(code=code, name_zh=name_zh, name_en=name_en, kind=kind, parent_id=parent_id)
    db.add(inst)
    await db.flush()
    return inst


CENTRE_NAMES: dict[Centre, tuple[str, str]] = {
    Centre.ECG: ("远程心电中心", "Remote ECG centre"),
    Centre.IMAGING: ("远程影像中心", "Remote imaging centre"),
    Centre.CONSULTATION: ("远程会诊中心", "Remote consultation centre"),
    Centre.LAB: ("远程检验中心", "Remote laboratory centre"),
    Centre.PATHOLOGY: ("远程病理中心", "Remote pathology centre"),
}


async def host_centres(db: AsyncSession, *, code: str) -> None:
    """Make the lead hospital ``code`` host the five centres (the consortium has one such)."""
    inst = await db.scalar(select(Institution).where(Institution.code == code))
    if inst is None or inst.kind is not InstitutionKind.LEAD_HOSPITAL:
        raise ValidationFailed("only a lead hospital hosts the centres")
    if await db.scalar(select(CentreSite.code).limit(1)) is not None:
        raise Conflict("the five centres are already hosted")
    for centre, (name_zh, name_en) in CENTRE_NAMES.items():
        db.add(CentreSite(code=centre, institution_id=inst.id, name_zh=name_zh, name_en=name_en))
    await db.flush()


@router.route(
    "GET",
    "/api/v1/institutions",
    action=Action.DIRECTORY_READ,
    summary="List the consortium's institutions",
    tags=["directory"],
    response=InstitutionList,
)
async def list_institutions(call: Call[None, None]) -> InstitutionList:
    rows = await call.session.scalars(
        select(Institution).order_by(Institution.kind, Institution.code)
    )
    return InstitutionList(items=[InstitutionOut.model_validate(r) for r in rows])


@router.route(
    "GET",
    "/api/v1/institutions/{institution_id}",
    action=Action.DIRECTORY_READ,
    summary="One institution",
    tags=["directory"],
    response=InstitutionOut,
)
async def get_institution_route(call: Call[None, None]) -> InstitutionOut:
    return InstitutionOut.model_validate(
        await get_institution(call.session, call.path["institution_id"])
    )


@router.route(
    "POST",
    "/api/v1/institutions",
    action=Action.INSTITUTION_WRITE,
    summary="Add an institution to the consortium",
    tags=["directory"],
    body=InstitutionCreate,
    response=InstitutionOut,
    status=201,
    errors=[409],
)
async def create_institution(call: Call[InstitutionCreate, None]) -> InstitutionOut:
    inst = await add_institution(call.session, **call.body.model_dump())
    await call.audit(
        Entry(action="institution.create", object_type="institution", object_id=str(inst.id))
    )
    return InstitutionOut.model_validate(inst)


@router.route(
    "PATCH",
    "/api/v1/institutions/{institution_id}",
    action=Action.INSTITUTION_WRITE,
    summary="Rename, deactivate or reactivate an institution",
    tags=["directory"],
    body=InstitutionUpdate,
    response=InstitutionOut,
)
async def update_institution(call: Call[InstitutionUpdate, None]) -> InstitutionOut:
    inst = await get_institution(call.session, call.path["institution_id"])
    changes = call.body.model_dump(exclude_unset=True, exclude_none=True)
    for name, value in changes.items():
        setattr(inst, name, value)
    await call.session.flush()
    await call.audit(
        Entry(
            action="institution.update",
            object_type="institution",
            object_id=str(inst.id),
            detail={"fields": sorted(changes)},
        )
    )
    return InstitutionOut.model_validate(inst)


@router.route(
    "GET",
    "/api/v1/centres",
    action=Action.DIRECTORY_READ,
    summary="The five remote centres and the hospital that hosts them",
    tags=["directory"],
    response=CentreList,
)
async def list_centres(call: Call[None, None]) -> CentreList:
    rows = await call.session.scalars(select(CentreSite))
    order = list(Centre)
    items = sorted((CentreOut.model_validate(r) for r in rows), key=lambda c: order.index(c.code))
    return CentreList(items=items)
