"""Nothing lost: a report signed just before the server is killed reaches its station."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import live_env
from tests.services import HuizhenProcess


class Client:
    def __init__(self, base: str, username: str) -> None:
        self.base = base
        _, body = self.call(
            "POST", "/api/v1/auth/login", {"username": username, "password": "huizhen-demo"}
        )
        self.token = body["token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def test_signed_report_survives_sigkill(tmp_path: Path, database_url: str) -> None:
    env = live_env(tmp_path, database_url)
    first = HuizhenProcess(env=env).start()
    try:
        doctor = Client(first.url, "chengguan")
        radiology = Client(first.url, "radiology")
        _, found = doctor.call("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
        status, consult = doctor.call(
            "POST",
            "/api/v1/consults",
            {
                "patient_id": found["items"][0]["id"],
                "centre": "imaging",
                "priority": "urgent",
                "question": "胸片",
            },
        )
        assert status == 201
        cid = consult["id"]
        assert radiology.call("POST", f"/api/v1/consults/{cid}/claim", {})[0] == 200
        # The doctor has seen everything so far: acknowledge it all.
        _, feed = doctor.call("GET", "/api/v1/events")
        doctor.call("POST", "/api/v1/events/ack", {"up_to": feed["items"][-1]["id"]})
        _, draft = radiology.call(
            "POST",
            f"/api/v1/consults/{cid}/reports",
            {"content": {"kind": "imaging", "impression": "右下肺炎"}},
        )
        status, signed = radiology.call("POST", f"/api/v1/reports/{draft['id']}/sign")
        assert status == 200
    finally:
        first.stop(signal.SIGKILL)  # no graceful shutdown, nothing flushed on the way out
    assert first.process is not None
    assert first.process.returncode == -signal.SIGKILL

    second = HuizhenProcess(env=env).start()
    try:
        doctor = Client(second.url, "chengguan")
        status, feed = doctor.call("GET", "/api/v1/events")
        assert status == 200
        signed_events = [e for e in feed["items"] if e["type"] == "report.signed"]
        assert {e["payload"]["report_id"] for e in signed_events} == {signed["id"]}
        assert all(e["consult_id"] == cid for e in feed["items"])
        # Delivered once: after acknowledging, nothing more.
        doctor.call("POST", "/api/v1/events/ack", {"up_to": feed["items"][-1]["id"]})
        _, again = doctor.call("GET", "/api/v1/events")
        assert again["items"] == []
        status, consult = doctor.call("GET", f"/api/v1/consults/{cid}")
        assert consult["state"] == "reported"
    finally:
        second.stop()
