"""Turnaround targets: documented defaults, changed by admins, applied to new consults."""

from __future__ import annotations

from tests.helpers import Api


async def test_defaults_and_change(api: Api) -> None:
    status, targets = await api.get("/api/v1/targets", "jiaji")
    assert status == 200
    table = {(t["centre"], t["priority"]): t["minutes"] for t in targets["items"]}
    assert table[("ecg", "stat")] == 10
    assert table[("imaging", "urgent")] == 30
    assert table[("pathology", "routine")] == 72 * 60
    assert len(table) == 15
    assert (await api.call("PUT", "/api/v1/targets/ecg/stat", "coordinator", json={"minutes": 5}))[
        0
    ] == 403
    status, changed = await api.call(
        "PUT", "/api/v1/targets/ecg/stat", "admin", json={"minutes": 5}
    )
    assert status == 200
    assert changed["minutes"] == 5
    _, found = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    _, consult = await api.post(
        "/api/v1/consults",
        "jiaji",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": "ecg",
            "priority": "stat",
            "question": "?",
        },
    )
    _, worklist = await api.get("/api/v1/centres/ecg/worklist", "ecg")
    item = next(i for i in worklist["items"] if i["consult"]["id"] == consult["id"])
    assert item["target_minutes"] == 5
    assert 0 < item["seconds_left"] <= 5 * 60


async def test_bad_targets(api: Api) -> None:
    for path, body in (
        ("/api/v1/targets/ecg/stat", {"minutes": 0}),
        ("/api/v1/targets/ecg/stat", {"minutes": "10"}),
        ("/api/v1/targets/ecg/stat", {"minutes": 10, "extra": 1}),
    ):
        assert (await api.call("PUT", path, "admin", json=body))[0] == 422
    assert (await api.call("PUT", "/api/v1/targets/cardiology/stat", "admin", json={"minutes": 5}))[
        0
    ] == 404
    assert (await api.call("PUT", "/api/v1/targets/ecg/soon", "admin", json={"minutes": 5}))[
        0
    ] == 404
