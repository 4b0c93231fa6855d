"""The watchdog: overdue cases and unacknowledged critical values, with an explicit clock."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.db import make_engine, make_sessionmaker
from server.settings import Settings
from server.watch import sweep
from tests.conftest import AiohttpClient
from tests.helpers import Api


async def _sweep(settings: Settings, minutes_ahead: float) -> tuple[int, int]:
    engine = make_engine(settings.effective_database_url)
    try:
        now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes_ahead)
        result = await sweep(
            make_sessionmaker(engine), critical_ack_seconds=settings.critical_ack_seconds, now=now
        )
        return result.overdue, result.critical_reminders
    finally:
        await engine.dispose()


async def _consult(api: Api, centre: str, priority: str) -> dict[str, Any]:
    _, found = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    status, consult = await api.post(
        "/api/v1/consults",
        "jiaji",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": centre,
            "priority": priority,
            "question": "?",
        },
    )
    assert status == 201
    return dict(consult)


async def test_overdue_case_notifies_the_coordinator_once(api: Api, settings: Settings) -> None:
    consult = await _consult(api, "ecg", "stat")  # target: 10 minutes
    assert await _sweep(settings, 5) == (0, 0)
    assert await _sweep(settings, 11) == (1, 0)
    assert await _sweep(settings, 12) == (0, 0)  # once
    _, feed = await api.get("/api/v1/events", "coordinator")
    overdue = [e for e in feed["items"] if e["type"] == "consult.overdue"]
    assert [e["consult_id"] for e in overdue] == [consult["id"]]
    _, detail = await api.get(f"/api/v1/consults/{consult['id']}", "jiaji")
    assert detail["timeline"][-1]["action"] == "overdue"
    _, worklist = await api.get("/api/v1/centres/ecg/worklist", "ecg")
    # The worklist's own clock is real time: the case is not overdue yet there.
    assert worklist["items"][0]["overdue"] is False


async def test_unacknowledged_critical_value_repeats_and_escalates(
    api: Api, settings: Settings
) -> None:
    status, _ = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "huji-doc",
            "display_name": "胡集乡 医生",
            "institution_id": await api.institution_id("huji"),
            "password": "huji-password-1",
            "roles": ["grassroots_doctor"],
        },
    )
    assert status == 201
    await api.login("huji-doc", "huji-password-1")
    consult = await _consult(api, "lab", "stat")
    cid = consult["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "lab", json={})
    body = {
        "content": {
            "kind": "lab",
            "critical": True,
            "critical_note": "血钾 6.9",
            "results": [{"name": "钾", "value": "6.9", "flag": "critical_high"}],
        }
    }
    _, draft = await api.post(f"/api/v1/consults/{cid}/reports", "lab", json=body)
    assert (await api.post(f"/api/v1/reports/{draft['id']}/sign", "lab"))[0] == 200
    assert (await _sweep(settings, 5))[1] == 0  # within the 10 minutes
    assert (await _sweep(settings, 11))[1] == 1
    assert (await _sweep(settings, 15))[1] == 0  # not again until another interval
    assert (await _sweep(settings, 22))[1] == 1
    _, feed = await api.get("/api/v1/events", "coordinator")
    reminders = [e for e in feed["items"] if e["type"] == "critical.unacknowledged"]
    assert [e["payload"]["reminder"] for e in reminders] == [1, 2]
    # The station hears it again, and so does 胡集乡卫生院, the township over 贾集村卫生室.
    _, station = await api.get("/api/v1/events?after=0&limit=500", "jiaji")
    assert [e["type"] for e in station["items"]].count("critical.unacknowledged") == 2
    _, township = await api.get("/api/v1/events?after=0&limit=500", "huji-doc")
    # (It oversees the clinic, so it hears the whole consult; each reminder once.)
    assert [e["type"] for e in township["items"]].count("critical.unacknowledged") == 2
    # ...but not a township that has nothing to do with it.
    _, other = await api.get("/api/v1/events?after=0&limit=500", "chengguan")
    assert "critical.unacknowledged" not in [e["type"] for e in other["items"]]
    # Acknowledged: it stops.
    assert (await api.post(f"/api/v1/consults/{cid}/acknowledge", "jiaji", json={}))[0] == 200
    assert (await _sweep(settings, 40))[1] == 0


async def test_the_watchdog_runs_in_the_server(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    quick = dataclasses.replace(settings, watch_interval_seconds=1, critical_ack_seconds=1)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(quick))
    api = Api(client)
    consult = await _consult(api, "lab", "stat")
    cid = consult["id"]
    await api.post(f"/api/v1/consults/{cid}/claim", "lab", json={})
    _, draft = await api.post(
        f"/api/v1/consults/{cid}/reports",
        "lab",
        json={"content": {"kind": "lab", "critical": True}},
    )
    await api.post(f"/api/v1/reports/{draft['id']}/sign", "lab")

    async def reminded() -> bool:
        _, feed = await api.get("/api/v1/events?after=0", "jiaji")
        return any(e["type"] == "critical.unacknowledged" for e in feed["items"])

    async with asyncio.timeout(20):
        while not await reminded():  # noqa: ASYNC110 - polling the server's own feed, as a client does
            await asyncio.sleep(0.2)


async def test_unanswered_call_times_out(api: Api, settings: Settings) -> None:
    consult = await _consult(api, "ecg", "urgent")
    await api.post(f"/api/v1/consults/{consult['id']}/claim", "ecg", json={})
    _, ecg = await api.get("/api/v1/auth/me", "ecg")
    _, call = await api.post(
        f"/api/v1/consults/{consult['id']}/calls", "jiaji", json={"invitee_ids": [ecg["id"]]}
    )
    engine = make_engine(settings.effective_database_url)
    try:
        factory = make_sessionmaker(engine)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
        assert (await sweep(factory, critical_ack_seconds=600, now=later)).calls_timed_out == 0
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
        assert (await sweep(factory, critical_ack_seconds=600, now=later)).calls_timed_out == 1
        assert (await sweep(factory, critical_ack_seconds=600, now=later)).calls_timed_out == 0
    finally:
        await engine.dispose()
    _, now = await api.get(f"/api/v1/calls/{call['id']}", "jiaji")
    assert now["state"] == "timed_out"
    _, feed = await api.get("/api/v1/events", "ecg")
    assert "call.timed_out" in [e["type"] for e in feed["items"]]
    assert (await api.post(f"/api/v1/calls/{call['id']}/accept", "ecg"))[0] == 409
