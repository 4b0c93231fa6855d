"""ICE servers for a user: STUN/TURN URLs from configuration, with short-lived TURN credentials.

coturn's ``use-auth-secret`` ("TURN REST API") scheme: the username is
``<expiry unix time>:<user id>`` and the password is base64(HMAC-SHA1(secret, username)). coturn
checks both with the same shared secret, so no credential is stored anywhere, and each one stops
working at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def turn_credentials(
    secret: str, user_id: str, ttl: int, now: float | None = None
) -> tuple[str, str]:
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    urls: tuple[str, ...], secret: str, user_id: str, ttl: int, now: float | None = None
) -> list[IceServer]:
    """STUN URLs as they are; TURN URLs with this user's credentials. Empty: host candidates only
    (a LAN or the test machine)."""
    stun = tuple(u for u in urls if u.startswith("stun:"))
    turn = tuple(u for u in urls if u.startswith(("turn:", "turns:")))
    servers = [IceServer(stun)] if stun else []
    if turn:
        username, credential = turn_credentials(secret, user_id, ttl, now)
        servers.append(IceServer(turn, username, credential))
    return servers
