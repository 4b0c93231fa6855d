"""Recording a video call, only with every participant's consent.

A participant asks (``POST /calls/{id}/recording``; asking counts as their consent); every other
participant in the call answers yes or no (``.../consent``); each answer goes into the consult's
timeline with who and when. One "no" ends the request. When everyone has said yes, ``.../start``
adds the recording participant (the ``huizhen-recorder`` system user, without roles or
password) to the call and runs it in a child process (``python -m server.recorder``, so that
video encoding never blocks the server's event loop): ``signalling.peer.CallRecorder`` offers a
receive-only connection to each participant and writes what it receives into one MP4 file
(H.264, AAC). When the call ends the recorder stops, and the file is attached to the consult as
an attachment of kind ``recording``. Without every current participant's consent, ``start``
answers 409 and nothing is recorded.

Consent can be withdrawn: any participant in the call may ``.../stop`` a recording under way
(``recording → stopping``). The stop is an event on the durable streams, to the members and to
the recorder's own stream: the recorder hears it over socket.io like ``call.ended``, whichever
node it runs under, stops, and what it has is saved as when the call ends (``saved``, or
``failed`` if no media had arrived yet). The call itself goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from server import events
from server.audit import Entry
from server.calls import (
    call_payload,
    load_call,
    participants,
    timeline,
)
from server.consultflow import CallState
from server.consults import display_names, note_in_timeline
from server.db import unit_of_work, write_if
from server.events import PendingEvent, user_stream
from server.keys import ANNOUNCE, BLOBS, SECRET, SESSIONS, SETTINGS
from server.models import (
    Attachment,
    CallParticipant,
    CallRecording,
    Consult,
    Event,
    RecordingConsent,
    User,
    VideoCall,
    utcnow,
)
from server.policy import Action
from server.problems import Conflict, NotFound
from server.routing import Call, RequestModel, ResponseModel, Router
from server.sessions import issue, revoke
from signalling.ice import ice_servers
from signalling.mp4 import playable_length

log = logging.getLogger(__name__)

router = Router()

RECORDER_USERNAME = "huizhen-recorder"
#: The recorder's session lasts at most this long (a call longer than this is cut off).
RECORDER_SESSION_SECONDS = 6 * 3600
MEDIA_TYPE = "video/mp4"
#: Matches no password: nobody signs in as the recorder.
UNUSABLE_PASSWORD = "!"  # noqa: S105
_CHUNK = 256 * 1024


class NotRecording(Conflict):
    code = "not-recording"
    title = "Nothing is being recorded"
    title_zh = "当前没有正在进行的录制"


class ConsentBody(RequestModel):
    consent: bool


class ConsentOut(ResponseModel):
    user_id: uuid.UUID
    display_name: str
    consent: bool
    at: dt.datetime


class RecordingOut(ResponseModel):
    id: uuid.UUID
    call_id: uuid.UUID
    #: asking → refused | consented → recording → (stopping →) saved | failed
    state: str
    requested_by_user_id: uuid.UUID
    requested_at: dt.datetime
    started_at: dt.datetime | None
    #: When media from the participants began to be written.
    recording_since: dt.datetime | None
    ended_at: dt.datetime | None
    attachment_id: uuid.UUID | None
    consents: list[ConsentOut]
    #: Participants whose answer is still awaited.
    waiting_for: list[uuid.UUID]


# -- helpers ---------------------------------------------------------------------------------


async def _members(
    call: Call[Any, Any], video: VideoCall, rec: CallRecording | None
) -> list[uuid.UUID]:
    """The people in the call now (accepted, not left), not counting the recorder."""
    people = await participants(call.session, video.id)
    recorder = rec.recorder_user_id if rec else None
    return [
        p.user_id
        for p in people
        if p.answer == "accepted" and p.left_at is None and p.user_id != recorder
    ]


async def _consents(call: Call[Any, Any], rec: CallRecording) -> list[RecordingConsent]:
    return list(
        await call.session.scalars(
            select(RecordingConsent)
            .where(RecordingConsent.recording_id == rec.id)
            .order_by(RecordingConsent.at)
        )
    )


async def _out(call: Call[Any, Any], video: VideoCall, rec: CallRecording) -> RecordingOut:
    consents = await _consents(call, rec)
    names = await display_names(call.session, [c.user_id for c in consents])
    answered = {c.user_id for c in consents}
    members = await _members(call, video, rec)
    return RecordingOut(
        id=rec.id,
        call_id=rec.call_id,
        state=rec.state,
        requested_by_user_id=rec.requested_by_user_id,
        requested_at=rec.requested_at,
        started_at=rec.started_at,
        recording_since=rec.recording_since,
        ended_at=rec.ended_at,
        attachment_id=rec.attachment_id,
        consents=[
            ConsentOut(
                user_id=c.user_id,
                display_name=names.get(c.user_id, ""),
                consent=c.consent,
                at=c.at,
            )
            for c in consents
        ],
        waiting_for=[m for m in members if m not in answered],
    )


async def _recording(call: Call[Any, Any], video: VideoCall) -> CallRecording | None:
    return await call.session.scalar(select(CallRecording).where(CallRecording.call_id == video.id))


def _announce(
    call: Call[Any, Any],
    video: VideoCall,
    consult: Consult,
    to: Sequence[uuid.UUID],
    type_: str,
    rec: CallRecording,
    **extra: Any,
) -> None:
    call.publish(
        [user_stream(u) for u in to],
        type_,
        consult_id=consult.id,
        payload=call_payload(video, consult.centre, recording_id=str(rec.id), **extra),
    )


async def _in_call(
    call: Call[Any, Any], video: VideoCall, me: CallParticipant, rec: CallRecording | None
) -> list[uuid.UUID]:
    members = await _members(call, video, rec)
    if video.state not in (CallState.ACCEPTED, CallState.CONNECTED) or me.user_id not in members:
        raise Conflict("only a participant of a call under way can do this")
    return members


async def _recorder_user(call: Call[Any, Any]) -> User:
    """The recording participant's account: no roles, no usable password."""
    user = await call.session.scalar(select(User).where(User.username == RECORDER_USERNAME))
    if user is None:
        user = User(
            id=uuid.uuid4(),
            username=RECORDER_USERNAME,
            display_name="会诊录像 Recorder",
            institution_id=call.principal.institution_id,
            password_hash=UNUSABLE_PASSWORD,
        )
        call.session.add(user)
        await call.session.flush()
    return user


