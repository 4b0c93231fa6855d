from __future__ import annotations

from tests.helpers import Api


async def test_login_and_me(api: Api) -> None:
    status, body = await api.get("/api/v1/auth/me", "jiaji")
    assert status == 200
    assert body["institution"]["name_zh"] == "贾集村卫生室"
