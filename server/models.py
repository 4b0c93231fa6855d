"""The database schema: SQLAlchemy 2 typed models. Alembic migrations follow this file."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from imaging.index import DicomIndex
from server.consultflow import CallState, ConsultState, Priority, ReferralState
from server.kinds import Centre, InstitutionKind, Role

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Bigint primary keys that autoincrement on SQLite as well (SQLite only does so for INTEGER).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class Sex(enum.StrEnum):
    MALE = "male"
    FEMALE = "female"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Institution(Base):
    __tablename__ = "institutions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[InstitutionKind] = mapped_column(_enum(InstitutionKind, "institution_kind"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("institutions.id", ondelete="RESTRICT"), index=True
    )
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    parent: Mapped[Institution | None] = relationship(remote_side=[id], lazy="raise")


class CentreSite(Base):
    """A remote centre as hosted by a lead hospital."""

    __tablename__ = "centres"

    code: Mapped[Centre] = mapped_column(_enum(Centre, "centre"), primary_key=True)
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"), index=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    roles: Mapped[list[UserRole]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="UserRole.role"
    )
    centres: Mapped[list[CentreMembership]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="CentreMembership.centre"
    )
    institution: Mapped[Institution] = relationship(lazy="raise")

    @property
    def role_set(self) -> frozenset[Role]:
        return frozenset(r.role for r in self.roles)

    @property
    def centre_set(self) -> frozenset[Centre]:
        return frozenset(c.centre for c in self.centres)


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), primary_key=True)


class CentreMembership(Base):
    __tablename__ = "centre_memberships"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    centre: Mapped[Centre] = mapped_column(_enum(Centre, "centre"), primary_key=True)


class AuthSession(Base):
    """A signed-in session. The token itself is never stored, only its keyed hash."""

    __tablename__ = "auth_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    client_address: Mapped[str] = mapped_column(String(64), default="")


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    national_id: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    sex: Mapped[Sex] = mapped_column(_enum(Sex, "sex"))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    health_card_no: Mapped[str | None] = mapped_column(String(32))
    phone: Mapped[str | None] = mapped_column(String(20))
    registered_by_institution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("institutions.id"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}


class PatientLink(Base):
    """The institutions where a patient is known (registered or seen)."""

    __tablename__ = "patient_links"

    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True
    )
    institution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("institutions.id"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One read or change of protected data. Append-only: triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_actor_at", "actor_user_id", "at"),
        CheckConstraint("outcome IN ('ok', 'denied', 'failed')", name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(64), default="")
    actor_user_id: Mapped[uuid.UUID | None]
    actor_username: Mapped[str] = mapped_column(String(64), default="")
    actor_institution_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    client_address: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LoginFailure(Base):
    """Recent failed sign-ins, shared by every node so that throttling holds across them."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client_address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# -- consultations ------------------------------------------------------------------------


class Consult(Base):
    """A request from a grassroots station to one of the five centres."""

    __tablename__ = "consults"
    __table_args__ = (
        Index("ix_consults_worklist", "centre", "state", "priority_rank", "submitted_at"),
        Index("ix_consults_requester", "requester_institution_id", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    centre: Mapped[Centre] = mapped_column(_enum(Centre, "centre"))
    state: Mapped[ConsultState] = mapped_column(_enum(ConsultState, "consult_state"))
    priority: Mapped[Priority] = mapped_column(_enum(Priority, "priority"))
    #: 0 stat, 1 urgent, 2 routine: the worklist's first sort key.
    priority_rank: Mapped[int]
    question: Mapped[str] = mapped_column(Text)
    clinical_summary: Mapped[str] = mapped_column(Text, default="")
    preferred_video_at: Mapped[dt.datetime | None]
    requester_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    requester_institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"))
    assignee_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), index=True)
    escalated_to_institution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("institutions.id")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[dt.datetime | None]
    claimed_at: Mapped[dt.datetime | None]
    reported_at: Mapped[dt.datetime | None]
    acknowledged_at: Mapped[dt.datetime | None]
    due_at: Mapped[dt.datetime | None]
    overdue_notified_at: Mapped[dt.datetime | None]
    #: Set when a critical value is signed; cleared by the station's acknowledgement.
    critical_since: Mapped[dt.datetime | None]
    critical_reminded_at: Mapped[dt.datetime | None]
    critical_reminders: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)


class ConsultTransition(Base):
    __tablename__ = "consult_transitions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ConsultMessage(Base):
    __tablename__ = "consult_messages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), index=True
    )
    author_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """A file attached to a consult or one of its messages; its bytes are content-addressed."""

    __tablename__ = "attachments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("consult_messages.id"))
    kind: Mapped[str] = mapped_column(String(32), default="file")
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    uploaded_by_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReportState(enum.StrEnum):
    DRAFT = "draft"
    SIGNED = "signed"


