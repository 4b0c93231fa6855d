"""The client's address behind trusted reverse proxies, and what audit records of it."""

from __future__ import annotations

import dataclasses

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.network import client_address, parse_networks
from server.settings import Settings, SettingsError
from tests.conftest import AiohttpClient
from tests.helpers import Api

PROXIES = parse_networks("10.0.0.0/8, 127.0.0.1")


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),  # one trusted proxy
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # client sent a fake first hop
        ("127.0.0.1", "203.0.113.7, 10.1.2.3", "203.0.113.7"),  # two proxies
        ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),  # all hops trusted: the first
        ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # malformed: the proxy itself
        ("127.0.0.1", "203.0.113.7, junk", "127.0.0.1"),
        ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # untrusted peer: header ignored
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_address(peer: str, xff: str | None, expected: str) -> None:
    assert client_address(peer, xff, PROXIES) == expected


def test_nothing_trusted_by_default() -> None:
    assert client_address("127.0.0.1", "203.0.113.7", ()) == "127.0.0.1"


def test_bad_proxy_setting_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="HUIZHEN_TRUSTED_PROXIES"):
        Settings.from_env({"HUIZHEN_TRUSTED_PROXIES": "10.0.0.0/8, nonsense"})


async def test_audit_records_the_forwarded_address_only_from_a_trusted_proxy(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    proxied: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(dataclasses.replace(settings, trusted_proxies=parse_networks("127.0.0.1")))
    )
    api = Api(proxied)
    status, _ = await api.post(
        "/api/v1/auth/login",
        json={"username": "jiaji", "password": "huizhen-demo"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert status == 200
    status, events = await api.get("/api/v1/audit?action=auth.login&actor=jiaji", "supervisor")
    assert [e["client_address"] for e in events["items"]] == ["203.0.113.7"]


async def test_forwarded_header_is_ignored_without_trust(api: Api) -> None:
    status, _ = await api.post(
        "/api/v1/auth/login",
        json={"username": "jiaji", "password": "huizhen-demo"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert status == 200
    status, events = await api.get("/api/v1/audit?action=auth.login&actor=jiaji", "supervisor")
    assert [e["client_address"] for e in events["items"]] == ["127.0.0.1"]
