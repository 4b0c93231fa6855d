"""Sign-in, tokens, cookies, CSRF, throttling and password change, on both databases."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update

from server.db import make_engine, make_sessionmaker, unit_of_work
from server.models import AuditEvent, AuthSession, LoginFailure, User
from server.settings import Settings
from tests.helpers import Api


async def _db_scalar(settings: Settings, stmt: object) -> object:
    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            return await db.scalar(stmt)  # type: ignore[call-overload]
    finally:
        await engine.dispose()


async def _db_execute(settings: Settings, stmt: object) -> None:
    engine = make_engine(settings.effective_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as db:
            await db.execute(stmt)  # type: ignore[call-overload]
    finally:
        await engine.dispose()


async def test_login_returns_token_and_sets_cookies(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/auth/login", json={"username": "radiology", "password": "huizhen-demo"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["token_type"] == "Bearer"
    assert body["user"]["centres"] == ["imaging"]
    assert body["user"]["institution"]["code"] == "xrmyy"
    cookie = resp.cookies["huizhen_session"]
    assert cookie.value == body["token"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert resp.cookies["huizhen_csrf"].value == body["csrf_token"]
    assert not resp.cookies["huizhen_csrf"]["httponly"]


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    for username in ("radiology", "nobody-at-all"):
        status, body = await api.post(
            "/api/v1/auth/login", json={"username": username, "password": "wrong-password"}
        )
        assert status == 401
        assert body["code"] == "invalid-credentials"
        assert body["title_zh"] == "用户名或密码错误"


async def test_repeated_failures_are_throttled_and_audited(api: Api, settings: Settings) -> None:
    wrong = {"username": "baji", "password": "not-the-password"}
    for _ in range(settings.login_max_failures):
        status, _ = await api.post("/api/v1/auth/login", json=wrong)
        assert status == 401
    resp = await api.client.post("/api/v1/auth/login", json=wrong)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) == settings.login_lockout_seconds
    # Even the right password waits out the lockout.
    status, body = await api.post(
        "/api/v1/auth/login", json={"username": "baji", "password": "huizhen-demo"}
    )
    assert status == 429 and body["code"] == "too-many-requests"
    # Another user from the same address is not locked out by baji's failures.
    await api.login("jiaji")
    failures = await _db_scalar(
        settings,
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.action == "auth.login",
            AuditEvent.outcome == "failed",
            AuditEvent.actor_username == "baji",
        ),
    )
    assert failures == settings.login_max_failures


async def test_success_clears_the_failure_count(api: Api, settings: Settings) -> None:
    wrong = {"username": "lab", "password": "not-the-password"}
    for _ in range(settings.login_max_failures - 1):
        assert (await api.post("/api/v1/auth/login", json=wrong))[0] == 401
    await api.login("lab")
    remaining = await _db_scalar(
        settings,
        select(func.count()).select_from(LoginFailure).where(LoginFailure.username == "lab"),
    )
    assert remaining == 0


async def test_logout_revokes_the_token(api: Api) -> None:
    headers = await api.headers("ecg")
    assert (await api.get("/api/v1/auth/me", headers=headers))[0] == 200
    assert (await api.post("/api/v1/auth/logout", headers=headers))[0] == 204
    status, body = await api.get("/api/v1/auth/me", headers=headers)
    assert status == 401
    assert body["code"] == "unauthenticated"


async def test_expired_token_is_refused(api: Api, settings: Settings) -> None:
    login = await api.login("consult")
    headers = {"Authorization": f"Bearer {login['token']}"}
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await _db_execute(settings, update(AuthSession).values(expires_at=past))
    status, body = await api.get("/api/v1/auth/me", headers=headers)
    assert status == 401
    assert body["code"] == "token-expired"


async def test_forged_and_malformed_tokens_are_refused(api: Api) -> None:
    login = await api.login("pathology")
    session_hex, _, secret = login["token"].partition(".")
    forged = f"{session_hex}.{'A' * len(secret)}"
    for token in (forged, "garbage", "x" * 32 + ".", f"{'0' * 32}.{secret}"):
        status, body = await api.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 401, token
        assert body["code"] == "unauthenticated"
    status, _ = await api.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"})
    assert status == 401
    api.client.session.cookie_jar.update_cookies({"huizhen_session": forged})
    status, body = await api.get("/api/v1/auth/me")
    assert status == 401


async def test_cookie_writes_need_the_csrf_token(api: Api) -> None:
    login = await api.login("jiaji", keep_cookies=True)
    # Reads by cookie need no CSRF token.
    assert (await api.get("/api/v1/auth/me"))[0] == 200
    new = {"national_id": "11010519491231002X", "name": "钱小红"}
    status, body = await api.post("/api/v1/patients", json=new)
    assert status == 403 and body["code"] == "csrf"
    status, body = await api.post("/api/v1/patients", json=new, headers={"X-CSRF-Token": "0" * 64})
    assert status == 403 and body["code"] == "csrf"
    status, body = await api.post(
        "/api/v1/patients", json=new, headers={"X-CSRF-Token": login["csrf_token"]}
    )
    assert status == 201, body
    # The refused attempts changed nothing: exactly one patient with that ID exists.
    status, found = await api.get("/api/v1/patients?national_id=11010519491231002X")
    assert found["total"] == 1


async def test_bearer_writes_need_no_csrf_token(api: Api) -> None:
    status, _ = await api.post(
        "/api/v1/patients", "jiaji", json={"national_id": "11010519491231002X", "name": "钱小红"}
    )
    assert status == 201


async def test_password_change_signs_out_other_sessions(api: Api, settings: Settings) -> None:
    first = await api.login("chengguan")
    second = await api.login("chengguan")
    h1 = {"Authorization": f"Bearer {first['token']}"}
    h2 = {"Authorization": f"Bearer {second['token']}"}
    status, _ = await api.post(
        "/api/v1/auth/password",
        headers=h2,
        json={"current_password": "huizhen-demo", "new_password": "a-new-password-9"},
    )
    assert status == 204
    assert (await api.get("/api/v1/auth/me", headers=h2))[0] == 200
    assert (await api.get("/api/v1/auth/me", headers=h1))[0] == 401
    status, _ = await api.post(
        "/api/v1/auth/login", json={"username": "chengguan", "password": "huizhen-demo"}
    )
    assert status == 401
    await api.login("chengguan", "a-new-password-9")


async def test_disabled_account_cannot_sign_in_and_loses_its_sessions(
    api: Api, settings: Settings
) -> None:
    token_headers = await api.headers("lab")
    user_id = await _db_scalar(settings, select(User.id).where(User.username == "lab"))
    status, _ = await api.patch(f"/api/v1/users/{user_id}", "admin", json={"active": False})
    assert status == 200
    assert (await api.get("/api/v1/auth/me", headers=token_headers))[0] == 401
    status, _ = await api.post(
        "/api/v1/auth/login", json={"username": "lab", "password": "huizhen-demo"}
    )
    assert status == 401
