"""Supervisor figures (综合监管): volumes, turnaround against targets, overdue cases and
critical-value acknowledgement times, per centre and per requesting institution.

Aggregates only: no patient appears here. Computed from the consults submitted in the window.
"""

from __future__ import annotations

import datetime as dt
import statistics
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select

from server.audit import Entry
from server.consultflow import OPEN_STATES, Priority
from server.keys import SETTINGS
from server.models import Centre, Consult, Report, ReportState, TurnaroundTarget, utcnow
from server.policy import Action
from server.problems import ValidationFailed
from server.routing import Call, QueryModel, ResponseModel, Router

router = Router()


class FiguresQuery(QueryModel):
    #: Start of the window (default: 30 days ago).
    since: dt.datetime | None = None
    #: End of the window (default: now).
    until: dt.datetime | None = None


class Turnaround(ResponseModel):
    reported: int
    p50_minutes: float | None
    p90_minutes: float | None
    #: Share of reported consults answered within their target.
    within_target: float | None


class Group(ResponseModel):
    key: str
    submitted: int
    by_day: dict[str, int]
    by_priority: dict[str, int]
    turnaround: Turnaround
    open: int
    overdue_open: int
    flagged_overdue: int
    critical: int
    critical_ack_p50_minutes: float | None
    critical_ack_p90_minutes: float | None
    critical_unacknowledged: int


class Figures(ResponseModel):
    since: dt.datetime
    until: dt.datetime
    #: Days in ``by_day`` are calendar days in this time zone (``HUIZHEN_TIMEZONE``).
    timezone: str
    targets_minutes: dict[str, dict[str, int]]
    by_centre: list[Group]
    by_institution: list[Group]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 1)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _group(
    key: str,
    consults: list[Consult],
    targets: dict[tuple[Centre, Priority], int],
    critical_ids: set[uuid.UUID],
    now: dt.datetime,
    tz: zoneinfo.ZoneInfo,
) -> Group:
    by_day: dict[str, int] = defaultdict(int)
    by_priority: dict[str, int] = defaultdict(int)
    turnaround: list[float] = []
    within = 0
    ack: list[float] = []
    for c in consults:
        assert c.submitted_at is not None
        by_day[c.submitted_at.astimezone(tz).date().isoformat()] += 1
        by_priority[c.priority.value] += 1
        if c.reported_at is not None:
            minutes = (c.reported_at - c.submitted_at).total_seconds() / 60
            turnaround.append(minutes)
            within += minutes <= targets.get((c.centre, c.priority), 24 * 60)
        if c.id in critical_ids and c.acknowledged_at and c.reported_at:
            ack.append((c.acknowledged_at - c.reported_at).total_seconds() / 60)
    open_cases = [c for c in consults if c.state in OPEN_STATES]
    return Group(
        key=key,
        submitted=len(consults),
        by_day=dict(sorted(by_day.items())),
        by_priority=dict(by_priority),
        turnaround=Turnaround(
            reported=len(turnaround),
            p50_minutes=_pct(turnaround, 0.5),
            p90_minutes=_pct(turnaround, 0.9),
            within_target=round(within / len(turnaround), 3) if turnaround else None,
        ),
        open=len(open_cases),
        overdue_open=sum(1 for c in open_cases if c.due_at is not None and c.due_at < now),
        flagged_overdue=sum(1 for c in consults if c.overdue_notified_at is not None),
        critical=sum(1 for c in consults if c.id in critical_ids),
        critical_ack_p50_minutes=_pct(ack, 0.5),
        critical_ack_p90_minutes=_pct(ack, 0.9),
        critical_unacknowledged=sum(1 for c in consults if c.critical_since is not None),
    )


def _groups(
    consults: Iterable[Consult],
    key: str,
    targets: dict[tuple[Centre, Priority], int],
    critical_ids: set[uuid.UUID],
    now: dt.datetime,
    tz: zoneinfo.ZoneInfo,
) -> list[Group]:
    buckets: dict[str, list[Consult]] = defaultdict(list)
    for c in consults:
        buckets[str(getattr(c, key).value if key == "centre" else getattr(c, key))].append(c)
    return [_group(k, v, targets, critical_ids, now, tz) for k, v in sorted(buckets.items())]


@router.route(
    "GET",
    "/api/v1/figures",
    action=Action.FIGURES_READ,
    summary="Volumes, turnaround, overdue cases and critical-value acknowledgement",
    tags=["figures"],
    query=FiguresQuery,
    response=Figures,
)
async def figures(call: Call[None, FiguresQuery]) -> Figures:
    now = utcnow()
    tz = zoneinfo.ZoneInfo(call.app[SETTINGS].timezone)
    until = _aware(call.query.until) if call.query.until else now
    since = _aware(call.query.since) if call.query.since else until - dt.timedelta(days=30)
    if since >= until:
        raise ValidationFailed("since must be before until")
    if until - since > dt.timedelta(days=366):
        raise ValidationFailed("the window is at most a year")
    consults = list(
        await call.session.scalars(
            select(Consult).where(Consult.submitted_at >= since, Consult.submitted_at < until)
        )
    )
    critical_ids = set(
        await call.session.scalars(
            select(Report.consult_id).where(
                Report.critical.is_(True),
                Report.state == ReportState.SIGNED,
                Report.consult_id.in_([c.id for c in consults]),
            )
        )
    )
    targets = {
        (t.centre, t.priority): t.minutes
        for t in await call.session.scalars(select(TurnaroundTarget))
    }
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for (centre, priority), minutes in sorted(targets.items()):
        table[centre.value][priority.value] = minutes
    await call.audit(Entry(action="figures.read", object_type="figures"))
    return Figures(
        since=since,
        until=until,
        targets_minutes=dict(table),
        timezone=tz.key,
        by_centre=_groups(consults, "centre", targets, critical_ids, now, tz),
        by_institution=_groups(
            consults, "requester_institution_id", targets, critical_ids, now, tz
        ),
    )
