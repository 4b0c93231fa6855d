"""Recording a call with everyone's consent: two aiortc participants signalled through the
server, the server's recorder (a child process running ``signalling.peer.CallRecorder``) joining
once both consented, and the MP4 attached to the consult when the call ends, decoded with PyAV."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from signalling.peer import HeadlessPeer
from tests.helpers import DEMO_PASSWORD

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _until(peer: HeadlessPeer, path: str, ok: Any, within: float = 60) -> Any:
    """GET ``path`` until ``ok(answer)``."""
    async with asyncio.timeout(within):
        while True:
            answer = await peer.api("GET", path)
            if ok(answer):
                return answer
            await asyncio.sleep(0.2)


async def _refused(peer: HeadlessPeer, path: str, body: Any = None) -> str:
    with pytest.raises(RuntimeError, match=r": 409 ") as refused:
        await peer.api("POST", path, body)
    return str(refused.value)


async def test_recorded_with_everyone_s_consent(
    client: TestClient[web.Request, web.Application], tmp_path: Path
) -> None:
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        await station.sign_in("chengguan", DEMO_PASSWORD)
        await specialist.sign_in("consult", DEMO_PASSWORD)
        found = await station.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
        consult = await station.api(
            "POST",
            "/api/v1/consults",
            {"patient_id": found["items"][0]["id"], "centre": "consultation", "question": "录像"},
        )
        cid = consult["id"]
        await specialist.api("POST", f"/api/v1/consults/{cid}/claim", {})
        call = await station.api(
            "POST", f"/api/v1/consults/{cid}/calls", {"invitee_ids": [specialist.user_id]}
        )
        call_id = call["id"]
        recording = f"/api/v1/calls/{call_id}/recording"

        # Not while it rings.
        await _refused(station, recording)
        async with asyncio.timeout(60):
            await station.join(call_id)
            await specialist.join(call_id)
            await specialist.accept(call_id)
            await specialist.offer(call_id)
            await station.answer_next_offer(call_id)
            await specialist.accept_answer()
            await station.frames(10)
            await specialist.frames(10)
        for peer in (station, specialist):
            await peer.report_connected(call_id)

        # No recording without everyone's consent.
        await _refused(station, f"{recording}/start")
        asked = await station.api("POST", recording)
        assert asked["state"] == "asking"
        assert asked["waiting_for"] == [specialist.user_id]
        await _refused(specialist, recording)  # one request per call
        await _refused(station, f"{recording}/start")
        await _refused(station, f"{recording}/consent", {"consent": True})  # already answered
        agreed = await specialist.api("POST", f"{recording}/consent", {"consent": True})
        assert agreed["state"] == "consented"
        assert agreed["waiting_for"] == []
        assert {c["user_id"] for c in agreed["consents"]} == {station.user_id, specialist.user_id}

        started = await station.api("POST", f"{recording}/start")
        assert started["state"] == "recording"
        await _until(station, recording, lambda r: r["recording_since"] is not None)
        # The recorder is a member of the call now.
        members = (await station.api("GET", f"/api/v1/calls/{call_id}"))["participants"]
        assert len(members) == 3
        # Media flows on while it records.
        async with asyncio.timeout(30):
            await station.frames(station.received.video_frames + 30)

        await specialist.hang_up(call_id)
        # The recorder keeps no call going: the call ends with the specialist gone.
        assert (await station.api("GET", f"/api/v1/calls/{call_id}"))["state"] == "ended"
        saved = await _until(station, recording, lambda r: r["state"] in ("saved", "failed"))
        assert saved["state"] == "saved"

        files = (await station.api("GET", f"/api/v1/consults/{cid}/attachments"))["items"]
        [attachment] = [f for f in files if f["kind"] == "recording"]
        assert attachment["id"] == saved["attachment_id"]
        assert attachment["content_type"] == "video/mp4"
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base}/api/v1/attachments/{attachment['id']}",
                headers={"Authorization": f"Bearer {station.token}"},
            ) as resp,
        ):
            assert resp.status == 200
            data = await resp.read()
        path = tmp_path / "recording.mp4"
        path.write_bytes(data)
        with av.open(str(path)) as container:
            video_streams = [s for s in container.streams if s.type == "video"]
            assert len(video_streams) == 2  # one per participant
            frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0

        timeline = (await station.api("GET", f"/api/v1/consults/{cid}"))["timeline"]
        consents = [t for t in timeline if t["action"] == "call.record_consent"]
        assert {(t["actor_user_id"], t["detail"]["consent"]) for t in consents} == {
            (station.user_id, "yes"),
            (specialist.user_id, "yes"),
        }
        assert all(t["at"] for t in consents)
        steps = [t["action"] for t in timeline]
        assert steps.index("call.record_start") < steps.index("call.record_saved")
    finally:
        await station.close()
        await specialist.close()


async def test_one_refusal_means_no_recording(
    client: TestClient[web.Request, web.Application],
) -> None:
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        await station.sign_in("chengguan", DEMO_PASSWORD)
        await specialist.sign_in("consult", DEMO_PASSWORD)
        found = await station.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
        consult = await station.api(
            "POST",
            "/api/v1/consults",
            {"patient_id": found["items"][0]["id"], "centre": "consultation", "question": "录像"},
        )
        cid = consult["id"]
        await specialist.api("POST", f"/api/v1/consults/{cid}/claim", {})
        call = await station.api(
            "POST", f"/api/v1/consults/{cid}/calls", {"invitee_ids": [specialist.user_id]}
        )
        call_id = call["id"]
        await specialist.accept(call_id)
        recording = f"/api/v1/calls/{call_id}/recording"
        await specialist.api("POST", recording)
        refused = await station.api("POST", f"{recording}/consent", {"consent": False})
        assert refused["state"] == "refused"
        await _refused(specialist, f"{recording}/start")
        await _refused(station, f"{recording}/consent", {"consent": True})
        members = (await station.api("GET", f"/api/v1/calls/{call_id}"))["participants"]
        assert len(members) == 2  # no recorder joined
        events = (await specialist.api("GET", "/api/v1/events"))["items"]
        assert [e["type"] for e in events if e["type"].startswith("call.recording")] == [
            "call.recording_requested",
            "call.recording_refused",
        ]
    finally:
        await station.close()
        await specialist.close()
