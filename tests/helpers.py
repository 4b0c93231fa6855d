"""A thin client for API tests: signs in demo users and keeps their tokens."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

DEMO_PASSWORD = "huizhen-demo"

#: The demo sign-ins of the README.
DEMO_USERS = (
    "admin",
    "supervisor",
    "coordinator",
    "ecg",
    "radiology",
    "consult",
    "lab",
    "pathology",
    "neuro",
    "chengguan",
    "baji",
    "jiaji",
    "ambulance-01",
    "lis",
)


class Api:
    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}
        self.logins: dict[str, dict[str, Any]] = {}

    async def login(
        self, username: str, password: str = DEMO_PASSWORD, *, keep_cookies: bool = False
    ) -> dict[str, Any]:
        """Sign in. API tests speak bearer tokens, so the session cookie is dropped unless
        ``keep_cookies`` (a browser-like caller) is asked for."""
        resp = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        if not keep_cookies:
            self.client.session.cookie_jar.clear()
        self.tokens[username] = body["token"]
        self.logins[username] = body
        return body

    async def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            await self.login(username)
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    async def call(
        self, method: str, path: str, username: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if username is not None:
            headers.update(await self.headers(username))
        resp = await self.client.request(method, path, headers=headers, **kwargs)
        ctype = resp.headers.get("Content-Type", "")
        if "json" in ctype:
            return resp.status, await resp.json()
        return resp.status, await resp.read()

    async def get(self, path: str, username: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, username, **kwargs)

    async def post(self, path: str, username: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, username, **kwargs)

    async def patch(self, path: str, username: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, username, **kwargs)

    async def institution_id(self, code: str) -> str:
        status, body = await self.get("/api/v1/institutions", "admin")
        assert status == 200
        for inst in body["items"]:
            if inst["code"] == code:
                return str(inst["id"])
        raise KeyError(code)
