"""Video consultations: the call's lifecycle, and two real aiortc peers signalled through the
server exchanging video frames and a data-channel message."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack

from tests.helpers import Api


async def _claimed_consult(api: Api) -> str:
    _, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    _, consult = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={
            "patient_id": found["items"][0]["id"],
            "centre": "consultation",
            "question": "视频会诊",
        },
    )
    cid = str(consult["id"])
    assert (await api.post(f"/api/v1/consults/{cid}/claim", "consult", json={}))[0] == 200
    return cid


async def _answered_call(api: Api) -> tuple[dict[str, Any], str]:
    """chengguan calls the consultation specialist on a claimed consult; the specialist answers.
    Returns the call and the specialist's user id."""
    cid = await _claimed_consult(api)
    specialist = await _user_id(api, "consult")
    _, call = await api.post(
        f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
    )
    await api.post(f"/api/v1/calls/{call['id']}/accept", "consult")
    return dict(call), specialist


async def _user_id(api: Api, username: str) -> str:
    _, me = await api.get("/api/v1/auth/me", username)
    return str(me["id"])


async def test_call_lifecycle_in_the_timeline(api: Api) -> None:
    cid = await _claimed_consult(api)
    specialist = await _user_id(api, "consult")
    status, call = await api.post(
        f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
    )
    assert status == 201
    assert call["state"] == "ringing"
    _, feed = await api.get("/api/v1/events", "consult")
    ringing = [e for e in feed["items"] if e["type"] == "call.ringing"]
    assert ringing[0]["payload"]["centre"] == "consultation"
    _, detail = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert detail["live_call_id"] == call["id"]
    # One live call per consult; outsiders cannot be invited nor see it.
    assert (
        await api.post(
            f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
        )
    )[0] == 409
    assert (await api.get(f"/api/v1/calls/{call['id']}", "baji"))[0] == 404
    radiology = await _user_id(api, "radiology")
    assert (
        await api.post(
            f"/api/v1/calls/{call['id']}/invite", "chengguan", json={"user_id": radiology}
        )
    )[0] == 422
    # The caller may not "connect" before anyone answered... the invitee answers, then both connect.
    assert (await api.post(f"/api/v1/calls/{call['id']}/accept", "chengguan"))[0] == 409
    status, accepted = await api.post(f"/api/v1/calls/{call['id']}/accept", "consult")
    assert accepted["state"] == "accepted"
    # A second expert (the stroke neurologist) joins the mesh.
    neuro = await _user_id(api, "neuro")
    status, _ = await api.post(
        f"/api/v1/calls/{call['id']}/invite", "consult", json={"user_id": neuro}
    )
    assert status == 200
    for user in ("chengguan", "consult"):
        status, now = await api.post(f"/api/v1/calls/{call['id']}/connected", user)
        assert status == 200
    assert now["state"] == "connected"
    await api.post(f"/api/v1/calls/{call['id']}/hangup", "neuro")  # declines by leaving
    status, left = await api.post(f"/api/v1/calls/{call['id']}/hangup", "consult")
    assert left["state"] == "ended"
    _, detail = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    assert detail["live_call_id"] is None
    _, consult = await api.get(f"/api/v1/consults/{cid}", "chengguan")
    actions = [t["action"] for t in consult["timeline"] if t["action"].startswith("call.")]
    assert actions == [
        "call.start",
        "call.accept",
        "call.invite",
        "call.join",
        "call.join",
        "call.leave",
        "call.leave",
        "call.end",
    ]


async def test_declined_by_everyone(api: Api) -> None:
    cid = await _claimed_consult(api)
    specialist = await _user_id(api, "consult")
    _, call = await api.post(
        f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
    )
    status, declined = await api.post(f"/api/v1/calls/{call['id']}/decline", "consult")
    assert status == 200
    assert declined["state"] == "declined"
    # A new call may start.
    assert (
        await api.post(
            f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
        )
    )[0] == 201


class Peer:
    """A participant: a socket.io client and an aiortc peer connection."""

    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN here
        self.signals: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames = 0
        self.messages: list[str] = []
        self.sio.on("call.signal", self.signals.put)

    async def connect(self, call_id: str) -> dict[str, Any]:
        url = str(self.api.client.make_url("/"))
        await self.sio.connect(
            url, auth={"token": self.token}, transports=["websocket"], wait_timeout=10
        )
        answer: dict[str, Any] = await self.sio.call("call.join", {"call_id": call_id}, timeout=10)
        return answer

    async def count_frames(self, track: MediaStreamTrack) -> None:
        while True:
            await track.recv()
            self.frames += 1

    async def close(self) -> None:
        await self.pc.close()
        if self.sio.connected:
            await self.sio.disconnect()


