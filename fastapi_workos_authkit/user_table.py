"""The user-table rules, written once for every path that changes a user row.

Webhooks and the Events API (one user per transaction), just-in-time fetches (one user) and
backfill (a page of users per transaction) all go through `apply_users`, called by `pipeline`:

* a tombstoned id is left alone, so no late event or snapshot brings a deleted user back;
* a missing row is inserted;
* a strictly newer ``updated_at`` replaces the row; an equal or older one changes nothing.

Every call locks the user ids it touches until the transaction ends (see `lock_subjects`), so
concurrent instances apply changes to one user one at a time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BindParameter, String, Table, any_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlmodel import Session

from .database import dialect_insert, lock_subjects
from .events import User
from .tables import WorkOSUser, WorkOSUserTombstone


class Effect(StrEnum):
    """What an event or snapshot did to the user table."""

    INSERTED = "inserted"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"


HANDLERS_FOR_EFFECT = {
    Effect.INSERTED: "user.created",
    Effect.UPDATED: "user.updated",
    Effect.DELETED: "user.deleted",
}
"""Which handlers an effective change runs: handlers follow the table, not the event's name."""

USERS: Table = WorkOSUser.__table__  # type: ignore[attr-defined]
TOMBSTONES: Table = WorkOSUserTombstone.__table__  # type: ignore[attr-defined]

# SQLite: an IN list. PostgreSQL: one array parameter, "= ANY(:ids)". psycopg prepares a
# statement run often, and PostgreSQL then reuses a generic plan; an IN list of 100 parameters
# first planned on an empty table keeps its sequential scan as the table grows (a 100,000-user
# backfill went quadratic), while "= ANY(array)" plans as an index lookup.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_ID_ARRAY: BindParameter[Any] = bindparam("ids", type_=postgresql.ARRAY(String))
_TOMBSTONED = {
    "sqlite": select(TOMBSTONES.c.user_id).where(TOMBSTONES.c.user_id.in_(_IDS)),
    "postgresql": select(TOMBSTONES.c.user_id).where(TOMBSTONES.c.user_id == any_(_ID_ARRAY)),
}
_STORED = {
    "sqlite": select(USERS.c.id, USERS.c.updated_at).where(USERS.c.id.in_(_IDS)),
    "postgresql": select(USERS.c.id, USERS.c.updated_at).where(USERS.c.id == any_(_ID_ARRAY)),
}
_UPDATE = (
    update(USERS)
    .where(USERS.c.id == bindparam("b_id"))
    .values({c.key: bindparam(f"b_{c.key}") for c in USERS.columns if c.key != "id"})
)


def user_values(user: User) -> dict[str, Any]:
    """A user's column values, keyed by column name (the metadata column is ``metadata``)."""
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "name": user.name,
        "profile_picture_url": user.profile_picture_url,
        "external_id": user.external_id,
        "metadata": dict(user.metadata),
        "last_sign_in_at": user.last_sign_in_at,
        "locale": user.locale,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def apply_users(session: Session, users: list[User]) -> list[Effect]:
    """Apply user snapshots under the rules above; return each one's effect, in order.

    A page costs a handful of statements whatever its size: one lock, two reads, at most one
    insert and one update (both executemany). If an id appears twice, its newest snapshot is
    applied and the other gets `Effect.UNCHANGED`. Call it inside an open transaction.
    """
    newest: dict[str, User] = {}
    for user in users:
        if user.id not in newest or user.updated_at > newest[user.id].updated_at:
            newest[user.id] = user
    ids = list(newest)
    if not ids:
        return []
    lock_subjects(session, ids)
    dialect = session.get_bind().dialect.name
    tombstoned = set(session.execute(_TOMBSTONED[dialect], {"ids": ids}).scalars())
    stored: dict[str, datetime] = {
        user_id: updated_at
        for user_id, updated_at in session.execute(_STORED[dialect], {"ids": ids})
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    effects: dict[str, Effect] = {}
    for user_id, user in newest.items():
        if user_id in tombstoned:
            effects[user_id] = Effect.UNCHANGED
        elif user_id not in stored:
            inserts.append(user_values(user))
            effects[user_id] = Effect.INSERTED
        elif user.updated_at > stored[user_id]:
            updates.append({f"b_{name}": value for name, value in user_values(user).items()})
            effects[user_id] = Effect.UPDATED
        else:
            effects[user_id] = Effect.UNCHANGED
    if inserts:
        session.execute(insert(USERS), inserts)
    if updates:
        session.execute(_UPDATE, updates)
    return [effects[user.id] if newest[user.id] is user else Effect.UNCHANGED for user in users]


def apply_user(session: Session, user: User) -> Effect:
    """`apply_users` for one snapshot."""
    return apply_users(session, [user])[0]


def apply_user_deletion(
    session: Session, user_id: str, *, deleted_at: datetime, event_id: str | None = None
) -> Effect:
    """Remove a user and leave a tombstone, also for a user never seen (so it cannot appear)."""
    lock_subjects(session, [user_id])
    removed = session.execute(delete(USERS).where(USERS.c.id == user_id).returning(USERS.c.id))
    existed = removed.first() is not None
    tombstone = dialect_insert(session, TOMBSTONES).values(
        user_id=user_id, deleted_at=deleted_at, event_id=event_id
    )
    session.execute(tombstone.on_conflict_do_nothing(index_elements=["user_id"]))
    return Effect.DELETED if existed else Effect.UNCHANGED


def delete_tombstones(session: Session, *, before: datetime, bound: datetime | None) -> int:
    """Delete tombstones of deletions before ``before`` (and before ``bound``, if given).

    A tombstone is stamped with its ``user.deleted`` event's ``created_at``, so ``bound`` (an
    event time) applies to it directly. Returns how many went.
    """
    statement = delete(TOMBSTONES).where(TOMBSTONES.c.deleted_at < before)
    if bound is not None:
        statement = statement.where(TOMBSTONES.c.deleted_at < bound)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
