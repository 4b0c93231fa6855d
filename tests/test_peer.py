"""The headless participant: ``huizhen peer`` answers a call from another aiortc peer."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from signalling.peer import HeadlessPeer
from tests.services import ROOT, HuizhenProcess


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_huizhen_peer_answers_a_call(live_server: HuizhenProcess) -> None:
    base = live_server.url
    station = HeadlessPeer(base)
    expert_setup = HeadlessPeer(base)
    try:
        await station.sign_in("chengguan", "huizhen-demo")
        await expert_setup.sign_in("consult", "huizhen-demo")
        found = await station.api("GET", "/api/v1/patients?name=%E5%BC%A0%E6%A1%82%E5%85%B0")
        consult = await station.api(
            "POST",
            "/api/v1/consults",
            {
                "patient_id": found["items"][0]["id"],
                "centre": "consultation",
                "question": "视频会诊",
            },
        )
        await expert_setup.api("POST", f"/api/v1/consults/{consult['id']}/claim", {})
        call = await station.api(
            "POST",
            f"/api/v1/consults/{consult['id']}/calls",
            {"invitee_ids": [expert_setup.user_id]},
        )
        # The station is in the call's room first; then the specialist's cart, run from the
        # command line as station equipment would be, accepts, joins and makes the offer.
        await station.join(call["id"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "peer",
            "--url",
            base,
            "--username",
            "consult",
            "--call-id",
            call["id"],
            "--offer",
            "--seconds",
            "2",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "HUIZHEN_LOG_LEVEL": "WARNING"},
        )
        assert proc.stdin is not None
        proc.stdin.write(b"huizhen-demo\n")
        await proc.stdin.drain()
        async with asyncio.timeout(30):
            await station.answer_next_offer(call["id"])
            await station.frames(10)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        frames = int(out.decode().rsplit(":", 1)[1])
        assert frames >= 10
        state = (await station.api("GET", f"/api/v1/calls/{call['id']}"))["state"]
        assert state in ("connected", "ended")
    finally:
        await station.close()
        await expert_setup.close()
