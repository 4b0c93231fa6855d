"""The documentation is tested where it can be: routes, settings and demo sign-ins."""

from __future__ import annotations

import re
from typing import Any

import pytest

from server.app import api_router
from server.events import EVENT_TYPES, PendingEvent
from server.seed import USERS
from server.settings import VARIABLES
from signalling.bus import LocalBus
from signalling.realtime import Realtime
from tests.services import ROOT


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_every_route_is_in_the_api_docs() -> None:
    doc = _read("docs/api.md")
    for route in api_router().routes:
        action = route.action.value if route.action else "public"
        row = f"| `{route.method}` | `{route.path}` | {action} |"
        assert row in doc, row


def test_documented_routes_exist() -> None:
    declared = {(r.method, r.path) for r in api_router().routes}
    documented = set(
        re.findall(
            r"^\| `([A-Z]+)` \| `(/(?:api/v1|dicomweb|wado)[^`]*)` \|", _read("docs/api.md"), re.M
        )
    )
    assert documented == declared


@pytest.mark.parametrize("variable", VARIABLES)
def test_every_setting_is_documented(variable: str) -> None:
    assert f"HUIZHEN_{variable}" in _read("docs/deployment.md")


def test_readme_lists_every_demo_sign_in() -> None:
    readme = _read("README.md")
    for user in USERS:
        assert f"`{user.username}`" in readme, user.username


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_is_documented(event_type: str) -> None:
    assert f"| `{event_type}` |" in _read("docs/events.md")


def test_documented_event_types_exist() -> None:
    table = _read("docs/events.md").split("## Types", 1)[1].split("## Realtime", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+\.[a-z_]+)` \|", table, re.M))
    assert documented == EVENT_TYPES


def test_unknown_event_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        PendingEvent(("user:x",), "consult.teleported", None)


def test_every_socket_message_is_documented() -> None:
    async def never(*_: object) -> Any:
        raise AssertionError("not called")

    realtime = Realtime(
        authenticate=never, fetch=never, load=never, ack=never, bus=LocalBus(), latest=never
    )
    handled = set(realtime.sio.handlers["/"]) - {"connect", "disconnect"}
    assert handled == {"sync", "ack", "call.join", "call.leave", "call.signal"}
    doc = _read("docs/events.md")
    for name in (*handled, "event", "presence"):  # the server also emits these
        assert f"| `{name}` |" in doc, name
