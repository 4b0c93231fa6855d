"""The consult lifecycle as an explicit state machine.

The main path: draft → submitted → claimed → reported → acknowledged. Also:
cancelled (by the requester before a claim), returned for more information (specialist to
requester, who resubmits), released (a claim given back), reassigned (by the coordinator),
escalated to a partner hospital (whose specialist reports), and amended (a new report version
after signing, which the requester acknowledges again).

A transition not in :data:`TRANSITIONS` raises :class:`IllegalTransition` (HTTP 409); every
accepted one is stored with its actor and time by the caller.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

from server.problems import Conflict


class ConsultState(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CLAIMED = "claimed"
    RETURNED = "returned"  # for more information, back to the requester
    ESCALATED = "escalated"  # to a partner hospital's specialist
    REPORTED = "reported"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"


class ConsultAction(enum.StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    CLAIM = "claim"
    RELEASE = "release"
    REASSIGN = "reassign"
    RETURN = "return"
    ESCALATE = "escalate"
    REPORT = "report"
    AMEND = "amend"
    ACKNOWLEDGE = "acknowledge"


class Priority(enum.StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"

    @property
    def rank(self) -> int:
        """Sort key: stat first."""
        return {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}[self]


S, A = ConsultState, ConsultAction

TRANSITIONS: dict[tuple[ConsultState, ConsultAction], ConsultState] = {
    (S.DRAFT, A.SUBMIT): S.SUBMITTED,
    (S.DRAFT, A.CANCEL): S.CANCELLED,
    (S.SUBMITTED, A.CANCEL): S.CANCELLED,
    (S.SUBMITTED, A.CLAIM): S.CLAIMED,
    (S.SUBMITTED, A.REASSIGN): S.CLAIMED,
    (S.CLAIMED, A.RELEASE): S.SUBMITTED,
    (S.CLAIMED, A.REASSIGN): S.CLAIMED,
    (S.CLAIMED, A.RETURN): S.RETURNED,
    (S.CLAIMED, A.ESCALATE): S.ESCALATED,
    (S.CLAIMED, A.REPORT): S.REPORTED,
    (S.RETURNED, A.SUBMIT): S.SUBMITTED,
    (S.RETURNED, A.CANCEL): S.CANCELLED,
    (S.ESCALATED, A.REPORT): S.REPORTED,
    (S.REPORTED, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.REPORTED, A.AMEND): S.REPORTED,
    (S.ACKNOWLEDGED, A.AMEND): S.REPORTED,
}

#: States in which the centre still owes an answer (counted against the turnaround target).
OPEN_STATES = frozenset({S.SUBMITTED, S.CLAIMED, S.ESCALATED})
#: States that appear on a centre's worklist.
WORKLIST_STATES = frozenset({S.SUBMITTED, S.CLAIMED, S.ESCALATED})
FINAL_STATES = frozenset({S.ACKNOWLEDGED, S.CANCELLED})


class IllegalTransition(Conflict):
    code = "illegal-transition"
    title, title_zh = "Not allowed in this state", "当前状态下不允许此操作"


StateT = TypeVar("StateT", bound=enum.StrEnum)
ActionT = TypeVar("ActionT", bound=enum.StrEnum)


class StateMachine(Generic[StateT, ActionT]):
    """A lifecycle's transition table; the one place that says yes or no (409) to a step."""

    def __init__(self, noun: str, table: dict[tuple[StateT, ActionT], StateT]) -> None:
        self.noun = noun
        self.table = table

    def advance(self, state: StateT, action: ActionT) -> StateT:
        try:
            return self.table[(state, action)]
        except KeyError:
            allowed = sorted(a.value for (s, a) in self.table if s is state)
            raise IllegalTransition(
                f"cannot {action.value} a {self.noun} that is {state.value}",
                state=state.value,
                allowed=allowed,
            ) from None


CONSULT = StateMachine("consult", TRANSITIONS)
advance = CONSULT.advance


# -- two-way referral (双向转诊) ------------------------------------------------------------


class ReferralState(enum.StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # the patient arrived at the receiving institution


class ReferralAction(enum.StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"
    COMPLETE = "complete"


R, RA = ReferralState, ReferralAction

REFERRAL_TRANSITIONS: dict[tuple[ReferralState, ReferralAction], ReferralState] = {
    (R.REQUESTED, RA.ACCEPT): R.ACCEPTED,
    (R.REQUESTED, RA.DECLINE): R.DECLINED,
    (R.REQUESTED, RA.CANCEL): R.CANCELLED,
    (R.ACCEPTED, RA.COMPLETE): R.COMPLETED,
    (R.ACCEPTED, RA.CANCEL): R.CANCELLED,
}


REFERRAL = StateMachine("referral", REFERRAL_TRANSITIONS)
advance_referral = REFERRAL.advance


# -- video calls ------------------------------------------------------------------------------


class CallState(enum.StrEnum):
    RINGING = "ringing"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    CONNECTED = "connected"
    ENDED = "ended"


class CallAction(enum.StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    TIME_OUT = "time_out"
    CONNECT = "connect"  # a participant's media is flowing
    END = "end"


C, CA = CallState, CallAction

CALL_TRANSITIONS: dict[tuple[CallState, CallAction], CallState] = {
    (C.RINGING, CA.ACCEPT): C.ACCEPTED,
    (C.RINGING, CA.DECLINE): C.DECLINED,
    (C.RINGING, CA.TIME_OUT): C.TIMED_OUT,
    (C.RINGING, CA.END): C.ENDED,  # the caller gave up
    (C.ACCEPTED, CA.CONNECT): C.CONNECTED,
    (C.ACCEPTED, CA.END): C.ENDED,
    (C.CONNECTED, CA.CONNECT): C.CONNECTED,  # another participant's media, or a reconnection
    (C.CONNECTED, CA.END): C.ENDED,
}

LIVE_CALL_STATES = frozenset({C.RINGING, C.ACCEPTED, C.CONNECTED})


CALL = StateMachine("call", CALL_TRANSITIONS)
advance_call = CALL.advance
