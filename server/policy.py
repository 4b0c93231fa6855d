"""The policy layer: who may do what, by role and by institution.

Every API route names one :class:`Action`; the router calls :func:`require` before the handler
runs, so a route cannot exist without a decision here. Object-level rules (which patients an
institution sees) live here too, as functions and query filters that handlers apply.

Roles grant actions; institutions scope data:

* a grassroots doctor sees the patients known at their institution, and a township health
  centre also those of its village clinics (乡村一体化);
* specialists and coordinators see the work of their centres (consults arrive with the
  consultation issue; until then they see no patient records);
* supervisors see figures and the audit log, never patient records;
* admins manage institutions and accounts and read the audit log, never patient records.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, false, select
from sqlalchemy.orm import InstrumentedAttribute

from server.models import Centre, InstitutionKind, PatientLink, Role
from server.problems import Forbidden


class Action(enum.StrEnum):
    SELF = "self"  # read one's own account, sign out
    DIRECTORY_READ = "directory.read"  # institutions and centres: no patient data
    INSTITUTION_WRITE = "institution.write"
    USER_READ = "user.read"
    USER_WRITE = "user.write"
    PATIENT_READ = "patient.read"
    PATIENT_WRITE = "patient.write"
    AUDIT_READ = "audit.read"


_CLINICAL_READ = frozenset({Action.SELF, Action.DIRECTORY_READ, Action.PATIENT_READ})

ROLE_GRANTS: Mapping[Role, frozenset[Action]] = {
    Role.GRASSROOTS_DOCTOR: _CLINICAL_READ | {Action.PATIENT_WRITE},
    Role.SPECIALIST: _CLINICAL_READ,
    Role.CENTRE_COORDINATOR: _CLINICAL_READ,
    Role.STROKE_TEAM: _CLINICAL_READ,
    Role.AMBULANCE: frozenset({Action.SELF, Action.DIRECTORY_READ}),
    Role.SUPERVISOR: frozenset({Action.SELF, Action.DIRECTORY_READ, Action.AUDIT_READ}),
    Role.ADMIN: frozenset(
        {
            Action.SELF,
            Action.DIRECTORY_READ,
            Action.INSTITUTION_WRITE,
            Action.USER_READ,
            Action.USER_WRITE,
            Action.AUDIT_READ,
        }
    ),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: uuid.UUID
    username: str
    display_name: str
    institution_id: uuid.UUID
    institution_kind: InstitutionKind
    roles: frozenset[Role]
    centres: frozenset[Centre]
    session_id: uuid.UUID
    #: Institutions whose patients this caller's institution may see: its own and, for a
    #: township health centre, its village clinics.
    care_institutions: frozenset[uuid.UUID]
    via_cookie: bool = False

    @property
    def actions(self) -> frozenset[Action]:
        return permissions_for(self.roles)


def permissions_for(roles: frozenset[Role]) -> frozenset[Action]:
    granted: frozenset[Action] = frozenset()
    for role in roles:
        granted |= ROLE_GRANTS.get(role, frozenset())
    return granted


def allowed(principal: Principal, action: Action) -> bool:
    return action in principal.actions


def require(principal: Principal, action: Action) -> None:
    if not allowed(principal, action):
        raise Forbidden(f"your roles do not allow {action.value}")


# -- patients ---------------------------------------------------------------------------


def patient_scope(principal: Principal) -> frozenset[uuid.UUID]:
    """Institutions through which this caller may see patients (empty: none that way)."""
    if Role.GRASSROOTS_DOCTOR in principal.roles:
        return principal.care_institutions
    return frozenset()


def patient_visible_clause(
    principal: Principal, patient_id: ColumnElement[uuid.UUID] | InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """A SQL condition true for the patients this caller may read."""
    scope = patient_scope(principal)
    if not scope:
        return false()
    return exists(
        select(PatientLink.patient_id).where(
            PatientLink.patient_id == patient_id, PatientLink.institution_id.in_(scope)
        )
    )


def can_see_patient(principal: Principal, linked_institutions: frozenset[uuid.UUID]) -> bool:
    return bool(patient_scope(principal) & linked_institutions)


def can_register_patient_at(principal: Principal, institution_id: uuid.UUID) -> bool:
    """A grassroots doctor registers patients at their own institution only."""
    return allowed(principal, Action.PATIENT_WRITE) and institution_id == principal.institution_id