def _server_url(request: web.Request) -> str:
    """This server as seen from this host: the address the request arrived on."""
    assert request.transport is not None
    host, port = request.transport.get_extra_info("sockname")[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- routes ----------------------------------------------------------------------------------


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/recording",
    action=Action.CALL,
    summary="Ask to record the call: every participant is asked to consent",
    tags=["calls"],
    response=RecordingOut,
    status=201,
    errors=[409],
)
async def request_recording(call: Call[None, None]) -> RecordingOut:
    """Asking counts as the asker's consent. One request per call."""
    video, consult, me = await load_call(call, call.path["call_id"])
    members = await _in_call(call, video, me, None)
    existing = await _recording(call, video)
    if existing is not None:
        raise Conflict(f"this call's recording was already asked for ({existing.state})")
    now = utcnow()
    rec = CallRecording(
        id=uuid.uuid4(),
        call_id=video.id,
        state="asking",
        requested_by_user_id=me.user_id,
        requested_at=now,
    )
    call.session.add(rec)
    await call.session.flush()
    call.session.add(
        RecordingConsent(recording_id=rec.id, user_id=me.user_id, consent=True, at=now)
    )
    timeline(call, consult, "call.record_request", call_id=video.id)
    timeline(call, consult, "call.record_consent", call_id=video.id, consent="yes")
    if set(members) <= {me.user_id}:
        rec.state = "consented"
    await call.session.flush()
    _announce(call, video, consult, members, "call.recording_requested", rec, by=str(me.user_id))
    return await _out(call, video, rec)


