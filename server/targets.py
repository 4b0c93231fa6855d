"""Turnaround targets per centre and priority: read by everyone, set by admins.

Defaults (minutes; a migration seeds them): ECG stat 10, urgent 30; imaging stat 20, urgent 30;
consultation stat 30, urgent 120; lab stat 30, urgent 60; pathology stat 45, urgent 1440;
routine 1440 everywhere but pathology (4320). A new target applies to consults submitted after
the change; a consult keeps the ``due_at`` it was given.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from sqlalchemy import select

from server.audit import Entry
from server.consultflow import Priority
from server.models import Centre, TurnaroundTarget
from server.policy import Action
from server.routing import Call, RequestModel, ResponseModel, Router

router = Router()


class TargetOut(ResponseModel):
    centre: Centre
    priority: Priority
    minutes: int


class TargetList(ResponseModel):
    items: list[TargetOut]


class TargetBody(RequestModel):
    #: From one minute to 30 days.
    minutes: Annotated[int, Field(ge=1, le=30 * 24 * 60)]


@router.route(
    "GET",
    "/api/v1/targets",
    action=Action.DIRECTORY_READ,
    summary="Turnaround targets per centre and priority, in minutes",
    tags=["directory"],
    response=TargetList,
)
async def list_targets(call: Call[None, None]) -> TargetList:
    rows = await call.session.scalars(select(TurnaroundTarget))
    centres, priorities = list(Centre), list(Priority)
    items = sorted(
        (TargetOut.model_validate(r) for r in rows),
        key=lambda t: (centres.index(t.centre), priorities.index(t.priority)),
    )
    return TargetList(items=items)


@router.route(
    "PUT",
    "/api/v1/targets/{centre}/{priority}",
    action=Action.INSTITUTION_WRITE,
    summary="Set a turnaround target (applies to consults submitted from now on)",
    tags=["directory"],
    body=TargetBody,
    response=TargetOut,
    path_types={"centre": Centre, "priority": Priority},
)
async def set_target(call: Call[TargetBody, None]) -> TargetOut:
    centre: Centre = call.path["centre"]
    priority: Priority = call.path["priority"]
    target = await call.session.get(TurnaroundTarget, (centre, priority))
    if target is None:
        target = TurnaroundTarget(centre=centre, priority=priority, minutes=call.body.minutes)
        call.session.add(target)
    else:
        target.minutes = call.body.minutes
    await call.session.flush()
    await call.audit(
        Entry(
            action="target.update",
            object_type="target",
            object_id=f"{centre.value}/{priority.value}",
            detail={"minutes": call.body.minutes},
        )
    )
    return TargetOut.model_validate(target)
