"""Supervisor figures: volumes, turnaround against targets, overdue and critical values."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from tests.helpers import Api


async def _answered(api: Api, centre: str, kind: dict[str, Any], *, critical: bool = False) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    _, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": centre,
            "priority": "urgent",
            "question": "?",
        },
    )
    cid = str(consult["id"])
    specialist = {"imaging": "radiology", "lab": "lab"}[centre]
    await api.post(f"/api/v1/consults/{cid}/claim", specialist, json={})
    _, draft = await api.post(
        f"/api/v1/consults/{cid}/reports",
        specialist,
        json={"content": {**kind, "critical": critical}},
    )
    assert (await api.post(f"/api/v1/reports/{draft['id']}/sign", specialist))[0] == 200
    return cid


async def test_figures_per_centre_and_institution(api: Api) -> None:
    await _answered(api, "imaging", {"kind": "imaging"})
    await _answered(api, "imaging", {"kind": "imaging"})
    critical = await _answered(api, "lab", {"kind": "lab"}, critical=True)
    await api.post(f"/api/v1/consults/{critical}/acknowledge", "chengguan", json={})
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": found["items"][0]["id"], "centre": "ecg", "question": "?"},
    )
    status, figures = await api.get("/api/v1/figures", "supervisor")
    assert status == 200
    centres = {g["key"]: g for g in figures["by_centre"]}
    assert centres["imaging"]["submitted"] == 2
    assert centres["imaging"]["turnaround"]["reported"] == 2
    assert centres["imaging"]["turnaround"]["within_target"] == 1.0
    assert centres["imaging"]["by_priority"] == {"urgent": 2}
    assert centres["ecg"]["open"] == 1
    assert centres["lab"]["critical"] == 1
    assert centres["lab"]["critical_ack_p50_minutes"] is not None
    assert centres["lab"]["critical_unacknowledged"] == 0
    chengguan = await api.institution_id("chengguan")
    institutions = {g["key"]: g for g in figures["by_institution"]}
    assert institutions[chengguan]["submitted"] == 4
    assert figures["targets_minutes"]["ecg"]["stat"] == 10
    assert figures["timezone"] == "Asia/Shanghai"
    today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert centres["imaging"]["by_day"] == {today: 2}
    assert "张桂兰" not in str(figures)


async def test_figures_window_is_checked(api: Api) -> None:
    status, _ = await api.get(
        "/api/v1/figures?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "supervisor"
    )
    assert status == 422
    assert (await api.get("/api/v1/figures", "jiaji"))[0] == 403
