"""The recorder child process: ``python -m server.recorder``, started by server.recording.

It joins the call as the recording participant (``signalling.peer.CallRecorder``) with the token
and ICE configuration it reads from stdin, records until its feed says the call ended or a
participant stopped the recording (``call.recording_stopped``; the feed is read from ``--after``,
so a stop made before it connected is not missed), or it is told to stop (SIGTERM), and tells its
parent by JSON lines on stdout: ``{"event": "recording", "tracks": n}`` once media from the
participants is being written, ``{"event": "done"}`` at the end. A stop that comes while it is
still connecting ends it there, with nothing written. Encoding video is CPU work: it happens
here, never in the server's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def _start(recorder: CallRecorder, call_id: str, members: list[str], out: str) -> int:
    """Join, connect to each member, and start writing; returns the number of tracks."""
    await recorder.join_call(call_id)
    connecting = [asyncio.create_task(recorder.connect_member(call_id, m)) for m in members]
    try:
        await asyncio.wait(connecting, timeout=30)
    finally:
        for task in connecting:  # those that never got an answer or tracks
            task.cancel()
    for member in members:
        kinds = [t.kind for t in recorder.tracks.get(member, [])]
        log.info("recorder: member %s sends %s", member, kinds)
    return await recorder.start_recording(out)


async def _record(
    url: str,
    call_id: str,
    out: str,
    members: list[str],
    token: str,
    rtc: dict[str, Any],
    after: int,
) -> int:
    recorder = CallRecorder(url, token, rtc, after=after)
    finished = recorder.finished
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, finished.set)
    tracks = 0
    starting = asyncio.create_task(_start(recorder, call_id, members, out))
    waiting = asyncio.create_task(finished.wait())
    try:
        await asyncio.wait([starting, waiting], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            tracks = starting.result()
            _tell({"event": "recording", "tracks": tracks})
            if tracks:
                await waiting
        else:
            log.info("recorder: stopped before media flowed; nothing recorded")
    finally:
        for task in (starting, waiting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # its failure, if any, was raised above
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
    parser.add_argument("--after", type=int, default=0, help="read the feed after this event id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    secrets = json.loads(sys.stdin.readline())
    return asyncio.run(
        _record(
            args.url,
            args.call_id,
            args.out,
            args.member,
            secrets["token"],
            secrets["rtc"],
            args.after,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
