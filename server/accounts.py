"""User accounts: created and managed by admins; each belongs to one institution.

Role rules checked here (a wrong combination is a 422, never a half-made account):
grassroots doctors work at a township health centre or village clinic; specialists and centre
coordinators work where centres are hosted (the lead hospital, or a partner hospital for
specialists) and name their centres; ambulances belong to the lead hospital.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Entry
from server.directory import NameZh, get_institution
from server.keys import PASSWORDS
from server.models import (
    AuthSession,
    Centre,
    CentreMembership,
    Institution,
    InstitutionKind,
    Role,
    User,
    UserRole,
    utcnow,
)
from server.policy import Action
from server.problems import Conflict, NotFound, ValidationFailed
from server.routing import Call, QueryModel, RequestModel, ResponseModel, Router

router = Router()

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError("2 to 64 lower-case letters, digits, dots, hyphens or underscores")
    return value


Username = Annotated[str, AfterValidator(_username)]
NewPassword = Annotated[str, Field(min_length=10, max_length=256)]

_ROLE_INSTITUTIONS: dict[Role, frozenset[InstitutionKind]] = {
    Role.GRASSROOTS_DOCTOR: frozenset(
        {InstitutionKind.TOWNSHIP_CENTRE, InstitutionKind.VILLAGE_CLINIC}
    ),
    Role.SPECIALIST: frozenset({InstitutionKind.LEAD_HOSPITAL, InstitutionKind.PARTNER_HOSPITAL}),
    Role.CENTRE_COORDINATOR: frozenset({InstitutionKind.LEAD_HOSPITAL}),
    Role.STROKE_TEAM: frozenset({InstitutionKind.LEAD_HOSPITAL}),
    Role.AMBULANCE: frozenset({InstitutionKind.LEAD_HOSPITAL}),
    Role.INTERFACE: frozenset({InstitutionKind.LEAD_HOSPITAL}),
}


class UserOut(ResponseModel):
    id: uuid.UUID
    username: str
    display_name: str
    institution_id: uuid.UUID
    roles: list[Role]
    centres: list[Centre]
    active: bool
    created_at: dt.datetime


class UserList(ResponseModel):
    items: list[UserOut]


class UserCreate(RequestModel):
    username: Username
    display_name: NameZh
    institution_id: uuid.UUID
    password: NewPassword
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(Role))]
    centres: Annotated[list[Centre], Field(max_length=len(Centre))] = []


class UserUpdate(RequestModel):
    display_name: NameZh | None = None
    active: bool | None = None
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(Role))] | None = None
    centres: Annotated[list[Centre], Field(max_length=len(Centre))] | None = None
    password: NewPassword | None = None


class UserQuery(QueryModel):
    institution_id: uuid.UUID | None = None
    role: Role | None = None


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        institution_id=user.institution_id,
        roles=sorted(user.role_set),
        centres=sorted(user.centre_set),
        active=user.active,
        created_at=user.created_at,
    )


def check_roles(institution: Institution, roles: set[Role], centres: set[Centre]) -> None:
    for role in roles:
        allowed = _ROLE_INSTITUTIONS.get(role)
        if allowed is not None and institution.kind not in allowed:
            raise ValidationFailed(
                f"a {role.value} cannot belong to a {institution.kind.value}", field="roles"
            )
    centre_roles = {Role.SPECIALIST, Role.CENTRE_COORDINATOR}
    if centres and not roles & centre_roles:
        raise ValidationFailed("only specialists and coordinators hold centres", field="centres")
    if roles & centre_roles and not centres:
        raise ValidationFailed("specialists and coordinators need a centre", field="centres")


async def create_user(
    db: AsyncSession,
    *,
    username: str,
    display_name: str,
    institution: Institution,
    password_hash: str,
    roles: set[Role],
    centres: set[Centre],
) -> User:
    """Create an account after checking its roles (used by the API, the CLI and the seed)."""
    check_roles(institution, roles, centres)
    if await db.scalar(select(User.id).where(User.username == username)):
        raise Conflict(f"username {username!r} is taken")
    user = User(
        username=username,
        display_name=display_name,
        institution_id=institution.id,
        password_hash=password_hash,
        roles=[UserRole(role=r) for r in sorted(roles)],
        centres=[CentreMembership(centre=c) for c in sorted(centres)],
    )
    db.add(user)
    await db.flush()
    return user


async def _get_user(db: AsyncSession, user_id: uuid.UUID) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


@router.route(
    "GET",
    "/api/v1/users",
    action=Action.USER_READ,
    summary="List accounts",
    tags=["accounts"],
    query=UserQuery,
    response=UserList,
)
async def list_users(call: Call[None, UserQuery]) -> UserList:
    stmt = select(User).order_by(User.username)
    if call.query.institution_id is not None:
        stmt = stmt.where(User.institution_id == call.query.institution_id)
    if call.query.role is not None:
        stmt = stmt.where(User.roles.any(UserRole.role == call.query.role))
    users = await call.session.scalars(stmt)
    return UserList(items=[user_out(u) for u in users])


@router.route(
    "GET",
    "/api/v1/users/{user_id}",
    action=Action.USER_READ,
    summary="One account",
    tags=["accounts"],
    response=UserOut,
)
async def get_user(call: Call[None, None]) -> UserOut:
    return user_out(await _get_user(call.session, call.path["user_id"]))


@router.route(
    "POST",
    "/api/v1/users",
    action=Action.USER_WRITE,
    summary="Create an account",
    tags=["accounts"],
    body=UserCreate,
    response=UserOut,
    status=201,
    errors=[409],
)
async def create_user_route(call: Call[UserCreate, None]) -> UserOut:
    body = call.body
    institution = await call.session.get(Institution, body.institution_id)
    if institution is None:
        raise ValidationFailed("unknown institution", field="institution_id")
    user = await create_user(
        call.session,
        username=body.username,
        display_name=body.display_name,
        institution=institution,
        password_hash=await call.app[PASSWORDS].hash(body.password),
        roles=set(body.roles),
        centres=set(body.centres),
    )
    await call.audit(Entry(action="user.create", object_type="user", object_id=str(user.id)))
    return user_out(user)


@router.route(
    "PATCH",
    "/api/v1/users/{user_id}",
    action=Action.USER_WRITE,
    summary="Change an account: name, roles, centres, password, or disable it",
    tags=["accounts"],
    body=UserUpdate,
    response=UserOut,
)
async def update_user(call: Call[UserUpdate, None]) -> UserOut:
    """Disabling an account or resetting its password signs out all its sessions."""
    db = call.session
    user = await _get_user(db, call.path["user_id"])
    body = call.body
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    roles = set(body.roles) if body.roles is not None else set(user.role_set)
    centres = set(body.centres) if body.centres is not None else set(user.centre_set)
    check_roles(await get_institution(db, user.institution_id), roles, centres)
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.roles is not None:
        user.roles = [UserRole(role=r) for r in sorted(roles)]
    if body.centres is not None:
        user.centres = [CentreMembership(centre=c) for c in sorted(centres)]
    if body.active is not None:
        user.active = body.active
    if body.password is not None:
        user.password_hash = await call.app[PASSWORDS].hash(body.password)
        user.password_changed_at = utcnow()
    if body.password is not None or body.active is False:
        await db.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    await db.flush()
    await call.audit(
        Entry(
            action="user.update",
            object_type="user",
            object_id=str(user.id),
            detail={"fields": sorted(changes)},
        )
    )
    return user_out(user)
