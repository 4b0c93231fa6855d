"""Who is online (directory-level: users and their institutions, no patient data)."""

from __future__ import annotations

import uuid

from server.keys import REALTIME
from server.policy import Action
from server.routing import Call, ResponseModel, Router

router = Router()


class OnlineUser(ResponseModel):
    user_id: uuid.UUID
    institution_id: uuid.UUID


class PresenceList(ResponseModel):
    items: list[OnlineUser]


@router.route(
    "GET",
    "/api/v1/presence",
    action=Action.DIRECTORY_READ,
    summary="Users connected to the realtime channel now, on any node",
    tags=["realtime"],
    response=PresenceList,
)
async def presence(call: Call[None, None]) -> PresenceList:
    """Changes are pushed as ``presence`` messages on the realtime channel."""
    online = call.app[REALTIME].presence.online()
    return PresenceList(
        items=[
            OnlineUser(user_id=uuid.UUID(o.user_id), institution_id=uuid.UUID(o.institution_id))
            for o in online
        ]
    )
