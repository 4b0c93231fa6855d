"""Recording a call with everyone's consent: two aiortc participants signalled through the
server, the server's recorder (a child process running ``signalling.peer.CallRecorder``) joining
once both consented, and the MP4 attached to the consult when the call ends, decoded with PyAV.
A participant who withdraws consent stops it mid-call, through another server node than the one
running the recorder; a stop before any media arrived ends it with nothing saved; a recorder
that dies mid-call leaves what it recorded up to its last complete fragment."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.recording import RECORDINGS
from server.settings import Settings
from signalling.peer import HeadlessPeer
from tests.conftest import AiohttpClient
from tests.helpers import DEMO_PASSWORD
from tests.mediafiles import decoded_frames
from tests.services import Redis

SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


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


async def _post(peer: HeadlessPeer, path: str, base: str | None = None) -> tuple[int, Any]:
    """POST as ``peer`` (to another node with ``base``): the status and the answer."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            (base or peer.base_url) + path,
            json={},
            headers={"Authorization": f"Bearer {peer.token}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _ringing(station: HeadlessPeer, specialist: HeadlessPeer) -> tuple[str, str]:
    """chengguan rings the consultation specialist on a new consult. Returns the consult and
    call ids."""
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
    return cid, call["id"]


async def _connect(station: HeadlessPeer, specialist: HeadlessPeer, call_id: str) -> None:
    """The specialist answers; media flows both ways."""
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


async def _in_a_call(station: HeadlessPeer, specialist: HeadlessPeer) -> tuple[str, str]:
    """A new consult's call, connected. Returns the consult and call ids."""
    cid, call_id = await _ringing(station, specialist)
    await _connect(station, specialist, call_id)
    return cid, call_id


async def _consented(station: HeadlessPeer, specialist: HeadlessPeer, call_id: str) -> str:
    """The station asks, the specialist consents; returns the recording path."""
    recording = f"/api/v1/calls/{call_id}/recording"
    await station.api("POST", recording)
    agreed = await specialist.api("POST", f"{recording}/consent", {"consent": True})
    assert agreed["state"] == "consented"
    return recording


async def _started(station: HeadlessPeer, specialist: HeadlessPeer) -> tuple[str, str, str]:
    """A call in which both consented and the station started the recording; returns the
    consult, the call and the recording's path."""
    cid, call_id = await _in_a_call(station, specialist)
    recording = await _consented(station, specialist, call_id)
    assert (await station.api("POST", f"{recording}/start"))["state"] == "recording"
    return cid, call_id, recording


@SQLITE
async def test_recorded_with_everyone_s_consent(
    client: TestClient[web.Request, web.Application], tmp_path: Path
) -> None:
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        cid, call_id = await _ringing(station, specialist)
        recording = f"/api/v1/calls/{call_id}/recording"

        # Not while it rings.
        await _refused(station, recording)
        await _connect(station, specialist, call_id)

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
        path = tmp_path / "recording.mp4"
        path.write_bytes(await station.fetch(f"/api/v1/attachments/{attachment['id']}"))
        frames = (await asyncio.to_thread(decoded_frames, path))["video"]
        assert len(frames) == 2  # one per participant
        assert frames[0] > 0

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


@SQLITE
async def test_one_refusal_means_no_recording(
    client: TestClient[web.Request, web.Application],
) -> None:
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        _, call_id = await _ringing(station, specialist)
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


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_participant_stops_the_recording_through_another_node(
    aiohttp_client: AiohttpClient, settings: Settings, redis_server: Redis, tmp_path: Path
) -> None:
    """Two server nodes share PostgreSQL, Redis and the file store. The recorder runs under
    node A (which started it); the specialist, who consented, withdraws it through node B. Only
    the event stream can tell the recorder: node B has no process to signal."""
    shared = dataclasses.replace(settings, redis_url=redis_server.url)
    node_a = await aiohttp_client(create_app(shared))
    node_b = await aiohttp_client(create_app(dataclasses.replace(shared, migrate_on_start=False)))
    base_a = str(node_a.make_url("")).rstrip("/")
    base_b = str(node_b.make_url("")).rstrip("/")
    station, specialist, neuro = HeadlessPeer(base_a), HeadlessPeer(base_a), HeadlessPeer(base_b)
    try:
        cid, call_id, recording = await _started(station, specialist)
        await _until(station, recording, lambda r: r["recording_since"] is not None)
        async with asyncio.timeout(30):  # a second or so of the call is recorded
            await station.frames(station.received.video_frames + 30)

        status, stopped = await _post(specialist, f"{recording}/stop", base_b)
        assert status == 200, stopped
        assert stopped["state"] == "stopping"
        # A second stop: nothing is being recorded any more.
        status, again = await _post(station, f"{recording}/stop")
        assert status == 409
        assert again["code"] == "not-recording"
        assert again["state"] in ("stopping", "saved")
        # Someone who sees the consult but is not in the call may not stop it.
        await neuro.sign_in("neuro", DEMO_PASSWORD)
        assert (await _post(neuro, f"{recording}/stop"))[0] == 404

        saved = await _until(station, recording, lambda r: r["state"] in ("saved", "failed"))
        assert saved["state"] == "saved"
        # The call goes on without the recorder, which has left it.
        call = await station.api("GET", f"/api/v1/calls/{call_id}")
        assert call["state"] == "connected"
        [recorder] = [
            p
            for p in call["participants"]
            if p["user_id"] not in (station.user_id, specialist.user_id)
        ]
        assert recorder["left_at"] is not None
        async with asyncio.timeout(30):  # three more seconds of call, not recorded
            await station.frames(station.received.video_frames + 90)
            await specialist.frames(specialist.received.video_frames + 10)
        assert (await _post(station, f"{recording}/stop"))[0] == 409
        await specialist.hang_up(call_id)
        assert (await station.api("GET", f"/api/v1/calls/{call_id}"))["state"] == "ended"
        # The call's end saves nothing more.
        assert (await station.api("GET", recording))["attachment_id"] == saved["attachment_id"]

        files = (await station.api("GET", f"/api/v1/consults/{cid}/attachments"))["items"]
        [attachment] = [f for f in files if f["kind"] == "recording"]
        assert attachment["id"] == saved["attachment_id"]
        # Through node B, which had no part in it: the file store is shared.
        stored = await neuro.fetch(f"/api/v1/attachments/{attachment['id']}")
        (tmp_path / "stopped.mp4").write_bytes(stored)
        frames = (await asyncio.to_thread(decoded_frames, tmp_path / "stopped.mp4"))["video"]
        assert len(frames) == 2  # one stream per participant
        assert all(n > 0 for n in frames), frames
        # Shorter than the call: fewer frames than the station received from the specialist's
        # same 30 frames/s camera over the call, by at least the three seconds after the stop.
        assert max(frames) + 90 <= station.received.video_frames, (
            frames,
            station.received.video_frames,
        )

        timeline = (await station.api("GET", f"/api/v1/consults/{cid}"))["timeline"]
        steps = [t["action"] for t in timeline]
        assert steps.index("call.record_start") < steps.index("call.record_stop")
        assert steps.index("call.record_stop") < steps.index("call.record_saved")
        [stop] = [t for t in timeline if t["action"] == "call.record_stop"]
        assert stop["actor_user_id"] == specialist.user_id
        events = (await station.api("GET", "/api/v1/events"))["items"]
        [heard] = [e for e in events if e["type"] == "call.recording_stopped"]
        assert heard["payload"]["by"] == specialist.user_id
        assert heard["payload"]["call_id"] == call_id
        admin = HeadlessPeer(base_b)
        await admin.sign_in("admin", DEMO_PASSWORD)
        audit = await admin.api("GET", "/api/v1/audit?action=call.record_stop")
        assert [(a["object_id"], a["actor_user_id"]) for a in audit["items"]] == [
            (call_id, specialist.user_id)
        ]
    finally:
        for peer in (station, specialist, neuro):
            await peer.close()


@SQLITE
async def test_a_stop_before_media_flows_saves_nothing(
    client: TestClient[web.Request, web.Application],
) -> None:
    """Stopped at once after the start, before the recorder has even connected: it hears the
    stop when it reads its feed, records nothing and leaves; the call goes on."""
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        _, call_id, recording = await _started(station, specialist)
        status, stopped = await _post(station, f"{recording}/stop")
        assert status == 200, stopped
        assert stopped["state"] == "stopping"
        assert stopped["recording_since"] is None

        ended = await _until(station, recording, lambda r: r["state"] in ("saved", "failed"))
        assert ended["state"] == "failed"
        assert ended["attachment_id"] is None
        assert ended["recording_since"] is None
        assert (await station.api("GET", f"/api/v1/calls/{call_id}"))["state"] == "connected"
        async with asyncio.timeout(30):
            await station.frames(station.received.video_frames + 10)
        events = (await specialist.api("GET", "/api/v1/events"))["items"]
        assert [e["type"] for e in events if e["type"].startswith("call.recording")] == [
            "call.recording_requested",
            "call.recording_consented",
            "call.recording_stopped",
            "call.recording_failed",
        ]
    finally:
        await station.close()
        await specialist.close()


@SQLITE
async def test_a_recorder_that_dies_leaves_what_it_recorded(
    client: TestClient[web.Request, web.Application], tmp_path: Path
) -> None:
    """The recorder is killed mid-call (a crash, the kernel's OOM killer): nothing closes its
    file. What it wrote up to its last complete fragment is attached and plays; the call goes
    on."""
    base = str(client.make_url("")).rstrip("/")
    station, specialist = HeadlessPeer(base), HeadlessPeer(base)
    try:
        cid, call_id, recording = await _started(station, specialist)
        await _until(station, recording, lambda r: r["recording_since"] is not None)
        async with asyncio.timeout(60):  # five seconds recorded: a fragment every two
            await station.frames(station.received.video_frames + 150)
        [recorder] = client.app[RECORDINGS].processes.values()
        recorder.kill()

        saved = await _until(station, recording, lambda r: r["state"] in ("saved", "failed"))
        assert saved["state"] == "saved"
        assert (await station.api("GET", f"/api/v1/calls/{call_id}"))["state"] == "connected"
        files = (await station.api("GET", f"/api/v1/consults/{cid}/attachments"))["items"]
        [attachment] = [f for f in files if f["kind"] == "recording"]
        died = await station.fetch(f"/api/v1/attachments/{attachment['id']}")
        (tmp_path / "died.mp4").write_bytes(died)
        frames = (await asyncio.to_thread(decoded_frames, tmp_path / "died.mp4"))["video"]
        assert len(frames) == 2  # one stream per participant
        assert all(n > 0 for n in frames), frames
    finally:
        await station.close()
        await specialist.close()
