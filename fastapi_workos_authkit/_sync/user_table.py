"""The user-table rules: the user kind of `mirror`, under the names other modules import.

Webhooks and the Events API (one user per transaction), just-in-time fetches (one user) and
backfill (a page of users per transaction) all go through `apply_users`, that is
`mirror.apply_snapshots` for `mirror.USER`:

* a tombstoned id is left alone, so no late event or snapshot brings a deleted user back;
* a missing row is inserted;
* a strictly newer ``updated_at`` replaces the row; an equal or older one changes nothing.

Every call locks the user ids it touches until the transaction ends (see `lock_subjects`), so
concurrent instances apply changes to one user one at a time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, delete
from sqlmodel import Session

from .events import User
from .mirror import USER, Effect, apply_deletion, apply_snapshots, user_values

__all__ = [
    "HANDLERS_FOR_EFFECT",
    "TOMBSTONES",
    "USERS",
    "Effect",
    "apply_user",
    "apply_user_deletion",
    "apply_users",
    "user_values",
]

HANDLERS_FOR_EFFECT = dict(USER.handlers)
"""Which handlers an effective change runs: handlers follow the table, not the event's name."""

USERS: Table = USER.table
TOMBSTONES: Table = USER.tombstones  # type: ignore[assignment]


def apply_users(session: Session, users: list[User]) -> list[Effect]:
    """Apply user snapshots under the rules above; return each one's effect, in order.

    A page costs a handful of statements whatever its size: one lock, two reads, at most one
    insert and one update (both executemany). If an id appears twice, its newest snapshot is
    applied and the other gets `Effect.UNCHANGED`. Call it inside an open transaction.
    """
    return apply_snapshots(session, USER, users)


def apply_user(session: Session, user: User) -> Effect:
    """`apply_users` for one snapshot."""
    return apply_users(session, [user])[0]


def apply_user_deletion(
    session: Session, user_id: str, *, deleted_at: datetime, event_id: str | None = None
) -> Effect:
    """Remove a user and leave a tombstone, also for a user never seen (so it cannot appear)."""
    return apply_deletion(session, USER, user_id, deleted_at=deleted_at, event_id=event_id)


def delete_tombstones(session: Session, *, before: datetime, bound: datetime | None) -> int:
    """Delete tombstones of deletions before ``before`` (and before ``bound``, if given).

    A tombstone is stamped with its ``user.deleted`` event's ``created_at``, so ``bound`` (an
    event time) applies to it directly. Returns how many went.
    """
    statement = delete(TOMBSTONES).where(TOMBSTONES.c.deleted_at < before)
    if bound is not None:
        statement = statement.where(TOMBSTONES.c.deleted_at < bound)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