class Report(Base):
    """A centre's answer. A signed report is frozen; an amendment is a new version."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("consult_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int]
    previous_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("reports.id"))
    centre: Mapped[Centre] = mapped_column(_enum(Centre, "centre"))
    state: Mapped[ReportState] = mapped_column(_enum(ReportState, "report_state"))
    content: Mapped[dict[str, Any]]
    critical: Mapped[bool] = mapped_column(default=False)
    author_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    signed_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[dt.datetime | None]
    #: SHA-256 of the canonical JSON of what was signed (content, consult, version, signer, time).
    sha256: Mapped[str | None] = mapped_column(String(64))


class Referral(Base):
    """A patient referred up (上转, to a higher tier) or down (下转, back to the grassroots)."""

    __tablename__ = "referrals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consults.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    green_channel: Mapped[bool] = mapped_column(default=False)
    from_institution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("institutions.id"), index=True
    )
    to_institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"), index=True)
    state: Mapped[ReferralState] = mapped_column(_enum(ReferralState, "referral_state"))
    reason: Mapped[str] = mapped_column(Text)
    created_by_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class ReferralTransition(Base):
    __tablename__ = "referral_transitions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("referrals.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


class VideoCall(Base):
    """A video session of a consult: up to four participants in a mesh."""

    __tablename__ = "calls"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consults.id"), index=True)
    state: Mapped[CallState] = mapped_column(_enum(CallState, "call_state"))
    created_by_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    accepted_at: Mapped[dt.datetime | None]
    connected_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    version: Mapped[int] = mapped_column(default=1)


class CallParticipant(Base):
    __tablename__ = "call_participants"

    call_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    invited_by_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    invited_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answer: Mapped[str] = mapped_column(String(16), default="invited")  # or accepted, declined
    joined_at: Mapped[dt.datetime | None]
    left_at: Mapped[dt.datetime | None]


class TurnaroundTarget(Base):
    __tablename__ = "turnaround_targets"

    centre: Mapped[Centre] = mapped_column(_enum(Centre, "centre"), primary_key=True)
    priority: Mapped[Priority] = mapped_column(_enum(Priority, "priority"), primary_key=True)
    minutes: Mapped[int]


# -- durable per-recipient event streams ----------------------------------------------------


class Event(Base):
    """One clinically meaningful event for one stream (a user, an institution, a centre).

    Written in the same transaction as the change it announces; ids increase in commit order
    (writers take a lock, see ``server.events``), so a reader that has seen id N has seen every
    event of its streams below N.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_stream_id", "stream", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    #: One logical event fans out to several streams with the same key; a user subscribed to
    #: more than one of them receives it once.
    key: Mapped[uuid.UUID] = mapped_column(index=True)
    stream: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(48))
    consult_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EventCursor(Base):
    """How far a user has acknowledged their feed."""

    __tablename__ = "event_cursors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    acked_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# -- imaging ---------------------------------------------------------------------------------

#: The DICOM index (studies, series, instances) lives in this schema; imaging/ owns its shape.
DICOM = DicomIndex(Base.metadata)


class ConsultStudy(Base):
    """A DICOM study attached to a consult: images, an ECG, a slide."""

    __tablename__ = "consult_studies"

    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), primary_key=True
    )
    study_uid: Mapped[str] = mapped_column(
        ForeignKey("dicom_studies.study_uid", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: Empty when a modality sent it over DIMSE and the link came from the accession number.
    linked_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DicomPatientId(Base):
    """What an institution's modalities call a patient (their DICOM Patient ID), learnt when a
    study from there is first attached to that patient's consult; later studies with the same
    ID from the same institution are the same patient's."""

    __tablename__ = "dicom_patient_ids"

    institution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("institutions.id"), primary_key=True
    )
    dicom_patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SharedStudy(Base):
    """A pseudonymised copy of a study, made for the partner hospital a consult was escalated
    to (outside the consortium). The mapping back to the original is kept here and nowhere
    else the partner can read."""

    __tablename__ = "shared_studies"
    __table_args__ = (UniqueConstraint("consult_id", "original_study_uid"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    consult_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), index=True
    )
    original_study_uid: Mapped[str] = mapped_column(
        ForeignKey("dicom_studies.study_uid", ondelete="CASCADE")
    )
    copy_study_uid: Mapped[str] = mapped_column(
        ForeignKey("dicom_studies.study_uid", ondelete="CASCADE"), index=True
    )
    partner_institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"))
    pseudonym: Mapped[str] = mapped_column(String(64))
    #: Every UID of the original and its replacement in the copy.
    uid_map: Mapped[dict[str, Any]]
    #: Instances left out (burned-in annotations, or that could not be pseudonymised).
    skipped: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """A resumable upload of one file: bytes arrive in chunks at increasing offsets."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    institution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("institutions.id"))
    consult_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE")
    )
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[dt.datetime | None]
    instance_uid: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(default=1)


# -- Call recordings (server/recording.py) ------------------------------------------------------


class CallRecording(Base):
    """A recording of a call: asked for, consented to by every participant, then made by a
    server-side participant and attached to the consult when the call ends."""

    __tablename__ = "call_recordings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    call_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), unique=True
    )
    #: asking → refused | consented → recording → saved | failed
    state: Mapped[str] = mapped_column(String(16))
    requested_by_user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    recorder_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[dt.datetime | None]
    #: When the recorder had media from every participant and began writing.
    recording_since: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    attachment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("attachments.id"))


class RecordingConsent(Base):
    """One participant's answer to a recording request, and when it was given."""

    __tablename__ = "recording_consents"

    recording_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("call_recordings.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    consent: Mapped[bool]
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


__all__ = [
    "DICOM",
    "Attachment",
    "AuditEvent",
    "AuthSession",
    "Base",
    "CallParticipant",
    "CallRecording",
    "Centre",
    "CentreMembership",
    "CentreSite",
    "Consult",
    "ConsultMessage",
    "ConsultStudy",
    "ConsultTransition",
    "DicomPatientId",
    "Event",
    "EventCursor",
    "Institution",
    "InstitutionKind",
    "LoginFailure",
    "Patient",
    "PatientLink",
    "RecordingConsent",
    "Referral",
    "ReferralTransition",
    "Report",
    "ReportState",
    "Role",
    "Sex",
    "SharedStudy",
    "TurnaroundTarget",
    "Upload",
    "User",
    "UserRole",
    "VideoCall",
    "utcnow",
]
