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

from sqlalchemy import ColumnElement, and_, exists, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from server.models import (
    DICOM,
    Centre,
    CentreMembership,
    Consult,
    ConsultStudy,
    Institution,
    InstitutionKind,
    PatientLink,
    Role,
    User,
    UserRole,
)
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
    CONSULT_REQUEST = "consult.request"  # open, submit, cancel, acknowledge (requesting side)
    CONSULT_READ = "consult.read"
    CONSULT_WORK = "consult.work"  # claim, release, return, escalate, report (centre side)
    CONSULT_COORDINATE = "consult.coordinate"  # reassign, overdue list
    FIGURES_READ = "figures.read"  # aggregate volumes and turnaround, no patient data
    REFERRAL = "referral"  # two-way referral: open, answer, list
    CALL = "call"  # video consultations on consults the caller takes part in
    IMAGING_READ = "imaging.read"  # DICOMweb search and retrieval, ECG views
    IMAGING_WRITE = "imaging.write"  # DICOMweb store, resumable uploads
    IMAGING_DELETE = "imaging.delete"  # remove studies from the archive
    LAB_RESULTS = "lab.results"  # file results from the lab information system


_CLINICAL_READ = frozenset(
    {
        Action.SELF,
        Action.DIRECTORY_READ,
        Action.PATIENT_READ,
        Action.CONSULT_READ,
        Action.IMAGING_READ,
    }
)

