"""The one event pipeline: ledger claim, apply to tables, handlers, commit, in one transaction.

Webhook deliveries, Events API pages and replays all go through `EventPipeline.process`; user
snapshots from backfill and just-in-time fetches go through `apply_user`. The rules live here once:

* exactly one effect per event id (the ledger row is the claim);
* per user, the newest ``updated_at`` wins and an equal or older snapshot changes nothing;
* a deleted user leaves a tombstone, and no later create or update brings it back;
* user-event handlers follow the *effective* change: an insert runs ``user.created`` handlers, an
  update ``user.updated``, a removal ``user.deleted``; no change, no user-event handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Table, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from .database import is_unavailable, lock_subject
from .errors import DatabaseUnavailableError, HandlerError
from .events import DeletedUser, Event, User
from .handlers import HandlerRegistry, call_in_worker
from .tables import EventStatus, WorkOSEventRecord, WorkOSUser, WorkOSUserTombstone, utcnow

logger = logging.getLogger("fastapi_workos_authkit")

_MAX_ERROR_LENGTH = 2000


class Effect(StrEnum):
    """What an event did to the user table."""

    INSERTED = "inserted"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"


_HANDLERS_FOR_EFFECT = {
    Effect.INSERTED: "user.created",
    Effect.UPDATED: "user.updated",
    Effect.DELETED: "user.deleted",
}


class _Claim(StrEnum):
    NEW = "new"
    RETRY = "retry"
    DUPLICATE = "duplicate"


def _ledger() -> Table:
    return WorkOSEventRecord.__table__  # type: ignore[attr-defined, no-any-return]


class Outcome(StrEnum):
    """What `EventPipeline.process` did with one event."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Result:
    """The outcome of processing one event and its effect on the user table."""

    outcome: Outcome
    effect: Effect


class SyncSession(Session):
    """The session handlers receive. It refuses ``commit()`` while handlers run: the pipeline
    commits once, after the ledger, the user table and every handler agree."""

    in_handlers = False

    def commit(self) -> None:
        if self.in_handlers:
            raise RuntimeError(
                "Do not commit inside a WorkOS event handler: the sync commits your writes "
                "together with the event, or rolls them all back. Use session.flush() if you "
                "need generated ids."
            )
        super().commit()


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"Unsupported database {dialect!r}: use SQLite or PostgreSQL")


