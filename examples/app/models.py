"""The app's own tables, next to the package's ``workos_*`` tables in the same database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from fastapi_workos_authkit import UTCDateTime


# --8<-- [start:users]
class AppUser(SQLModel, table=True):
    """The app's user: its own columns, kept in step with WorkOS by the user.* handlers."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    auth_id: str = Field(index=True, unique=True, max_length=64)  # the WorkOS user id
    email: str
    name: str
    role: str | None = None
    preferences: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    last_login_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    last_logout_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


# --8<-- [end:users]


class TodoList(SQLModel, table=True):
    """A todo list, owned by one user, and shared with an organization when
    ``organization_id`` is set (its active members may read it)."""

    __tablename__ = "todo_lists"

    id: int | None = Field(default=None, primary_key=True)
    name: str
    owner_id: int = Field(foreign_key="users.id", index=True)
    # A WorkOS organization id, not a foreign key: the mirror may not hold the organization yet.
    organization_id: str | None = Field(default=None, index=True, max_length=64)


class AllowedDomain(SQLModel, table=True):
    """Email domains allowed to sign up; when the table is empty, any domain not refused is."""

    __tablename__ = "allowed_domains"

    domain: str = Field(primary_key=True, max_length=253)


APP_TABLES = [
    AppUser.__table__,  # type: ignore[attr-defined]
    TodoList.__table__,  # type: ignore[attr-defined]
    AllowedDomain.__table__,  # type: ignore[attr-defined]
]
"""The app's tables, created by its lifespan (use Alembic in production)."""