ROLE_GRANTS: Mapping[Role, frozenset[Action]] = {
    Role.GRASSROOTS_DOCTOR: _CLINICAL_READ
    | {
        Action.PATIENT_WRITE,
        Action.CONSULT_REQUEST,
        Action.REFERRAL,
        Action.CALL,
        Action.IMAGING_WRITE,
    },
    Role.SPECIALIST: _CLINICAL_READ
    | {Action.CONSULT_WORK, Action.REFERRAL, Action.CALL, Action.IMAGING_WRITE},
    Role.CENTRE_COORDINATOR: _CLINICAL_READ
    | {Action.CONSULT_COORDINATE, Action.FIGURES_READ, Action.REFERRAL, Action.CALL},
    Role.STROKE_TEAM: _CLINICAL_READ,
    Role.AMBULANCE: frozenset({Action.SELF, Action.DIRECTORY_READ}),
    Role.SUPERVISOR: frozenset(
        {Action.SELF, Action.DIRECTORY_READ, Action.AUDIT_READ, Action.FIGURES_READ}
    ),
    Role.INTERFACE: frozenset({Action.SELF, Action.LAB_RESULTS}),
    Role.ADMIN: frozenset(
        {
            Action.SELF,
            Action.DIRECTORY_READ,
            Action.INSTITUTION_WRITE,
            Action.USER_READ,
            Action.USER_WRITE,
            Action.AUDIT_READ,
            Action.IMAGING_DELETE,
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
    """A SQL condition true for the patients this caller may read: known at an institution in
    their scope, or the subject of a consult they may see."""
    scope = patient_scope(principal)
    via_link = (
        exists(
            select(PatientLink.patient_id).where(
                PatientLink.patient_id == patient_id, PatientLink.institution_id.in_(scope)
            )
        )
        if scope
        else false()
    )
    consults = consult_visible_clause(principal)
    via_consult = exists(select(Consult.id).where(Consult.patient_id == patient_id, consults))
    return or_(via_link, via_consult)


def can_see_patient(principal: Principal, linked_institutions: frozenset[uuid.UUID]) -> bool:
    """By institution only; :func:`patient_visible_clause` also admits patients via consults."""
    return bool(patient_scope(principal) & linked_institutions)


# -- consults ---------------------------------------------------------------------------

_CENTRE_ROLES = frozenset({Role.SPECIALIST, Role.CENTRE_COORDINATOR})


def centre_side(principal: Principal, centre: Centre) -> bool:
    """A specialist or coordinator of ``centre`` at the lead hospital that hosts the centres."""
    return (
        bool(principal.roles & _CENTRE_ROLES)
        and centre in principal.centres
        and principal.institution_kind is InstitutionKind.LEAD_HOSPITAL
    )


def requester_side(principal: Principal, requester_institution_id: uuid.UUID) -> bool:
    return (
        Role.GRASSROOTS_DOCTOR in principal.roles
        and requester_institution_id in principal.care_institutions
    )


def escalation_partner(principal: Principal, escalated_to: uuid.UUID | None) -> bool:
    return (
        Role.SPECIALIST in principal.roles
        and escalated_to is not None
        and escalated_to == principal.institution_id
    )


def consult_visible(principal: Principal, consult: Consult) -> bool:
    return (
        requester_side(principal, consult.requester_institution_id)
        or centre_side(principal, consult.centre)
        or escalation_partner(principal, consult.escalated_to_institution_id)
    )


def consult_visible_clause(principal: Principal) -> ColumnElement[bool]:
    """The SQL form of :func:`consult_visible`, for lists."""
    clauses: list[ColumnElement[bool]] = []
    if Role.GRASSROOTS_DOCTOR in principal.roles and principal.care_institutions:
        clauses.append(Consult.requester_institution_id.in_(principal.care_institutions))
    centres = [c for c in principal.centres if centre_side(principal, c)]
    if centres:
        clauses.append(Consult.centre.in_(centres))
    if Role.SPECIALIST in principal.roles:
        clauses.append(Consult.escalated_to_institution_id == principal.institution_id)
    return or_(*clauses) if clauses else false()


def can_work_on(principal: Principal, consult: Consult) -> bool:
    """May take and answer this consult: a specialist of its centre, or of the partner hospital
    it was escalated to."""
    if Role.SPECIALIST not in principal.roles:
        return False
    return centre_side(principal, consult.centre) or escalation_partner(
        principal, consult.escalated_to_institution_id
    )


def call_invitee_clause(consult: Consult) -> ColumnElement[bool]:
    """The people who may be invited into a video call on ``consult``, as a SQL condition over
    ``users``: those who may see it and take part in it. The requesting station's doctors; the
    specialists and coordinators of its centre at the lead hospital; and, once it is escalated
    to a partner hospital, that hospital's specialists (as :func:`escalation_partner` lets them
    see it). Nobody of any other institution, and no partner before the consult is escalated to
    it."""

    def has_role(*roles: Role) -> ColumnElement[bool]:
        return User.roles.any(UserRole.role.in_(roles))

    clauses = [
        and_(
            User.institution_id == consult.requester_institution_id,
            has_role(Role.GRASSROOTS_DOCTOR),
        ),
        and_(
            User.institution.has(Institution.kind == InstitutionKind.LEAD_HOSPITAL),
            has_role(*_CENTRE_ROLES),
            User.centres.any(CentreMembership.centre == consult.centre),
        ),
    ]
    if consult.escalated_to_institution_id is not None:
        clauses.append(
            and_(
                User.institution_id == consult.escalated_to_institution_id,
                has_role(Role.SPECIALIST),
            )
        )
    return and_(User.active.is_(True), or_(*clauses))


def can_register_patient_at(principal: Principal, institution_id: uuid.UUID) -> bool:
    """A grassroots doctor registers patients at their own institution only."""
    return allowed(principal, Action.PATIENT_WRITE) and institution_id == principal.institution_id


# -- imaging ----------------------------------------------------------------------------


def study_visible_clause(principal: Principal) -> ColumnElement[bool]:
    """The DICOM studies this caller may see: sent from an institution in their patient scope
    (a station sees what it and its village clinics sent), or attached to a consult they may see.
    A partner hospital outside the consortium sees only the pseudonymised copies made for it.
    """
    studies = DICOM.studies
    if principal.institution_kind is InstitutionKind.PARTNER_HOSPITAL:
        # Outside the consortium: only the pseudonymised copies made for this hospital.
        return studies.c.owner_id == principal.institution_id
    clauses: list[ColumnElement[bool]] = []
    scope = patient_scope(principal)
    if scope:
        clauses.append(studies.c.owner_id.in_(scope))
    consults = consult_visible_clause(principal)
    clauses.append(
        exists(
            select(ConsultStudy.consult_id)
            .join(Consult, Consult.id == ConsultStudy.consult_id)
            .where(ConsultStudy.study_uid == studies.c.study_uid, consults)
        )
    )
    return or_(*clauses)