def _user_values(user: User) -> dict[str, Any]:
    # Keyed by column name (the metadata column is "metadata"); written with Core statements,
    # which cost a fraction of ORM loads and flushes on this hot path.
    return {
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


def _users() -> Table:
    return WorkOSUser.__table__  # type: ignore[attr-defined, no-any-return]


def _tombstones() -> Table:
    return WorkOSUserTombstone.__table__  # type: ignore[attr-defined, no-any-return]


def apply_user(session: Session, user: User) -> Effect:
    """Upsert a user snapshot under the newest-``updated_at``-wins and tombstone rules.

    Call it inside an open transaction; it locks the user id until that transaction ends.
    """
    lock_subject(session, user.id)
    users, tombstones = _users(), _tombstones()
    if session.execute(select(tombstones.c.user_id).where(tombstones.c.user_id == user.id)).first():
        return Effect.UNCHANGED
    stored_at = session.execute(
        select(users.c.updated_at).where(users.c.id == user.id)
    ).scalar_one_or_none()
    if stored_at is None:
        session.execute(insert(users).values(id=user.id, **_user_values(user)))
        return Effect.INSERTED
    if user.updated_at <= stored_at:
        return Effect.UNCHANGED
    session.execute(update(users).where(users.c.id == user.id).values(**_user_values(user)))
    return Effect.UPDATED


def apply_user_deletion(
    session: Session, user_id: str, *, deleted_at: datetime, event_id: str | None = None
) -> Effect:
    """Remove a user and leave a tombstone, also for a user never seen (so it cannot appear)."""
    lock_subject(session, user_id)
    users = _users()
    removed = session.execute(delete(users).where(users.c.id == user_id).returning(users.c.id))
    existed = removed.first() is not None
    tombstone = _insert(session, _tombstones()).values(
        user_id=user_id, deleted_at=deleted_at, event_id=event_id
    )
    session.execute(tombstone.on_conflict_do_nothing(index_elements=["user_id"]))
    return Effect.DELETED if existed else Effect.UNCHANGED


def subject_of(event: Event[Any]) -> str | None:
    """The id an event is about, for the ledger: the user for user events, else the data's id."""
    data = event.data
    if isinstance(data, User | DeletedUser):
        return data.id
    if isinstance(data, dict):
        value = data.get("id")
        return value if isinstance(value, str) else None
    value = getattr(data, "id", None)
    return value if isinstance(value, str) else None


class EventPipeline:
    """Processes events exactly once each, in one transaction with the app's handlers."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        handlers: HandlerRegistry,
    ) -> None:
        self._engine = engine
        self._handlers = handlers

    def process(self, event: Event[Any], payload: dict[str, Any], *, source: str) -> Result:
        """Apply ``event`` once; a second delivery of the same id returns `Outcome.DUPLICATE`.

        Raises `HandlerError` when a handler raised (the transaction is rolled back and the
        failure recorded in the ledger), and `DatabaseUnavailableError` when the database is down.
        Synchronous: call it from a worker thread in async code.
        """
        try:
            with self._transaction() as session:
                claim = self._claim(session, event, payload, source)
                if claim is _Claim.DUPLICATE:
                    session.rollback()
                    logger.debug("event %s (%s) is a duplicate", event.id, event.event)
                    return Result(Outcome.DUPLICATE, Effect.UNCHANGED)
                effect = self._apply(session, event)
                self._run_handlers(session, event, effect)
                if claim is _Claim.RETRY:
                    table = _ledger()
                    session.execute(
                        update(table)
                        .where(table.c.id == event.id)
                        .values(
                            status=EventStatus.PROCESSED.value,
                            processed_at=utcnow(),
                            attempts=table.c.attempts + 1,
                            last_error=None,
                        )
                    )
                session.commit()
        except HandlerError as exc:
            self._record_failure(event, payload, source, exc.__cause__ or exc)
            raise
        logger.debug("event %s (%s) processed: %s", event.id, event.event, effect)
        return Result(Outcome.PROCESSED, effect)

    def apply_user_snapshot(self, user: User, *, source: str = "snapshot") -> Effect:
        """Apply a user fetched from the REST API (just in time, backfill) and run its handlers.

        The same rules as events: newest ``updated_at`` wins, tombstones are respected. The
        handlers of the effective change run in the transaction (an insert runs ``user.created``
        handlers) with a synthetic event ``{source}_{user id}_{updated_at ms}``; nothing goes to
        the ledger, since no WorkOS event id exists. Raises `HandlerError` (rolled back) and
        `DatabaseUnavailableError` like `process`. Synchronous: call it from a worker thread.
        """
        with self._transaction() as session:
            effect = apply_user(session, user)
            handler_type = _HANDLERS_FOR_EFFECT.get(effect)
            if handler_type is not None:
                stamp = int(user.updated_at.timestamp() * 1000)
                event = Event[User](
                    id=f"{source}_{user.id}_{stamp}",
                    event=handler_type,
                    data=user,
                    created_at=user.updated_at,
                )
                self._run_handlers(session, event, effect)
            session.commit()
        return effect

    @contextmanager
    def _transaction(self) -> Iterator[SyncSession]:
        """A session for one unit of work; a database that cannot be reached becomes
        `DatabaseUnavailableError`, so routes can answer 503 instead of 500."""
        try:
            with SyncSession(self._engine(), expire_on_commit=False) as session:
                yield session
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailableError("The database is unavailable") from exc
            raise

    def _claim(
        self, session: Session, event: Event[Any], payload: dict[str, Any], source: str
    ) -> _Claim:
        # The insert comes first in the transaction: on PostgreSQL a concurrent delivery of the
        # same id blocks on it until we finish; on SQLite it takes the write lock up front.
        # The row says "processed" at once: nobody sees it before we commit, and if a handler
        # fails the whole transaction rolls back and the failure is recorded separately.
        table = _ledger()
        now = utcnow()
        inserted = session.execute(
            _insert(session, table)
            .values(
                id=event.id,
                event_type=event.event,
                subject_id=subject_of(event),
                source=source,
                status=EventStatus.PROCESSED.value,
                attempts=1,
                event_created_at=event.created_at,
                received_at=now,
                processed_at=now,
                payload=payload,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
            .returning(table.c.id)
        ).first()
        if inserted is not None:
            return _Claim.NEW
        status = session.execute(
            select(table.c.status).where(table.c.id == event.id).with_for_update()
        ).scalar_one()
        return _Claim.DUPLICATE if status == EventStatus.PROCESSED.value else _Claim.RETRY

    def _apply(self, session: Session, event: Event[Any]) -> Effect:
        data = event.data
        if isinstance(data, DeletedUser):
            return apply_user_deletion(
                session, data.id, deleted_at=event.created_at, event_id=event.id
            )
        if isinstance(data, User) and event.event in ("user.created", "user.updated"):
            return apply_user(session, data)
        return Effect.UNCHANGED

    def _run_handlers(self, session: SyncSession, event: Event[Any], effect: Effect) -> None:
        if event.event.startswith("user."):
            handler_type = _HANDLERS_FOR_EFFECT.get(effect)
            if handler_type is None and event.event in _HANDLERS_FOR_EFFECT.values():
                return  # a duplicate, stale or resurrecting user event changes nothing
            handler_type = handler_type or event.event
        else:
            handler_type = event.event
        session.in_handlers = True
        try:
            for handler in self._handlers.for_type(handler_type):
                try:
                    call_in_worker(handler, session, event)
                except Exception as exc:
                    raise HandlerError(event.id, event.event, exc) from exc
        finally:
            session.in_handlers = False

    def _record_failure(
        self, event: Event[Any], payload: dict[str, Any], source: str, cause: BaseException
    ) -> None:
        error = f"{type(cause).__name__}: {cause}"[:_MAX_ERROR_LENGTH]
        logger.error(
            "handler failed for event %s (%s): %s; the transaction was rolled back",
            event.id,
            event.event,
            type(cause).__name__,
        )
        logger.debug("handler failure for event %s", event.id, exc_info=cause)
        table = _ledger()
        try:
            with Session(self._engine()) as session:
                statement = _insert(session, table).values(
                    id=event.id,
                    event_type=event.event,
                    subject_id=subject_of(event),
                    source=source,
                    status=EventStatus.FAILED.value,
                    attempts=1,
                    last_error=error,
                    event_created_at=event.created_at,
                    received_at=utcnow(),
                    payload=payload,
                )
                # Never overwrite a success: a concurrent delivery may have processed it meanwhile.
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["id"],
                        set_={
                            "status": EventStatus.FAILED.value,
                            "attempts": table.c.attempts + 1,
                            "last_error": error,
                        },
                        where=table.c.status != EventStatus.PROCESSED.value,
                    )
                )
                session.commit()
        except SQLAlchemyError:
            logger.warning("could not record the failure of event %s in the ledger", event.id)