@router.route(
    "GET",
    "/api/v1/calls/{call_id}/recording",
    action=Action.CALL,
    summary="The call's recording request: consents, state, and the attachment once saved",
    tags=["calls"],
    response=RecordingOut,
)
async def get_recording(call: Call[None, None]) -> RecordingOut:
    video, _, _ = await load_call(call, call.path["call_id"])
    rec = await _recording(call, video)
    if rec is None:
        raise NotFound("no recording was asked for in this call")
    return await _out(call, video, rec)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/recording/consent",
    action=Action.CALL,
    summary="Consent to the call being recorded, or refuse (one refusal ends the request)",
    tags=["calls"],
    body=ConsentBody,
    response=RecordingOut,
    errors=[409],
)
async def consent(call: Call[ConsentBody, None]) -> RecordingOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    rec = await _recording(call, video)
    if rec is None:
        raise NotFound("no recording was asked for in this call")
    members = await _in_call(call, video, me, rec)
    if rec.state not in ("asking", "consented"):
        raise Conflict(f"the recording is {rec.state}")
    if await call.session.get(RecordingConsent, (rec.id, me.user_id)) is not None:
        raise Conflict("you have already answered")
    yes = call.body.consent
    call.session.add(RecordingConsent(recording_id=rec.id, user_id=me.user_id, consent=yes))
    action = "call.record_consent" if yes else "call.record_refuse"
    timeline(call, consult, action, call_id=video.id, consent="yes" if yes else "no")
    await call.session.flush()
    if not yes:
        rec.state, rec.ended_at = "refused", utcnow()
        _announce(call, video, consult, members, "call.recording_refused", rec)
    else:
        agreed = {c.user_id for c in await _consents(call, rec) if c.consent}
        if set(members) <= agreed:
            rec.state = "consented"
            _announce(call, video, consult, members, "call.recording_consented", rec)
    await call.session.flush()
    return await _out(call, video, rec)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/recording/start",
    action=Action.CALL,
    summary="Start recording: the recorder joins the call (409 without everyone's consent)",
    tags=["calls"],
    response=RecordingOut,
    errors=[409],
)
async def start_recording(call: Call[None, None]) -> RecordingOut:
    video, consult, me = await load_call(call, call.path["call_id"])
    rec = await _recording(call, video)
    if rec is None:
        raise Conflict("no recording without every participant's consent: ask first")
    members = await _in_call(call, video, me, rec)
    agreed = {c.user_id for c in await _consents(call, rec) if c.consent}
    missing = [m for m in members if m not in agreed]
    if rec.state != "consented" or missing:
        raise Conflict(
            "no recording without every participant's consent",
            state=rec.state,
            waiting_for=[str(m) for m in missing],
        )
    recorder = await _recorder_user(call)
    row = await call.session.get(CallParticipant, (video.id, recorder.id))
    now = utcnow()
    if row is None:
        call.session.add(
            CallParticipant(
                call_id=video.id,
                user_id=recorder.id,
                invited_by_user_id=me.user_id,
                answer="accepted",
                joined_at=now,
            )
        )
    settings = call.app[SETTINGS]
    issued = await issue(
        call.session,
        call.app[SECRET],
        recorder,
        ttl=RECORDER_SESSION_SECONDS,
        client_address="recorder",
    )
    rec.state, rec.recorder_user_id, rec.started_at = "recording", recorder.id, now
    timeline(call, consult, "call.record_start", call_id=video.id)
    await call.session.flush()
    await call.audit(
        Entry(
            action="call.record_start",
            object_type="call",
            object_id=str(video.id),
            patient_id=consult.patient_id,
        )
    )
    servers = ice_servers(
        settings.turn_urls, settings.turn_secret, str(recorder.id), RECORDER_SESSION_SECONDS
    )
    rtc = {
        "ice_servers": [
            {"urls": list(s.urls), "username": s.username, "credential": s.credential}
            for s in servers
        ],
        "ice_transport_policy": "relay" if settings.ice_relay_only else "all",
    }
    # The recorder reads its feed from here on: a stop committed before it connects (it can
    # only commit after this transaction) is replayed to it, never missed.
    after = int(await call.session.scalar(select(func.max(Event.id))) or 0)
    call.app[RECORDINGS].launch(
        Job(
            recording_id=rec.id,
            call_id=video.id,
            consult_id=consult.id,
            recorder_id=recorder.id,
            session_id=issued.session.id,
            base_url=_server_url(call.request),
            token=issued.token,
            rtc=rtc,
            members=members,
            after=after,
        )
    )
    return await _out(call, video, rec)


