"""WebRTC configuration for the signed-in user: ICE servers with short-lived TURN credentials."""

from __future__ import annotations

from typing import Literal

from server.keys import SETTINGS
from server.policy import Action
from server.routing import Call, ResponseModel, Router
from signalling.ice import ice_servers

router = Router()


class IceServerOut(ResponseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class RtcConfig(ResponseModel):
    ice_servers: list[IceServerOut]
    #: Seconds the TURN credentials stay valid; fetch again before then.
    ttl_seconds: int
    #: ``RTCPeerConnection``'s ``iceTransportPolicy``: ``relay`` when the deployment sends all
    #: media through TURN (``HUIZHEN_ICE_RELAY_ONLY``), else ``all``.
    ice_transport_policy: Literal["all", "relay"] = "all"


@router.route(
    "GET",
    "/api/v1/rtc/ice-servers",
    action=Action.SELF,
    summary="ICE servers for WebRTC, with this user's short-lived TURN credentials",
    tags=["realtime"],
    response=RtcConfig,
)
async def get_ice_servers(call: Call[None, None]) -> RtcConfig:
    """Pass ``ice_servers`` and ``ice_transport_policy`` to ``RTCPeerConnection({iceServers,
    iceTransportPolicy})`` as they are."""
    settings = call.app[SETTINGS]
    servers = ice_servers(
        settings.turn_urls,
        settings.turn_secret,
        str(call.principal.user_id),
        settings.turn_ttl_seconds,
    )
    return RtcConfig(
        ice_servers=[
            IceServerOut(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ],
        ttl_seconds=settings.turn_ttl_seconds,
        ice_transport_policy="relay" if settings.ice_relay_only else "all",
    )
