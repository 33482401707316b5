"""SQLModel tables. Every table name starts with ``workos_`` so it never clashes with the app's.

All of them live on ``SQLModel.metadata``, so Alembic's autogenerate sees them beside the app's
own tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp column that always reads back as an aware UTC datetime.

    PostgreSQL stores ``timestamptz``; SQLite has no zones, so values are stored as naive UTC and
    given their zone back on the way out.
    """

    # Alembic's autogenerate writes a column type as ``<type.__module__>.<name>``: the public
    # path keeps revision files importing ``fastapi_workos_authkit``, not this private module.
    __module__ = "fastapi_workos_authkit"

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("Naive datetimes are ambiguous; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_column=Column(UTCDateTime(), nullable=nullable, index=index),
    )


class WorkOSUser(SQLModel, table=True):
    """A WorkOS user, mirrored from webhooks, the Events API, backfill or a just-in-time fetch.

    The primary key is the WorkOS user id (``user_...``). Timestamps are aware UTC. The user's
    metadata is the ``user_metadata`` attribute (SQLAlchemy reserves ``metadata``), stored in a
    column named ``metadata`` and serialised as ``metadata``.
    """

    __tablename__ = "workos_users"

    id: str = Field(primary_key=True, max_length=64)
    email: str = Field(sa_column=Column(String(320), nullable=False, index=True))
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    profile_picture_url: str | None = Field(default=None, sa_column=Column(Text))
    external_id: str | None = Field(default=None, index=True)
    user_metadata: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSON, nullable=False),
        alias="metadata",
        schema_extra={"serialization_alias": "metadata"},
    )
    last_sign_in_at: datetime | None = _timestamp(nullable=True)
    locale: str | None = None
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class EventStatus(StrEnum):
    """Where an event stands in the ledger."""

    PROCESSED = "processed"
    FAILED = "failed"


class WorkOSEventRecord(SQLModel, table=True):
    """The event ledger: one row per event id, whatever path it came by.

    A ``processed`` row makes every later delivery of the same id a no-op; a ``failed`` row keeps
    the raw payload so `replay_failed` (or WorkOS's own retry) can process it again.
    """

    __tablename__ = "workos_events"
    __table_args__ = (Index("ix_workos_events_status_received", "status", "received_at"),)

    id: str = Field(primary_key=True, max_length=64)
    event_type: str = Field(max_length=128, index=True)
    subject_id: str | None = Field(default=None, max_length=64, index=True)
    source: str = Field(max_length=32)
    status: EventStatus = Field(sa_column=Column(String(16), nullable=False))
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    event_created_at: datetime | None = _timestamp(nullable=True)
    received_at: datetime = _timestamp()
    processed_at: datetime | None = _timestamp(nullable=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class WorkOSUserTombstone(SQLModel, table=True):
    """A deleted user id. Creates and updates for it are ignored, so no late event resurrects it."""

    __tablename__ = "workos_user_tombstones"

    user_id: str = Field(primary_key=True, max_length=64)
    deleted_at: datetime = _timestamp(index=True)
    event_id: str | None = Field(default=None, max_length=64)


class WorkOSOrganization(SQLModel, table=True):
    """A WorkOS organization, mirrored from ``organization.*`` events, backfill or a fetch.

    The primary key is the WorkOS organization id (``org_...``). ``domains`` is the list WorkOS
    sends, as sent (each item an ``organization_domain`` object). The organization's metadata is
    the ``organization_metadata`` attribute (SQLAlchemy reserves ``metadata``), stored in a column
    named ``metadata``. No foreign key points here or from here: events arrive in any order.
    """

    __tablename__ = "workos_organizations"

    id: str = Field(primary_key=True, max_length=64)
    name: str | None = Field(default=None, sa_column=Column(Text))
    external_id: str | None = Field(default=None, index=True)
    domains: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    organization_metadata: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSON, nullable=False),
        alias="metadata",
        schema_extra={"serialization_alias": "metadata"},
    )
    created_at: datetime | None = _timestamp(nullable=True)
    updated_at: datetime = _timestamp()


