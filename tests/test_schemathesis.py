"""Property-based requests generated from our OpenAPI document against a live server.

For every operation, a bounded number of generated requests (valid and invalid) is sent with the
credentials of a user whose role allows it. No response may be a 5xx, and every response must
match the document: its status code, content type and body schema.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.services import HuizhenProcess

MAX_EXAMPLES = 30

#: Whose credentials exercise an operation, by the action it needs.
USER_FOR_ACTION = {
    "self": "jiaji",
    "directory.read": "jiaji",
    "institution.write": "admin",
    "user.read": "admin",
    "user.write": "admin",
    "patient.read": "jiaji",
    "patient.write": "jiaji",
    "audit.read": "supervisor",
    "consult.request": "chengguan",
    "consult.read": "radiology",
    "consult.work": "radiology",
    "consult.coordinate": "coordinator",
    "figures.read": "supervisor",
    "referral": "chengguan",
    "call": "chengguan",
    "imaging.read": "chengguan",
    "imaging.write": "chengguan",
    "imaging.delete": "admin",
    "lab.results": "lis",
}
#: Signing out would revoke the token the other operations use; it has its own tests.
SKIP = {("POST", "/api/v1/auth/logout")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _token(base: str, username: str) -> str:
    req = urllib.request.Request(
        base + "/api/v1/auth/login",
        data=json.dumps({"username": username, "password": "huizhen-demo"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return str(json.loads(resp.read())["token"])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_generated_requests_never_break_the_server(live_server: HuizhenProcess) -> None:
    base = live_server.url
    tokens = {u: _token(base, u) for u in set(USER_FOR_ACTION.values())}
    schema = schemathesis.openapi.from_url(base + "/api/v1/openapi.json")
    exercised = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document must load whole
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIP:
            continue
        action = operation.definition.raw.get("x-huizhen-action")
        headers = (
            {} if action is None else {"Authorization": f"Bearer {tokens[USER_FOR_ACTION[action]]}"}
        )
        _exercise(operation, base, headers)
        exercised += 1
    assert exercised >= 15
    # The server really answered the generated requests (its own counter says so).
    with urllib.request.urlopen(base + "/metrics") as resp:
        metrics = resp.read().decode()
    answered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("huizhen_http_requests_total{")
    )
    assert answered >= exercised * 5
    assert 'status="500"' not in metrics


def _exercise(operation: Any, base: str, headers: dict[str, str]) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy())
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)

    run()
