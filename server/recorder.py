"""The recorder child process: ``python -m server.recorder``, started by server.recording.

It joins the call as the recording participant (``signalling.peer.CallRecorder``) with the token
and ICE configuration it reads from stdin, records until the call ends (the feed says so) or it
is told to stop (SIGTERM), and tells its parent by JSON lines on stdout: ``{"event":
"recording", "tracks": n}`` once media from the participants is being written, ``{"event":
"done"}`` at the end. Encoding video is CPU work: it happens here, never in the server's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from signalling.peer import CallRecorder

log = logging.getLogger(__name__)


def _tell(message: dict[str, Any]) -> None:
    """One JSON line to the server that runs us."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _record(
    url: str, call_id: str, out: str, members: list[str], token: str, rtc: dict[str, Any]
) -> int:
    recorder = CallRecorder(url, token, rtc)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tracks = 0
    try:
        await recorder.join_call(call_id)
        connecting = [asyncio.create_task(recorder.connect_member(call_id, m)) for m in members]
        _, late = await asyncio.wait(connecting, timeout=30)
        for task in late:
            task.cancel()
        for member in members:
            kinds = [t.kind for t in recorder.tracks.get(member, [])]
            log.info("recorder: member %s sends %s", member, kinds)
        tracks = await recorder.start_recording(out)
        _tell({"event": "recording", "tracks": tracks})
        if tracks:
            waiting = [asyncio.create_task(recorder.ended.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiting:
                waiter.cancel()
    finally:
        await recorder.stop()
        await recorder.close()
    _tell({"event": "done", "tracks": tracks})
    return 0 if tracks else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The token and ICE configuration come on stdin (never on the command line)."""
    parser = argparse.ArgumentParser(prog="python -m server.recorder")
    parser.add_argument("--url", required=True)
    parser.add_argument("--call-id", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--member", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    secrets = json.loads(sys.stdin.readline())
    return asyncio.run(
        _record(args.url, args.call_id, args.out, args.member, secrets["token"], secrets["rtc"])
    )


if __name__ == "__main__":
    sys.exit(main())