class WorkOSOrganizationMembership(SQLModel, table=True):
    """A user's membership of an organization, mirrored from ``organization_membership.*``.

    ``status`` is ``active``, ``inactive`` or ``pending`` as WorkOS sends it; ``role`` is the
    primary role's slug and ``roles`` the list of every role slug. A membership may be stored
    before its user and its organization: there are no foreign keys between mirrored tables.
    Look one up by ``(user_id, organization_id)`` with `mirror.get_membership`.
    """

    __tablename__ = "workos_organization_memberships"
    __table_args__ = (
        Index("ix_workos_organization_memberships_user_org", "user_id", "organization_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    organization_id: str = Field(max_length=64, index=True)
    status: str | None = Field(default=None, max_length=32)
    role: str | None = None
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    directory_managed: bool | None = None
    custom_attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    created_at: datetime | None = _timestamp(nullable=True)
    updated_at: datetime = _timestamp()


class SessionStatus(StrEnum):
    """A mirrored session's status. ``expired`` and ``revoked`` are terminal."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class WorkOSSession(SQLModel, table=True):
    """A WorkOS sign-in session (the token's ``sid``), mirrored from ``session.*`` events.

    ``status`` is ``active``, ``expired`` or ``revoked``; once a session is mirrored as expired
    or revoked it never becomes active again. ``impersonator`` is the object WorkOS sends (or
    ``None``). Sessions are never tombstoned: `mirror.prune_ended_sessions` removes ended ones.
    """

    __tablename__ = "workos_sessions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64, index=True)
    organization_id: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=32)
    auth_method: str | None = None
    impersonator: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    ip_address: str | None = Field(default=None, sa_column=Column(Text))
    user_agent: str | None = Field(default=None, sa_column=Column(Text))
    expires_at: datetime | None = _timestamp(nullable=True)
    ended_at: datetime | None = _timestamp(nullable=True)
    created_at: datetime | None = _timestamp(nullable=True)
    updated_at: datetime | None = _timestamp(nullable=True)


class WorkOSTombstone(SQLModel, table=True):
    """A deleted organization or membership id, by kind (``organization``,
    ``organization_membership``). Creates and updates for it are ignored, so no late event or
    snapshot brings it back. Users keep their own table, `WorkOSUserTombstone`.
    """

    __tablename__ = "workos_tombstones"

    kind: str = Field(primary_key=True, max_length=32)
    id: str = Field(primary_key=True, max_length=64)
    deleted_at: datetime = _timestamp(index=True)
    event_id: str | None = Field(default=None, max_length=64)


class WorkOSSyncState(SQLModel, table=True):
    """Small named values the reconcilers persist: cursors, progress."""

    __tablename__ = "workos_sync_state"

    key: str = Field(primary_key=True, max_length=64)
    value: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: datetime = _timestamp()


class WorkOSLease(SQLModel, table=True):
    """A named, expiring lease: at most one holder runs a reconciler across all instances."""

    __tablename__ = "workos_leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    acquired_at: datetime = _timestamp()
    expires_at: datetime = _timestamp()


TABLES = (
    WorkOSUser.__table__,  # type: ignore[attr-defined]
    WorkOSEventRecord.__table__,  # type: ignore[attr-defined]
    WorkOSUserTombstone.__table__,  # type: ignore[attr-defined]
    WorkOSSyncState.__table__,  # type: ignore[attr-defined]
    WorkOSLease.__table__,  # type: ignore[attr-defined]
    WorkOSOrganization.__table__,  # type: ignore[attr-defined]
    WorkOSOrganizationMembership.__table__,  # type: ignore[attr-defined]
    WorkOSSession.__table__,  # type: ignore[attr-defined]
    WorkOSTombstone.__table__,  # type: ignore[attr-defined]
)
"""The package's tables, for ``SQLModel.metadata.create_all(engine, tables=TABLES)``."""
