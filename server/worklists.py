"""The centres' worklists, with turnaround targets and time left, and their rosters."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from server.audit import Entry
from server.consultflow import (
    WORKLIST_STATES,
)
from server.consults import ConsultOut, consult_out, display_names
from server.models import (
    Centre,
    CentreMembership,
    Consult,
    Institution,
    InstitutionKind,
    Patient,
    Role,
    TurnaroundTarget,
    User,
    UserRole,
    utcnow,
)
from server.policy import (
    Action,
    centre_side,
)
from server.problems import Forbidden
from server.routing import Call, ResponseModel, Router

router = Router()


class WorklistItem(ResponseModel):
    consult: ConsultOut
    target_minutes: int
    waiting_seconds: int
    #: Negative once the target has passed.
    seconds_left: int | None
    overdue: bool


class RosterEntry(ResponseModel):
    id: uuid.UUID
    display_name: str


class Roster(ResponseModel):
    centre: Centre
    items: list[RosterEntry]


class Worklist(ResponseModel):
    centre: Centre
    items: list[WorklistItem]


@router.route(
    "GET",
    "/api/v1/centres/{centre}/worklist",
    action=Action.CONSULT_READ,
    summary="A centre's open cases: by priority, then by waiting time, with targets",
    tags=["consults"],
    response=Worklist,
    path_types={"centre": Centre},
)
async def worklist(call: Call[None, None]) -> Worklist:
    centre: Centre = call.path["centre"]
    if not centre_side(call.principal, centre):
        raise Forbidden("the worklist is for this centre's specialists and coordinators")
    rows = (
        await call.session.execute(
            select(Consult, Patient)
            .join(Patient, Patient.id == Consult.patient_id)
            .where(Consult.centre == centre, Consult.state.in_(WORKLIST_STATES))
            .order_by(Consult.priority_rank, Consult.submitted_at, Consult.id)
        )
    ).all()
    targets = {
        t.priority: t.minutes
        for t in await call.session.scalars(
            select(TurnaroundTarget).where(TurnaroundTarget.centre == centre)
        )
    }
    now = utcnow()
    names = await display_names(
        call.session, [x for c, _ in rows for x in (c.requester_user_id, c.assignee_user_id)]
    )
    items = []
    for consult, patient in rows:
        submitted = consult.submitted_at or consult.created_at
        left = int((consult.due_at - now).total_seconds()) if consult.due_at else None
        items.append(
            WorklistItem(
                consult=consult_out(consult, patient, names),
                target_minutes=targets.get(consult.priority, 24 * 60),
                waiting_seconds=max(0, int((now - submitted).total_seconds())),
                seconds_left=left,
                overdue=left is not None and left < 0,
            )
        )
    await call.audit_many(
        Entry(
            action="consult.worklist",
            object_type="consult",
            object_id=str(c.id),
            patient_id=c.patient_id,
        )
        for c, _ in rows
    )
    return Worklist(centre=centre, items=items)


@router.route(
    "GET",
    "/api/v1/centres/{centre}/specialists",
    action=Action.CONSULT_READ,
    summary="The active specialists of a centre (for reassignment)",
    tags=["consults"],
    response=Roster,
    path_types={"centre": Centre},
)
async def roster(call: Call[None, None]) -> Roster:
    centre: Centre = call.path["centre"]
    if not centre_side(call.principal, centre):
        raise Forbidden("the roster is for this centre's specialists and coordinators")
    rows = await call.session.execute(
        select(User.id, User.display_name)
        .join(Institution, Institution.id == User.institution_id)
        .where(
            User.active.is_(True),
            Institution.kind == InstitutionKind.LEAD_HOSPITAL,
            User.roles.any(UserRole.role == Role.SPECIALIST),
            User.centres.any(CentreMembership.centre == centre),
        )
        .order_by(User.display_name)
    )
    return Roster(
        centre=centre,
        items=[RosterEntry(id=row[0], display_name=row[1]) for row in rows],
    )
