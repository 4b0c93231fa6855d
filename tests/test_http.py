"""HTTP conventions: OpenAPI, problem+json everywhere, request ids, health, metrics, logs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from server.app import api_router
from server.db import head_revision
from tests.helpers import Api
from tests.services import HuizhenProcess, running


async def test_openapi_document_lists_every_route_with_its_schemas(api: Api) -> None:
    status, doc = await api.get("/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    for route in api_router().routes:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.operation_id
        if route.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.split("/")[-1] in doc["components"]["schemas"]
        if not route.public:
            assert {"401", "403"} <= set(op["responses"])
    create = doc["components"]["schemas"]["PatientCreate"]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"national_id", "name"}


async def test_unknown_api_route_and_method_are_problems(api: Api) -> None:
    status, body = await api.get("/api/v1/nothing-here", "jiaji")
    assert status == 404 and body["code"] == "not-found"
    resp = await api.client.delete("/api/v1/auth/me", headers=await api.headers("jiaji"))
    assert resp.status in (404, 405)
    assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_request_id_is_taken_or_made_and_echoed(api: Api) -> None:
    resp = await api.client.get("/healthz", headers={"X-Request-ID": "abcdef123456"})
    assert resp.headers["X-Request-ID"] == "abcdef123456"
    resp = await api.client.get("/healthz", headers={"X-Request-ID": "bad id; <script>"})
    assert resp.headers["X-Request-ID"] != "bad id; <script>"
    assert len(resp.headers["X-Request-ID"]) == 16
    resp = await api.client.get("/api/v1/auth/me")
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-ID"]


async def test_health_and_readiness(api: Api) -> None:
    assert await api.get("/healthz") == (200, {"status": "ok"})
    status, body = await api.get("/readyz")
    assert status == 200 and body["database_revision"] == head_revision()


async def test_metrics_count_requests_by_route_template(api: Api) -> None:
    await api.get("/api/v1/patients?name=王", "jiaji")
    resp = await api.client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert 'route="/api/v1/patients"' in text
    assert "huizhen_http_request_duration_seconds_bucket" in text
    assert "王" not in text


async def test_security_headers(api: Api) -> None:
    resp = await api.client.get("/api/v1/auth/me", headers=await api.headers("jiaji"))
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_web_fallback_when_not_built(api: Api) -> None:
    resp = await api.client.get("/some/page")
    assert resp.status == 200
    assert "make web" in await resp.text()
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_patient_data_in_the_server_log(tmp_path: Path, database_url: str) -> None:
    """The real ``huizhen serve`` at DEBUG: register, search, fail validation, read back.
    Neither the name nor the national ID nor its birth-date part reaches the log."""
    server = HuizhenProcess(
        env={
            "HUIZHEN_DATA_DIR": str(tmp_path / "live"),
            "HUIZHEN_DATABASE_URL": database_url,
            "HUIZHEN_SECRET_KEY": "k" * 40,
            "HUIZHEN_LOG_LEVEL": "DEBUG",
        }
    )
    nid = "11010519491231002X"
    with running(server):
        token = _post(
            server.url + "/api/v1/auth/login", {"username": "jiaji", "password": "huizhen-demo"}
        )[1]["token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert (
            _post(server.url + "/api/v1/patients", {"national_id": nid, "name": "钱小红"}, auth)[0]
            == 201
        )
        assert (
            _post(
                server.url + "/api/v1/patients",
                {"national_id": nid[:-1] + "1", "name": "钱小红"},
                auth,
            )[0]
            == 422
        )
        req = urllib.request.Request(
            f"{server.url}/api/v1/patients?national_id={nid}", headers=auth
        )
        with urllib.request.urlopen(req) as resp:
            assert json.loads(resp.read())["total"] == 1
        logged = server.log()
    assert "POST /api/v1/patients 201" in logged
    assert nid not in logged and "钱小红" not in logged and "19491231" not in logged


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
