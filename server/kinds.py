"""The kinds of institution, the five centres and the roles: plain enums, importable without
the models (the command line builds its choices from them). :mod:`server.models` re-exports them.
"""

from __future__ import annotations

import enum


class InstitutionKind(enum.StrEnum):
    LEAD_HOSPITAL = "lead_hospital"
    TOWNSHIP_CENTRE = "township_health_centre"
    VILLAGE_CLINIC = "village_clinic"
    PARTNER_HOSPITAL = "partner_hospital"


class Centre(enum.StrEnum):
    """The five remote centres of the lead hospital."""

    ECG = "ecg"
    IMAGING = "imaging"
    CONSULTATION = "consultation"
    LAB = "lab"
    PATHOLOGY = "pathology"


class Role(enum.StrEnum):
    GRASSROOTS_DOCTOR = "grassroots_doctor"
    SPECIALIST = "specialist"
    CENTRE_COORDINATOR = "centre_coordinator"
    STROKE_TEAM = "stroke_team"
    AMBULANCE = "ambulance"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    #: A system that files results (the lab information system), not a person.
    INTERFACE = "interface"
