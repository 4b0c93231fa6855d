"""Sign-in, sign-out, the caller's own account and password change."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select, update

from server import audit
from server.audit import Entry, Outcome
from server.keys import PASSWORDS, SECRET, SETTINGS
from server.models import AuthSession, Centre, Institution, InstitutionKind, Role, User, utcnow
from server.policy import Action, permissions_for
from server.problems import InvalidCredentials, ValidationFailed, WrongPassword
from server.routing import Call, RequestModel, ResponseModel, Router
from server.sessions import CSRF_COOKIE, SESSION_COOKIE, Throttle, issue, revoke

router = Router()

Username = Annotated[str, Field(min_length=1, max_length=64)]
Password = Annotated[str, Field(min_length=1, max_length=256)]
NewPassword = Annotated[str, Field(min_length=10, max_length=256)]


class LoginBody(RequestModel):
    username: Username
    password: Password


class InstitutionBrief(ResponseModel):
    id: uuid.UUID
    code: str
    name_zh: str
    name_en: str
    kind: InstitutionKind


class Me(ResponseModel):
    id: uuid.UUID
    username: str
    display_name: str
    institution: InstitutionBrief
    roles: list[Role]
    centres: list[Centre]
    permissions: list[Action]


class LoginResult(ResponseModel):
    token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name
    csrf_token: str
    expires_at: dt.datetime
    user: Me


class PasswordChange(RequestModel):
    current_password: Password
    new_password: NewPassword


def me_of(user: User, institution: Institution, permissions: frozenset[Action]) -> Me:
    return Me(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        institution=InstitutionBrief.model_validate(institution),
        roles=sorted(user.role_set),
        centres=sorted(user.centre_set),
        permissions=sorted(permissions),
    )


@router.route(
    "POST",
    "/api/v1/auth/login",
    action=None,
    summary="Sign in with username and password",
    tags=["auth"],
    body=LoginBody,
    response=LoginResult,
    errors=[401, 429],
)
async def login(call: Call[LoginBody, None]) -> web.Response:
    """Returns a bearer token and sets the browser's session cookie. Repeated failures from one
    username or address are throttled (429 with Retry-After)."""
    settings = call.app[SETTINGS]
    body = call.body
    address = call.client_address
    throttle = Throttle(settings.login_max_failures, settings.login_lockout_seconds)
    await throttle.check(call.session, body.username, address)

    row = (
        await call.session.execute(
            select(User, Institution)
            .join(Institution, Institution.id == User.institution_id)
            .where(User.username == body.username)
        )
    ).first()
    user, institution = (row[0], row[1]) if row is not None else (None, None)
    ok = await call.app[PASSWORDS].verify(user.password_hash if user else None, body.password)
    if not ok or user is None or institution is None or not (user.active and institution.active):
        await throttle.failed(call.session, body.username, address)
        await _audit_login(call, body.username, user, Outcome.FAILED)
        call.commit_on_error = True  # keep the failure count and its audit record
        raise InvalidCredentials()

    await throttle.succeeded(call.session, body.username)
    issued = await issue(
        call.session,
        call.app[SECRET],
        user,
        ttl=settings.session_ttl_seconds,
        client_address=address,
    )
    await _audit_login(call, user.username, user, Outcome.OK, session_id=issued.session.id)
    result = LoginResult(
        token=issued.token,
        csrf_token=issued.csrf_token,
        expires_at=issued.session.expires_at,
        user=me_of(user, institution, permissions_for(user.role_set)),
    )
    response = web.Response(
        status=200, body=result.model_dump_json().encode(), content_type="application/json"
    )
    cookie: dict[str, Any] = {
        "path": "/",
        "max_age": settings.session_ttl_seconds,
        "secure": settings.cookie_secure,
        "samesite": "Lax",
    }
    response.set_cookie(SESSION_COOKIE, issued.token, httponly=True, **cookie)
    response.set_cookie(CSRF_COOKIE, issued.csrf_token, httponly=False, **cookie)
    return response


async def _audit_login(
    call: Call[Any, Any],
    username: str,
    user: User | None,
    outcome: Outcome,
    session_id: uuid.UUID | None = None,
) -> None:
    actor = call.actor(username=username[:64])
    if user is not None:
        actor = dataclasses.replace(
            actor, user_id=user.id, username=user.username, institution_id=user.institution_id
        )
    await audit.record(
        call.session,
        actor,
        [
            Entry(
                action="auth.login",
                object_type="session",
                object_id=session_id.hex if session_id else "",
                outcome=outcome,
            )
        ],
    )


@router.route(
    "POST",
    "/api/v1/auth/logout",
    action=Action.SELF,
    summary="Sign out: revoke this session's token",
    tags=["auth"],
    status=204,
)
async def logout(call: Call[None, None]) -> web.Response:
    await revoke(call.session, call.principal.session_id)
    await call.audit(
        Entry(action="auth.logout", object_type="session", object_id=call.principal.session_id.hex)
    )
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(CSRF_COOKIE, path="/")
    return response


@router.route(
    "GET",
    "/api/v1/auth/me",
    action=Action.SELF,
    summary="The signed-in account, its institution, roles and permissions",
    tags=["auth"],
    response=Me,
)
async def me(call: Call[None, None]) -> Me:
    p = call.principal
    row = (
        await call.session.execute(
            select(User, Institution)
            .join(Institution, Institution.id == User.institution_id)
            .where(User.id == p.user_id)
        )
    ).one()
    user, institution = row
    return me_of(user, institution, p.actions)


@router.route(
    "POST",
    "/api/v1/auth/password",
    action=Action.SELF,
    summary="Change one's own password; other sessions are signed out",
    tags=["auth"],
    body=PasswordChange,
    status=204,
)
async def change_password(call: Call[PasswordChange, None]) -> None:
    p = call.principal
    user = await call.session.get(User, p.user_id)
    assert user is not None
    passwords = call.app[PASSWORDS]
    if not await passwords.verify(user.password_hash, call.body.current_password):
        raise WrongPassword("the current password is wrong")
    if call.body.new_password == call.body.current_password:
        raise ValidationFailed("the new password must differ from the current one")
    user.password_hash = await passwords.hash(call.body.new_password)
    user.password_changed_at = utcnow()
    await call.session.execute(
        update(AuthSession)
        .where(
            AuthSession.user_id == user.id,
            AuthSession.id != p.session_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    await call.audit(Entry(action="user.password", object_type="user", object_id=str(user.id)))