@router.route(
    "POST",
    "/api/v1/calls/{call_id}/recording/stop",
    action=Action.CALL,
    summary="Stop recording (consent withdrawn): what was recorded is saved; the call goes on",
    tags=["calls"],
    response=RecordingOut,
    errors=[409],
)
async def stop_recording(call: Call[None, None]) -> RecordingOut:
    """Any participant in the call may stop it. The recorder hears the stop on its own stream
    (on whichever node it is connected), stops and saves what it has: ``stopping``, then
    ``saved`` or ``failed`` as at the end of a call."""
    video, consult, me = await load_call(call, call.path["call_id"])
    rec = await _recording(call, video)
    if rec is None:
        raise NotRecording("nothing is being recorded in this call")
    members = await _in_call(call, video, me, rec)
    # Guarded: of two participants stopping at once, or a stop racing the end of the call,
    # exactly one moves it on; the other is told what it has become.
    if not await write_if(call.session, rec, CallRecording.state == "recording", state="stopping"):
        await call.session.refresh(rec)
        raise NotRecording(
            f"only a recording under way can be stopped; this one is {rec.state}",
            state=rec.state,
        )
    timeline(call, consult, "call.record_stop", call_id=video.id)
    await call.session.flush()
    await call.audit(
        Entry(
            action="call.record_stop",
            object_type="call",
            object_id=str(video.id),
            patient_id=consult.patient_id,
        )
    )
    # The recorder's own stream too: that is how its process, wherever it runs, is told.
    to = [*members, *([rec.recorder_user_id] if rec.recorder_user_id else [])]
    _announce(call, video, consult, to, "call.recording_stopped", rec, by=str(me.user_id))
    return await _out(call, video, rec)


# -- the recorder processes ------------------------------------------------------------------


@dataclass
class Job:
    recording_id: uuid.UUID
    call_id: uuid.UUID
    consult_id: uuid.UUID
    recorder_id: uuid.UUID
    session_id: uuid.UUID
    base_url: str
    token: str = field(repr=False)
    rtc: dict[str, Any] = field(repr=False)
    members: list[uuid.UUID]
    #: The recorder's feed starts after this event id.
    after: int = 0


