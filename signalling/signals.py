"""WebRTC signalling messages, validated at the edge before anything is relayed.

``offer`` and ``answer`` carry an SDP that must parse (aiortc's parser) and describe media;
``ice`` carries one trickled candidate (or the end of candidates) that must parse (aioice);
``hangup`` carries nothing. A message names its call and, optionally, one recipient; without one,
it goes to every other member of the call (a mesh of up to four).

The parsers are imported on first use: aiortc brings PyAV and its codecs (about 35 MiB), which a
server that never carries a call need not hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

KINDS = frozenset({"offer", "answer", "ice", "hangup"})
MAX_SDP = 32 * 1024
MAX_CANDIDATE = 1024


class InvalidSignal(ValueError):
    """The message is not one we relay; the sender gets this text back."""


@dataclass(frozen=True, slots=True)
class Signal:
    call_id: str
    kind: str
    to: str | None
    body: dict[str, Any]


def _uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidSignal(f"{what} must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidSignal(f"{what} must be a UUID string") from None


def parse_signal(data: Any) -> Signal:
    if not isinstance(data, dict):
        raise InvalidSignal("a signal is an object")
    call_id = _uuid(data.get("call_id"), "call_id")
    kind = data.get("kind")
    if kind not in KINDS:
        raise InvalidSignal(f"kind must be one of {sorted(KINDS)}")
    to = None if data.get("to") is None else _uuid(data.get("to"), "to")
    body: dict[str, Any] = {}
    if kind in ("offer", "answer"):
        body["sdp"] = _sdp(data.get("sdp"))
    elif kind == "ice":
        body["candidate"] = _candidate(data.get("candidate"))
    return Signal(call_id, str(kind), to, body)


def _sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp:
        raise InvalidSignal("an offer or answer carries an 'sdp' string")
    if len(sdp.encode()) > MAX_SDP:
        raise InvalidSignal(f"the SDP exceeds {MAX_SDP} bytes")
    try:
        from aiortc.sdp import SessionDescription  # aiortc loads PyAV: only once calls happen

        parsed = SessionDescription.parse(sdp)
    except Exception:
        raise InvalidSignal("the SDP does not parse") from None
    if not parsed.media:
        raise InvalidSignal("the SDP describes no media")
    return sdp


def _candidate(candidate: Any) -> dict[str, Any] | None:
    if candidate is None:
        return None  # the end of candidates
    if not isinstance(candidate, dict):
        raise InvalidSignal("an ice message carries a candidate object, or null at the end")
    line = candidate.get("candidate")
    mid = candidate.get("sdpMid")
    index = candidate.get("sdpMLineIndex")
    if not isinstance(line, str) or len(line) > MAX_CANDIDATE:
        raise InvalidSignal("candidate.candidate must be a string of at most 1 KB")
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        raise InvalidSignal("candidate.sdpMid must be a short string or null")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 64
    ):
        raise InvalidSignal("candidate.sdpMLineIndex must be a small integer or null")
    if line:  # an empty candidate ends a generation
        try:
            from aioice import Candidate

            Candidate.from_sdp(line.removeprefix("candidate:"))
        except Exception:
            raise InvalidSignal("the candidate does not parse") from None
    return {"candidate": line, "sdpMid": mid, "sdpMLineIndex": index}
