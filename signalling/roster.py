"""Who is in which call, and on which node: the routing table of point-to-point signalling.

A connection joins a call after its membership was checked once; each node keeps the connections
of every call it has heard of, with the node that holds each one. A signal then goes to the nodes
that hold its recipients, and only to them (python-socketio's Redis manager would send it to
every node). The table is filled by the ``join`` and ``leave`` broadcasts of the nodes, and a node
that hears a join for a call in which it holds members answers the joiner's node with them, so a
node that started late learns who was there before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Seat:
    """One connection in a call."""

    sid: str
    user_id: str
    node_id: str


class Roster:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        #: call id → sid → seat
        self._calls: dict[str, dict[str, Seat]] = {}
        #: this node's connections → the calls each has joined (membership checked)
        self._local: dict[str, set[str]] = {}

    def add(self, call_id: str, seat: Seat) -> None:
        self._calls.setdefault(call_id, {})[seat.sid] = seat
        if seat.node_id == self.node_id:
            self._local.setdefault(seat.sid, set()).add(call_id)

    def remove(self, call_id: str, sid: str) -> Seat | None:
        seats = self._calls.get(call_id)
        seat = seats.pop(sid, None) if seats is not None else None
        if seats is not None and not seats:
            del self._calls[call_id]
        calls = self._local.get(sid)
        if calls is not None:
            calls.discard(call_id)
            if not calls:
                del self._local[sid]
        return seat

    def joined(self, sid: str, call_id: str) -> bool:
        """Has this node's connection joined this call (and not been removed since)?"""
        return call_id in self._local.get(sid, ())

    def calls_of(self, sid: str) -> list[str]:
        return sorted(self._local.get(sid, ()))

    def seats(self, call_id: str) -> list[Seat]:
        return list(self._calls.get(call_id, {}).values())

    def local(self, call_id: str) -> list[Seat]:
        return [s for s in self._calls.get(call_id, {}).values() if s.node_id == self.node_id]

    def recipients(self, call_id: str, sender: str, to: str | None) -> Iterator[Seat]:
        """The seats a signal from ``sender`` goes to: every other user's, or only ``to``'s."""
        for seat in self._calls.get(call_id, {}).values():
            if seat.user_id != sender and (to is None or seat.user_id == to):
                yield seat

    def forget_node(self, node_id: str) -> int:
        """Drop the seats of a node that went away; returns how many."""
        dropped = 0
        for call_id in list(self._calls):
            for seat in self.seats(call_id):
                if seat.node_id == node_id:
                    self.remove(call_id, seat.sid)
                    dropped += 1
        return dropped
