"""The lifecycles' transition tables: every step is either in the table or a 409 naming the
steps that are allowed; every state is reachable from the start."""

from __future__ import annotations

import enum
import itertools

import pytest

from server.consultflow import (
    CALL,
    CONSULT,
    REFERRAL,
    CallAction,
    CallState,
    ConsultAction,
    ConsultState,
    IllegalTransition,
    ReferralAction,
    ReferralState,
    StateMachine,
)

MACHINES: list[
    tuple[
        StateMachine[enum.StrEnum, enum.StrEnum],
        type[enum.StrEnum],
        type[enum.StrEnum],
        enum.StrEnum,
    ]
] = [
    (CONSULT, ConsultState, ConsultAction, ConsultState.DRAFT),  # type: ignore[list-item]
    (REFERRAL, ReferralState, ReferralAction, ReferralState.REQUESTED),  # type: ignore[list-item]
    (CALL, CallState, CallAction, CallState.RINGING),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("machine", "states", "actions", "start"), MACHINES, ids=lambda m: getattr(m, "noun", "")
)
def test_every_step_is_allowed_or_refused_with_the_alternatives(
    machine: StateMachine[enum.StrEnum, enum.StrEnum],
    states: type[enum.StrEnum],
    actions: type[enum.StrEnum],
    start: enum.StrEnum,
) -> None:
    for state, action in itertools.product(states, actions):
        if (state, action) in machine.table:
            assert machine.advance(state, action) is machine.table[(state, action)]
            continue
        with pytest.raises(IllegalTransition) as refused:
            machine.advance(state, action)
        assert refused.value.status == 409
        assert refused.value.extensions["allowed"] == sorted(
            a.value for (s, a) in machine.table if s is state
        )
    reachable = {start}
    frontier = [start]
    while frontier:
        here = frontier.pop()
        for (s, _), there in machine.table.items():
            if s is here and there not in reachable:
                reachable.add(there)
                frontier.append(there)
    assert reachable == set(states)