async def test_two_aiortc_peers_through_the_server(api: Api) -> None:
    call, specialist = await _answered_call(api)
    station = Peer(api, (await api.login("chengguan"))["token"])
    expert = Peer(api, (await api.login("consult"))["token"])
    outsider = Peer(api, (await api.login("baji"))["token"])
    tasks: list[asyncio.Task[None]] = []
    try:
        assert await station.connect(call["id"]) == {"joined": call["id"]}
        assert await expert.connect(call["id"]) == {"joined": call["id"]}
        joined = await asyncio.wait_for(station.signals.get(), 10)
        assert joined["kind"] == "joined"
        assert joined["from"] == specialist
        refused = await outsider.connect(call["id"])
        assert refused["error"]["code"] == "forbidden"

        for peer in (station, expert):
            peer.pc.addTrack(VideoStreamTrack())

            @peer.pc.on("track")
            def on_track(track: MediaStreamTrack, peer: Peer = peer) -> None:
                tasks.append(asyncio.create_task(peer.count_frames(track)))

        got_message = asyncio.Event()

        def on_message(message: str) -> None:
            expert.messages.append(message)
            got_message.set()

        @expert.pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            channel.on("message", on_message)

        chat = station.pc.createDataChannel("chat")
        opened = asyncio.Event()
        chat.on("open", opened.set)

        # Offer → (server) → answer → (server). aiortc puts its candidates in the SDP.
        await station.pc.setLocalDescription(await station.pc.createOffer())
        sent = await station.sio.call(
            "call.signal",
            {"call_id": call["id"], "kind": "offer", "sdp": station.pc.localDescription.sdp},
            timeout=10,
        )
        assert sent == {"relayed": True}
        offer = await asyncio.wait_for(expert.signals.get(), 10)
        assert offer["kind"] == "offer"
        await expert.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await expert.pc.setLocalDescription(await expert.pc.createAnswer())
        await expert.sio.call(
            "call.signal",
            {"call_id": call["id"], "kind": "answer", "sdp": expert.pc.localDescription.sdp},
            timeout=10,
        )
        answer = await asyncio.wait_for(station.signals.get(), 10)
        await station.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

        async with asyncio.timeout(30):
            await opened.wait()
            chat.send("你好，请看患者")
            await got_message.wait()
            while station.frames < 10 or expert.frames < 10:  # noqa: ASYNC110 - counting frames
                await asyncio.sleep(0.1)
        assert expert.messages == ["你好，请看患者"]
        # The outsider heard nothing.
        assert outsider.signals.empty()
        for user in ("chengguan", "consult"):
            assert (await api.post(f"/api/v1/calls/{call['id']}/connected", user))[0] == 200
    finally:
        for task in tasks:
            task.cancel()
        for peer in (station, expert, outsider):
            await peer.close()


async def test_bad_signals_are_refused_and_never_relayed(api: Api) -> None:
    call, _ = await _answered_call(api)
    station = Peer(api, (await api.login("chengguan"))["token"])
    expert = Peer(api, (await api.login("consult"))["token"])
    try:
        await station.connect(call["id"])
        await expert.connect(call["id"])
        assert (await asyncio.wait_for(station.signals.get(), 10))["kind"] == "joined"
        bad: list[Any] = [
            None,
            {"call_id": call["id"], "kind": "shout"},
            {"call_id": "not-a-uuid", "kind": "hangup"},
            {"call_id": call["id"], "kind": "offer", "sdp": "hello"},
            {"call_id": call["id"], "kind": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 8000},
            {"call_id": call["id"], "kind": "ice", "candidate": {"candidate": "candidate:garbage"}},
            {
                "call_id": call["id"],
                "kind": "ice",
                "candidate": {"candidate": "x", "sdpMLineIndex": True},
            },
            {"call_id": call["id"], "kind": "ice", "candidate": "a string"},
        ]
        for message in bad:
            answer = await station.sio.call("call.signal", message, timeout=10)
            assert answer["error"]["code"] == "bad-request", message
        # Not joined to another call: refused.
        other = "00000000-0000-4000-8000-000000000000"
        answer = await station.sio.call(
            "call.signal", {"call_id": other, "kind": "hangup"}, timeout=10
        )
        assert answer["error"]["code"] == "forbidden"
        # A good one still goes through, to the other member only.
        end = {"call_id": call["id"], "kind": "ice", "candidate": None}
        assert await station.sio.call("call.signal", end, timeout=10) == {"relayed": True}
        relayed = await asyncio.wait_for(expert.signals.get(), 10)
        assert relayed["kind"] == "ice"
        assert relayed["candidate"] is None
        assert station.signals.empty()
        assert expert.signals.empty()
        # Once the expert has left the call, they can no longer signal to it.
        await api.post(f"/api/v1/calls/{call['id']}/hangup", "consult")
        answer = await expert.sio.call("call.signal", end, timeout=10)
        assert answer["error"]["code"] == "forbidden"
    finally:
        for peer in (station, expert):
            await peer.close()


