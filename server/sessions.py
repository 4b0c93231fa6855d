"""Sign-in sessions: argon2 passwords, bearer tokens, the session cookie and CSRF tokens.

A token is ``<session id hex>.<random secret>``. The database keeps only an HMAC of the secret
under the server's secret key, so a copy of the database does not yield usable tokens. The same
token is the bearer token of API clients and the value of the browser's HttpOnly session cookie.
Cookie-authenticated writes must carry ``X-CSRF-Token``, an HMAC of the session id that the
sign-in response returns (and sets in a script-readable cookie).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Select, String, Uuid, bindparam, cast, delete, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from imaging.steps import Step, Work
from server.db import read
from server.models import (
    AuthSession,
    Centre,
    CentreMembership,
    Institution,
    InstitutionKind,
    LoginFailure,
    Role,
    User,
    UserRole,
    utcnow,
)
from server.policy import Principal
from server.problems import TokenExpired, TooManyRequests, Unauthenticated

SESSION_COOKIE = "huizhen_session"
CSRF_COOKIE = "huizhen_csrf"
CSRF_HEADER = "X-CSRF-Token"


class Passwords:
    """argon2id hashing off the event loop (each hash costs tens of milliseconds of CPU)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        # Verified against when the username is unknown, so that both cases cost the same.
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._dummy
        try:
            ok = await asyncio.to_thread(self.hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None


def token_digest(secret_key: bytes, secret: str) -> str:
    return hmac.new(secret_key, b"token:" + secret.encode(), hashlib.sha256).hexdigest()


def csrf_token(secret_key: bytes, session_id: uuid.UUID) -> str:
    return hmac.new(secret_key, b"csrf:" + session_id.bytes, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    csrf_token: str
    session: AuthSession


async def issue(
    db: AsyncSession, secret_key: bytes, user: User, *, ttl: int, client_address: str
) -> Issued:
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    row = AuthSession(
        id=uuid.uuid4(),
        user_id=user.id,
        token_hash=token_digest(secret_key, secret),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl),
        client_address=client_address,
    )
    db.add(row)
    await db.flush()
    return Issued(f"{row.id.hex}.{secret}", csrf_token(secret_key, row.id), row)


async def revoke(db: AsyncSession, session_id: uuid.UUID) -> None:
    row = await db.get(AuthSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()


def _split_token(token: str) -> tuple[uuid.UUID, str]:
    head, sep, secret = token.partition(".")
    if not sep or len(head) != 32 or not secret or len(secret) > 128:
        raise Unauthenticated("the token is malformed")
    try:
        return uuid.UUID(hex=head), secret
    except ValueError:
        raise Unauthenticated("the token is malformed") from None


def _split(joined: str | None) -> list[str]:
    return [part for part in (joined or "").split(",") if part]


#: The separator as literal SQL, not a parameter rendered at each execution (see imaging.steps).
_COMMA: Any = literal_column("','")


def _principal_query() -> Select[*tuple[Any, ...]]:
    clinic = aliased(Institution)
    roles = (
        select(func.aggregate_strings(cast(UserRole.role, String), _COMMA))
        .where(UserRole.user_id == User.id)
        .scalar_subquery()
    )
    centres = (
        select(func.aggregate_strings(cast(CentreMembership.centre, String), _COMMA))
        .where(CentreMembership.user_id == User.id)
        .scalar_subquery()
    )
    clinics = (
        select(func.aggregate_strings(cast(clinic.id, String), _COMMA))
        .where(
            clinic.parent_id == Institution.id,
            clinic.kind == InstitutionKind.VILLAGE_CLINIC,
        )
        .scalar_subquery()
    )
    return (
        select(
            AuthSession.token_hash,
            AuthSession.revoked_at,
            AuthSession.expires_at,
            User.id.label("user_id"),
            User.username,
            User.display_name,
            User.active.label("user_active"),
            Institution.id.label("institution_id"),
            Institution.kind.label("institution_kind"),
            Institution.active.label("institution_active"),
            roles.label("roles"),
            centres.label("centres"),
            clinics.label("clinics"),
        )
        .join(User, User.id == AuthSession.user_id)
        .join(Institution, Institution.id == User.institution_id)
        .where(AuthSession.id == bindparam("session_id", type_=Uuid()))
    )


_PRINCIPAL_QUERY = _principal_query()


def _looking_up(session_id: uuid.UUID) -> Work[Any]:
    row = yield Step(_PRINCIPAL_QUERY, {"session_id": session_id}, fetch=True)
    return row


class Authenticator(Protocol):
    """What the router needs from a sign-in mechanism."""

    async def authenticate(self, request: web.Request, session: AsyncSession) -> Principal:
        """The caller, or raise :class:`~server.problems.Unauthenticated`."""

    def csrf_valid(self, request: web.Request, principal: Principal) -> bool:
        """Whether a cookie-authenticated write carries the session's CSRF token."""

    async def principal_for_token(
        self, db: AsyncSession, token: str, *, via_cookie: bool = False
    ) -> Principal:
        """The caller a raw token names (the realtime channel has no HTTP request)."""


class SessionAuth:
    """The router's authenticator: bearer token first, then the session cookie."""

    def __init__(self, secret_key: bytes) -> None:
        self.secret_key = secret_key

    async def authenticate(self, request: web.Request, session: AsyncSession) -> Principal:
        header = request.headers.get("Authorization", "")
        via_cookie = False
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("use 'Authorization: Bearer <token>'")
            token = token.strip()
        elif SESSION_COOKIE in request.cookies:
            token = request.cookies[SESSION_COOKIE]
            via_cookie = True
        else:
            raise Unauthenticated("sign in, or send a bearer token")
        return await self.principal_for_token(session, token, via_cookie=via_cookie)

    async def principal_for_token(
        self, db: AsyncSession, token: str, *, via_cookie: bool = False
    ) -> Principal:
        """One SQL statement: the session, its user and institution, the user's roles and
        centres, and (for a township) its village clinics. This runs on every request."""
        session_id, secret = _split_token(token)
        row = await read(db, _looking_up(session_id))
        if row is None:
            raise Unauthenticated("the token is not valid")
        if not hmac.compare_digest(row.token_hash, token_digest(self.secret_key, secret)):
            raise Unauthenticated("the token is not valid")
        if row.revoked_at is not None:
            raise Unauthenticated("the session was signed out")
        if row.expires_at <= utcnow():
            raise TokenExpired("the session has expired; sign in again")
        if not row.user_active or not row.institution_active:
            raise Unauthenticated("the account is disabled")
        care = {row.institution_id}
        if row.institution_kind is InstitutionKind.TOWNSHIP_CENTRE:
            care.update(uuid.UUID(c) for c in _split(row.clinics))
        return Principal(
            user_id=row.user_id,
            username=row.username,
            display_name=row.display_name,
            institution_id=row.institution_id,
            institution_kind=row.institution_kind,
            roles=frozenset(Role(r) for r in _split(row.roles)),
            centres=frozenset(Centre(c) for c in _split(row.centres)),
            session_id=session_id,
            care_institutions=frozenset(care),
            via_cookie=via_cookie,
        )

    def csrf_valid(self, request: web.Request, principal: Principal) -> bool:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = csrf_token(self.secret_key, principal.session_id)
        return bool(sent) and hmac.compare_digest(sent, expected)


# -- throttling -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throttle:
    """Failed sign-ins per username and per address within a window, kept in the database so
    that every node sees them. Past the limit, sign-in answers 429 until the window passes."""

    max_failures: int
    window_seconds: int

    async def check(self, db: AsyncSession, username: str, client_address: str) -> None:
        since = utcnow() - dt.timedelta(seconds=self.window_seconds)
        await db.execute(delete(LoginFailure).where(LoginFailure.at < since))
        by_user = await db.scalar(
            select(func.count()).where(LoginFailure.username == username, LoginFailure.at >= since)
        )
        by_address = await db.scalar(
            select(func.count()).where(
                LoginFailure.client_address == client_address, LoginFailure.at >= since
            )
        )
        if (by_user or 0) >= self.max_failures or (by_address or 0) >= 4 * self.max_failures:
            raise TooManyRequests(
                "too many failed sign-ins; wait before trying again",
                retry_after=self.window_seconds,
            )

    async def failed(self, db: AsyncSession, username: str, client_address: str) -> None:
        db.add(LoginFailure(username=username, client_address=client_address, at=utcnow()))

    async def succeeded(self, db: AsyncSession, username: str) -> None:
        await db.execute(delete(LoginFailure).where(LoginFailure.username == username))
