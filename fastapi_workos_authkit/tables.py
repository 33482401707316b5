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
)
"""The package's tables, for ``SQLModel.metadata.create_all(engine, tables=TABLES)``."""