class Recordings:
    """The recorder child processes of this server, one per recording call."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.processes: dict[uuid.UUID, asyncio.subprocess.Process] = {}

    def launch(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job), name=f"recording-{job.call_id}")
        self.tasks[job.recording_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job.recording_id, None))

    async def close(self) -> None:
        """Shutdown: stop every recorder (each saves what it has), then wait for them."""
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=30)
        for task in list(self.tasks.values()):
            task.cancel()

    async def _run(self, job: Job) -> None:
        folder = self.app[SETTINGS].data_dir / "recordings"
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{job.recording_id}.mp4"
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.recorder",
                "--url",
                job.base_url,
                "--call-id",
                str(job.call_id),
                "--out",
                str(out),
                "--after",
                str(job.after),
                *[arg for m in job.members for arg in ("--member", str(m))],
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.processes[job.recording_id] = process
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(json.dumps({"token": job.token, "rtc": job.rtc}).encode() + b"\n")
            await process.stdin.drain()
            process.stdin.close()
            async for line in process.stdout:
                with contextlib.suppress(ValueError):
                    told = json.loads(line)
                    if told.get("event") == "recording" and told.get("tracks"):
                        await self._flowing(job)
            code = await process.wait()
            log.info("call %s: recorder exited with %s", job.call_id, code)
        except Exception:
            log.exception("call %s: the recorder failed", job.call_id)
        finally:
            self.processes.pop(job.recording_id, None)
        try:
            await self._save(job, out)
        except Exception:
            log.exception("call %s: the recording could not be saved", job.call_id)
        finally:
            out.unlink(missing_ok=True)

    async def _flowing(self, job: Job) -> None:
        async with unit_of_work(self.app[SESSIONS]) as db:
            rec = await db.get(CallRecording, job.recording_id)
            consult = await db.get(Consult, job.consult_id)
            video = await db.get(VideoCall, job.call_id)
            if rec is None or consult is None or video is None or rec.state != "recording":
                return  # stopped meanwhile: it is not "started" after "stopped"
            rec.recording_since = utcnow()
            pending = [
                PendingEvent(
                    tuple(user_stream(m) for m in job.members),
                    "call.recording_started",
                    consult.id,
                    call_payload(video, consult.centre, recording_id=str(rec.id)),
                )
            ]
            ids = await events.write(db, pending)
        await self._announce(ids)

    async def _save(self, job: Job, out: Path) -> None:
        size = await asyncio.to_thread(_size, out)
        async with unit_of_work(self.app[SESSIONS]) as db:
            rec = await db.get(CallRecording, job.recording_id)
            consult = await db.get(Consult, job.consult_id)
            video = await db.get(VideoCall, job.call_id)
            await revoke(db, job.session_id)
            if rec is None or consult is None or video is None:
                return
            now = utcnow()
            rec.ended_at = now
            # The recorder has left the call (stopped, or the call ended).
            seat = await db.get(CallParticipant, (video.id, job.recorder_id))
            if seat is not None and seat.left_at is None:
                seat.left_at = now
            detail: dict[str, Any] = {"call_id": str(video.id)}
            if size == 0:
                rec.state = "failed"
                kind = "call.recording_failed"
            else:
                blob = await self.app[BLOBS].put(_chunks(out), max_bytes=size + 1)
                attachment = Attachment(
                    id=uuid.uuid4(),
                    consult_id=consult.id,
                    kind="recording",
                    filename=f"call-{(rec.started_at or now):%Y%m%d-%H%M%S}.mp4",
                    content_type=MEDIA_TYPE,
                    size=blob.size,
                    sha256=blob.sha256,
                    uploaded_by_user_id=job.recorder_id,
                    created_at=now,
                )
                db.add(attachment)
                await db.flush()
                rec.state, rec.attachment_id = "saved", attachment.id
                detail["attachment_id"] = str(attachment.id)
                kind = "call.recording_saved"
            note_in_timeline(
                db,
                consult,
                "call.record_saved" if size else "call.record_failed",
                job.recorder_id,
                at=now,
                detail=detail,
            )
            payload = call_payload(video, consult.centre, recording_id=str(rec.id))
            if rec.attachment_id:
                payload["attachment_id"] = str(rec.attachment_id)
            pending = [
                PendingEvent(tuple(user_stream(m) for m in job.members), kind, consult.id, payload)
            ]
            ids = await events.write(db, pending)
        log.info("call %s: recording %s (%d bytes)", job.call_id, rec.state, size)
        await self._announce(ids)

    async def _announce(self, ids: list[int]) -> None:
        if ids and ANNOUNCE in self.app:
            await self.app[ANNOUNCE](ids)


def _size(path: Path) -> int:
    """The size of the recording that plays, or 0 if there is none (nothing is attached then).
    The cut tail of a recorder that died mid-fragment is left out."""
    if not path.exists():
        return 0
    size, length = path.stat().st_size, playable_length(path)
    if length < size:
        log.warning(
            "recording %s: %d of %d bytes play; the rest is left out", path.name, length, size
        )
        os.truncate(path, length)
    return length


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, _CHUNK):
            yield chunk


RECORDINGS = web.AppKey("recordings", Recordings)


async def recordings(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: recorders are stopped (and their files saved) on shutdown."""
    app[RECORDINGS] = Recordings(app)
    yield
    await app[RECORDINGS].close()
