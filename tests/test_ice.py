"""ICE servers and short-lived TURN credentials, checked against a real coturn."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioice import turn
from aioice.stun import TransactionFailed

from server.app import create_app
from server.settings import Settings
from signalling.ice import ice_servers, turn_credentials
from tests.conftest import AiohttpClient
from tests.helpers import Api
from tests.services import Coturn


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    server = Coturn().start()
    try:
        yield server
    finally:
        server.stop()


async def _allocate(coturn: Coturn, username: str, password: str) -> tuple[str, int]:
    transport, _ = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", coturn.port), username, password
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_the_server_hands_out_credentials_coturn_accepts(
    aiohttp_client: AiohttpClient, settings: Settings, coturn: Coturn
) -> None:
    configured = dataclasses.replace(
        settings, turn_urls=("stun:127.0.0.1:3478", coturn.url), turn_secret=coturn.secret
    )
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(configured))
    api = Api(client)
    status, config = await api.get("/api/v1/rtc/ice-servers", "jiaji")
    assert status == 200
    stun, relay = config["ice_servers"]
    assert stun == {"urls": ["stun:127.0.0.1:3478"], "username": None, "credential": None}
    assert relay["urls"] == [coturn.url]
    host, _port = await _allocate(coturn, relay["username"], relay["credential"])
    assert host == "127.0.0.1"


async def test_coturn_refuses_wrong_or_expired_credentials(coturn: Coturn) -> None:
    username, _ = turn_credentials(coturn.secret, "someone", ttl=600)
    with pytest.raises(TransactionFailed, match=r"401 - Unauthorized"):
        await _allocate(coturn, username, "not-the-credential")
    expired_user, expired_password = turn_credentials(coturn.secret, "someone", ttl=-60)
    with pytest.raises(TransactionFailed, match=r"401 - Unauthorized"):
        await _allocate(coturn, expired_user, expired_password)


def test_no_turn_configured_means_host_candidates_only() -> None:
    assert ice_servers((), "", "u", 600) == []
    only_stun = ice_servers(("stun:a:3478",), "", "u", 600)
    assert [(s.urls, s.username) for s in only_stun] == [(("stun:a:3478",), None)]
    _, cred1 = turn_credentials("s", "u", 600, now=1000)
    _, cred2 = turn_credentials("s", "v", 600, now=1000)
    assert cred1 != cred2