async def test_a_member_whose_last_connection_goes_is_announced_as_left(api: Api) -> None:
    """A page closed without hanging up: the others hear `left` and can drop its tile."""
    call, specialist = await _answered_call(api)
    station = Peer(api, (await api.login("chengguan"))["token"])
    expert = Peer(api, (await api.login("consult"))["token"])
    second_tab = Peer(api, (await api.login("consult"))["token"])
    try:
        await station.connect(call["id"])
        await expert.connect(call["id"])
        await second_tab.connect(call["id"])
        for _ in range(2):
            assert (await asyncio.wait_for(station.signals.get(), 10))["kind"] == "joined"
        await expert.sio.disconnect()  # one of the specialist's two pages closes: still there
        await second_tab.sio.call("call.leave", {"call_id": call["id"]})  # now gone
        left = await asyncio.wait_for(station.signals.get(), 10)
        assert left == {"call_id": call["id"], "kind": "left", "from": specialist}
        assert station.signals.empty()
    finally:
        for peer in (station, expert, second_tab):
            await peer.close()


async def _new_specialist(api: Api, username: str, institution: str, centre: str) -> str:
    status, user = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": username,
            "display_name": f"{username} 医生",
            "institution_id": await api.institution_id(institution),
            "password": "partner-password-1",
            "roles": ["specialist"],
            "centres": [centre],
        },
    )
    assert status == 201, user
    await api.login(username, "partner-password-1")
    return str(user["id"])


async def test_partner_specialists_are_invitable_once_the_consult_is_escalated(api: Api) -> None:
    """The invite list offers the centre's specialists and, once the consult is escalated to a
    partner hospital, that partner's specialists: never another institution's."""
    status, other = await api.post(
        "/api/v1/institutions",
        "admin",
        json={"code": "shier", "name_zh": "市第二人民医院", "kind": "partner_hospital"},
    )
    assert status == 201, other
    partner = await _new_specialist(api, "shengyi-doc", "shengyi", "ecg")
    outsider = await _new_specialist(api, "shier-doc", "shier", "consultation")
    cid = await _claimed_consult(api)
    specialist, neuro = await _user_id(api, "consult"), await _user_id(api, "neuro")
    _, call = await api.post(
        f"/api/v1/consults/{cid}/calls", "chengguan", json={"invitee_ids": [specialist]}
    )
    call_id = call["id"]
    await api.post(f"/api/v1/calls/{call_id}/accept", "consult")

    async def offered() -> dict[str, dict[str, Any]]:
        status, body = await api.get(f"/api/v1/calls/{call_id}/invitees", "consult")
        assert status == 200, body
        return {i["id"]: i for i in body["items"]}

    # Not escalated: the centre's other specialist only (not the imaging one, not a partner's).
    assert set(await offered()) == {neuro}
    invite = f"/api/v1/calls/{call_id}/invite"
    assert (await api.post(invite, "consult", json={"user_id": partner}))[0] == 422

    status, _ = await api.post(
        f"/api/v1/consults/{cid}/escalate",
        "consult",
        json={"institution_id": await api.institution_id("shengyi"), "note": "请省医院会诊"},
    )
    assert status == 200
    listed = await offered()
    assert set(listed) == {neuro, partner}  # whatever their centre; never the other partner's
    assert listed[partner]["partner"] is True
    assert listed[partner]["institution_name_zh"] == "省人民医院"
    assert listed[neuro]["partner"] is False
    assert (await api.post(invite, "consult", json={"user_id": outsider}))[0] == 422
    # The station's doctor, also in the call, gets the same list; others get no call at all.
    status, body = await api.get(f"/api/v1/calls/{call_id}/invitees", "chengguan")
    assert {i["id"] for i in body["items"]} == {neuro, partner}
    for stranger in ("neuro", "baji", "shengyi-doc"):
        assert (await api.get(f"/api/v1/calls/{call_id}/invitees", stranger))[0] == 404

    # The partner's specialist is invited, rings, answers and is in the call.
    status, invited = await api.post(invite, "consult", json={"user_id": partner})
    assert status == 200, invited
    _, feed = await api.get("/api/v1/events", "shengyi-doc")
    assert any(
        e["type"] == "call.ringing" and e["payload"]["call_id"] == call_id for e in feed["items"]
    )
    status, answered = await api.post(f"/api/v1/calls/{call_id}/accept", "shengyi-doc")
    assert status == 200, answered
    assert {p["user_id"]: p["answer"] for p in answered["participants"]}[partner] == "accepted"
    assert set(await offered()) == {neuro}  # invited once
