"""The one event pipeline: ledger claim, apply to tables, handlers, commit, in one transaction.

Longer than 400 lines on purpose: `EventPipeline` is the single writer of mirrored and ledger
rows, and keeping every write path in one class is what makes that checkable at a glance.

Webhook deliveries, Events API pages and replays all go through `EventPipeline.process`;
snapshots from just-in-time fetches and backfill pages go through `EventPipeline.apply_snapshots`
(one object: `apply_snapshot`). Every write to the mirrored tables and the ledger happens here
(the statements live in `mirror` and `ledger`); the recovery jobs only fetch, page, hold their
lease and report. The rules live here and in `mirror`, once for every kind (users,
organizations, memberships, sessions):

* exactly one effect per event id (the ledger row is the claim);
* per object, the newest ``updated_at`` wins and an equal or older snapshot changes nothing;
* a deleted object leaves a tombstone, and no later create or update brings it back;
* an ended session never becomes active again;
* handlers follow the *effective* change: an insert runs ``*.created`` handlers, an update
  ``*.updated``, a removal ``*.deleted``, a session becoming revoked ``session.revoked``; no
  change, no handler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, Table, bindparam, event, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from .._clock import utcnow
from .._exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    EventFailedError,
    HandlerError,
    InvalidEventError,
)
from .database import (
    ADVISORY_NAMESPACE,
    advisory_key,
    begin_immediate,
    is_unavailable,
    note_locked,
    unavailable_as_error,
)
from .events import AuthSession, Event, User, parse_event
from .handlers import HandlerRegistry, call_in_worker
from .ledger import (
    count_failed_attempt,
    delete_processed,
    describe_failure,
    insert_invalid,
    ledger_id,
    ledger_row,
    ledger_table,
    upsert_failure,
)
from .mirror import (
    OPTIONAL_KINDS,
    SESSION,
    USER,
    Effect,
    MirrorKind,
    apply_deletion,
    apply_snapshot,
    apply_snapshots,
    kind_named,
    kind_of_event,
    prune_ended_sessions,
    prune_tombstones,
    revoked,
    unchanged_reason,
)
from .tables import EventStatus, WorkOSEventRecord
from .transaction_slots import TransactionSlots

logger = logging.getLogger("fastapi_workos_authkit")


def _claim_statement(insert_for: Callable[[Table], Any]) -> Any:
    table = ledger_table()
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    return insert_for(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)


_CLAIM: dict[str, Any] = {
    "postgresql": _claim_statement(postgresql.insert),
    "sqlite": _claim_statement(sqlite.insert),
}
"""The ledger claim per dialect; the row's values come as parameters."""


@lru_cache(maxsize=4)
def _claim_and_lock(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: `_CLAIM` and the advisory lock of the event's object, in one statement.

    One round trip instead of two: the lock is taken only when the claim inserted (a duplicate
    needs none), and the next statement, the read of the stored version, starts its snapshot
    after the lock is held. Built once per set of ledger ``columns`` (`ledger_row`'s keys).
    """
    table = ledger_table()
    claim = (
        postgresql.insert(table)
        .values({key: bindparam(key, type_=table.c[key].type) for key in columns})
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
        .cte("claim")
    )
    lock = func.pg_advisory_xact_lock(bindparam("lock_namespace"), bindparam("lock_key"))
    return select(claim.c.id, lock).select_from(claim)


_CLAIMED_STATUS = (
    select(ledger_table().c.status).where(ledger_table().c.id == bindparam("id")).with_for_update()
)
"""The status of a ledger row the claim found, locked until the transaction ends."""


class _Claim(StrEnum):
    NEW = "new"
    RETRY = "retry"
    DUPLICATE = "duplicate"


class Outcome(StrEnum):
    """What `EventPipeline.process` did with one event."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"


class Acknowledgement(StrEnum):
    """What a delivery did, in one word: the ``status`` of the webhook route's answer.

    WorkOS shows it in the dashboard's delivery log, so it says why an event changed nothing.
    """

    APPLIED = "applied"
    """Processed: it changed its mirrored table (and ran the handlers of that change), or it is
    of a type no table mirrors and its own handlers ran."""
    UNCHANGED = "unchanged"
    """Processed; the mirrored row already held this version, so no handler ran."""
    STALE = "stale"
    """Processed; the mirrored row is newer (or the session already ended), so it was kept and
    no handler ran."""
    TOMBSTONED = "tombstoned"
    """Processed; the object is deleted (a tombstone keeps it out), so no handler ran."""
    DUPLICATE = "duplicate"
    """Already processed before (same event id): nothing was done."""


@dataclass(frozen=True)
class Result:
    """The outcome of processing one event and its effect on the user table."""

    outcome: Outcome
    effect: Effect
    acknowledgement: Acknowledgement = Acknowledgement.APPLIED
    """What the delivery did, in one word (why an effect is `Effect.UNCHANGED`)."""


@dataclass(frozen=True)
class Pruned:
    """What `EventPipeline.prune` deleted, and the event-time bound it respected."""

    events: int
    tombstones: int
    bound: datetime | None
    sessions: int = 0
    """Sessions deleted because they ended or expired before the sessions cut-off."""
    tombstones_by_kind: dict[str, int] = field(default_factory=dict)
    """Tombstones deleted, by kind name (their sum is `tombstones`)."""


class SyncSession(Session):
    """The session handlers receive. It refuses ``commit()``, ``rollback()`` and ``close()``
    while handlers run: the pipeline commits once, after the ledger, the user table and every
    handler agree, and a handler's rollback would silently drop the event's own writes.

    On SQLite its transactions start with ``BEGIN IMMEDIATE`` (see `database.begin_immediate`),
    so a read-then-write rule holds the write lock from its first read.
    """

    in_handlers = False

    def commit(self) -> None:
        self._refuse_in_handlers("commit")
        super().commit()

    def rollback(self) -> None:
        self._refuse_in_handlers("rollback")
        super().rollback()

    def close(self) -> None:
        self._refuse_in_handlers("close")
        super().close()

    def _refuse_in_handlers(self, action: str) -> None:
        if self.in_handlers:
            raise RuntimeError(
                f"Do not {action} the session inside a WorkOS event handler: the sync commits "
                "your writes together with the event, or rolls them all back. Use "
                "session.flush() for generated ids, and session.begin_nested() for work that "
                "may fail on its own."
            )


# On this class only, registered once: a listener on `Session` would reach sessions the package
# does not own, and an engine-wide one would make the app's reads take SQLite's write lock too.
# (Registering it per instance cost more than a SQLite INSERT on every event.)
event.listen(SyncSession, "after_begin", begin_immediate)


_SQLITE_WRITERS: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()
_SQLITE_WRITERS_GUARD = threading.Lock()
_SQLITE_WRITER_WAIT = 30.0
"""Seconds a transaction waits for its turn in this process (SQLite's busy timeout)."""


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, one pipeline transaction at a time per engine in this process.

    SQLite has one writer, and the others wait in its busy handler, which sleeps and polls
    (1 ms growing to 100 ms): under a burst of deliveries the write lock sat free while every
    waiting thread slept. Queueing on a lock here hands the turn over the moment the previous
    transaction ends; ``BEGIN IMMEDIATE`` still guards against other processes. Re-entrant,
    and bounded by the busy timeout, after which SQLite's own wait takes over as before.
    PostgreSQL needs nothing: its row and advisory locks wake waiters at once.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    with _SQLITE_WRITERS_GUARD:
        lock = _SQLITE_WRITERS.setdefault(engine, threading.RLock())
    acquired = lock.acquire(timeout=_SQLITE_WRITER_WAIT)
    try:
        yield
    finally:
        if acquired:
            lock.release()


def snapshot_event(user: User, event_type: str, source: str) -> Event[User]:
    """The event handlers receive for a user snapshot (a REST fetch has no WorkOS event).

    Its id is ``{source}_{user id}_{updated_at in ms}``, so a handler can tell it apart from a
    real event id and it is the same for the same snapshot.
    """
    stamp = int(user.updated_at.timestamp() * 1000)
    return Event[User](
        id=f"{source}_{user.id}_{stamp}", event=event_type, data=user, created_at=user.updated_at
    )


def snapshot_of(obj: Any, event_type: str, source: str) -> Event[Any]:
    """The event handlers receive for a snapshot of any kind (`snapshot_event` for users).

    Its id is ``{source}_{object id}_{updated_at in ms}`` (0 when the object has no
    ``updated_at``), the same for the same snapshot.
    """
    updated_at = getattr(obj, "updated_at", None) or datetime.fromtimestamp(0, UTC)
    stamp = int(updated_at.timestamp() * 1000)
    return Event[Any](
        id=f"{source}_{obj.id}_{stamp}", event=event_type, data=obj, created_at=updated_at
    )


class EventPipeline:
    """Processes events exactly once each, in one transaction with the app's handlers."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        handlers: HandlerRegistry,
        *,
        mirror: Iterable[str] = OPTIONAL_KINDS,
    ) -> None:
        self._engine = engine
        self._handlers = handlers
        self.mirrored: frozenset[str] = frozenset({USER.name, *mirror})
        """The kinds whose tables this pipeline writes (users always); the events of any
        other kind only run their own type's handlers."""
        self.threads = TransactionSlots(engine)
        """Where async callers run the pipeline: a worker thread, at most ``pool_size``
        transactions at once, so a burst never opens and closes overflow connections."""

    def process(self, event: Event[Any], payload: dict[str, Any], *, source: str) -> Result:
        """Apply ``event`` once; a second delivery of the same id returns `Outcome.DUPLICATE`.

        Raises `HandlerError` when a handler raised and `EventFailedError` when the event could
        not be stored (in both cases the transaction is rolled back and the failure recorded in
        the ledger), and `DatabaseUnavailableError` when the database is down.
        Synchronous: call it from a worker thread in async code.
        """
        try:
            with self._transaction() as session:
                claim = self._claim(session, event, payload, source)
                if claim is _Claim.DUPLICATE:
                    session.rollback()
                    logger.debug("event %s (%s) is a duplicate", event.id, event.event)
                    return Result(Outcome.DUPLICATE, Effect.UNCHANGED, Acknowledgement.DUPLICATE)
                effect = self._apply(session, event)
                acknowledgement = self._acknowledgement(session, event, effect)
                self.run_handlers(session, event, effect)
                if claim is _Claim.RETRY:
                    table = ledger_table()
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
            cause = exc.__cause__ or exc
            if is_unavailable(cause):
                # The handler's own query met a database that is down: the same as any outage
                # (503, retried), and there is no reaching the ledger to record it anyway.
                raise DatabaseUnavailableError("The database is unavailable") from cause
            exc.recorded = self._record_failure(event, payload, source, cause, by_handler=True)
            raise
        except SQLAlchemyError as exc:
            # A poison event (a value a column cannot hold, say): record it, so the Events API
            # cursor can move past it and `replay_failed` or an operator can deal with it.
            recorded = self._record_failure(event, payload, source, exc, by_handler=False)
            raise EventFailedError(event.id, event.event, exc, recorded=recorded) from exc
        logger.debug("event %s (%s) processed: %s", event.id, event.event, effect)
        return Result(Outcome.PROCESSED, effect, acknowledgement)

    def apply_user_snapshot(self, user: User, *, source: str = "snapshot") -> Effect:
        """Apply a user fetched from the REST API just in time and run its handlers.

        `apply_snapshot` for the user kind. Synchronous: call it from a worker thread.
        """
        return self.apply_snapshot(USER.name, user, source=source)

    def apply_snapshot(self, kind: str, obj: Any, *, source: str = "snapshot") -> Effect:
        """Apply one object of ``kind`` fetched from the REST API, and run its handlers.

        `apply_snapshots` for one object. Synchronous: call it from a worker thread.
        """
        return self.apply_snapshots([obj], kind=kind, source=source)[0]

    def apply_snapshots(
        self,
        objects: Sequence[Any],
        *,
        source: str,
        kind: str = USER.name,
        run_handlers: bool = True,
        before_commit: Callable[[Session], None] | None = None,
    ) -> list[Effect]:
        """Apply objects of one kind fetched from the REST API in one transaction; return each
        one's effect.

        ``kind`` is a `mirror.KINDS` name (``"user"``, ``"organization"``,
        ``"organization_membership"``, ``"session"``) and ``objects`` instances of its model
        (`User`, `Organization`, `OrganizationMembership`, `AuthSession`). The rules are the
        events' (`mirror`): newest ``updated_at`` wins, tombstones hold, a session's end is
        terminal. With ``run_handlers``, the handlers of each effective change run in the
        transaction (an insert runs ``*.created`` handlers) with a synthetic event
        ``{source}_{object id}_{updated_at ms}``; nothing goes to the ledger, since no WorkOS
        event id exists. ``before_commit`` runs last in the same transaction: a backfill writes
        its cursor there and checks that its lease is still its own, so a page and its cursor
        commit together or not at all, and one commit per page (not per object) is what lets a
        backfill keep up with WorkOS's rate limit.

        Raises `ConfigurationError` for a kind this pipeline does not mirror, `InvalidEventError`
        for an object its table cannot hold (before any write), `HandlerError` (rolled back,
        nothing recorded), whatever ``before_commit`` raises, and `DatabaseUnavailableError`.
        Synchronous: call it from a worker thread.
        """
        mirror_kind = self._mirrored_kind(kind)
        with self._transaction() as session:
            effects = apply_snapshots(session, mirror_kind, list(objects))
            if run_handlers:
                for obj, effect in zip(objects, effects, strict=True):
                    handler_type = mirror_kind.handlers.get(effect)
                    if handler_type is not None:
                        event = snapshot_of(obj, handler_type, source)
                        self.run_handlers(session, event, effect)
            if before_commit is not None:
                before_commit(session)
            session.commit()
        return effects

    def _mirrored_kind(self, name: str) -> MirrorKind:
        kind = kind_named(name)
        if kind.name not in self.mirrored:
            raise ConfigurationError(
                f"{kind.name} objects are not mirrored by this app: add {kind.name!r} to "
                "AuthKit(mirror=...) to store them"
            )
        return kind

    def record_invalid(self, payload: dict[str, Any], error: str, *, source: str) -> bool:
        """Keep an event that cannot be processed as a failed ledger row (never drop it).

        ``payload`` must already be storable (see `untrusted_json.clean_json`). Returns False if
        even that row could not be written although the database answers; an outage raises
        `DatabaseUnavailableError`. Synchronous: call it from a worker thread.
        """
        try:
            with unavailable_as_error(), Session(self._engine()) as session:
                insert_invalid(session, payload, error, source)
                session.commit()
        except SQLAlchemyError as exc:
            logger.error(
                "event %s from %s: recording it as failed did not work either (%s)",
                ledger_id(str(payload.get("id"))),
                source,
                type(exc).__name__,
            )
            return False
        return True

    def retry(self, record: WorkOSEventRecord) -> None:
        """Process a failed ledger event again from its stored payload (source ``replay``).

        A failure of the event or its handlers is recorded by `process` as usual; a payload
        that is not a valid event counts one more failed attempt, with the reason. Raises
        `DatabaseUnavailableError` only. Synchronous: call it from a worker thread.
        """
        try:
            event = parse_event(record.payload)
        except InvalidEventError as exc:
            with unavailable_as_error(), Session(self._engine()) as session:
                count_failed_attempt(session, record.id, f"InvalidEventError: {exc}")
                session.commit()
            return
        with suppress(EventFailedError):
            self.process(event, record.payload, source="replay")

    def prune(
        self,
        *,
        events_before: datetime,
        tombstones_before: datetime,
        bound: Callable[[Session], datetime | None],
        sessions_before: datetime | None = None,
    ) -> Pruned:
        """Delete processed ledger rows, tombstones of every kind and (with
        ``sessions_before``) ended or expired sessions older than their cut-offs, in one
        transaction; failed ledger rows stay for `replay_failed`.

        ``bound`` runs first in the same transaction and returns an event time (or ``None``):
        nothing from an event created at or after it is deleted, since the Events API sync may
        still replay that event (a replayed ``session.created`` of a pruned revoked session
        would store it as active again). Synchronous: call it from a worker thread.
        """
        with unavailable_as_error(), Session(self._engine()) as session:
            limit = bound(session)
            events = delete_processed(session, before=events_before, bound=limit)
            cutoff = tombstones_before if limit is None else min(tombstones_before, limit)
            by_kind = prune_tombstones(session, cutoff)
            sessions = 0
            if sessions_before is not None:
                ended = sessions_before if limit is None else min(sessions_before, limit)
                sessions = prune_ended_sessions(session, ended)
            session.commit()
        return Pruned(
            events=events,
            tombstones=sum(by_kind.values()),
            bound=limit,
            sessions=sessions,
            tombstones_by_kind=by_kind,
        )

    @contextmanager
    def _transaction(self) -> Iterator[SyncSession]:
        """A session for one unit of work; a database that cannot be reached becomes
        `DatabaseUnavailableError`, so routes can answer 503 instead of 500."""
        engine = self._engine()
        with (
            _writer_turn(engine),
            unavailable_as_error(),
            SyncSession(engine, expire_on_commit=False) as session,
        ):
            yield session

    def _claim(
        self, session: Session, event: Event[Any], payload: dict[str, Any], source: str
    ) -> _Claim:
        # The insert comes first in the transaction: on PostgreSQL a concurrent delivery of the
        # same id blocks on it until we finish; on SQLite it takes the write lock up front.
        # The row says "processed" at once: nobody sees it before we commit, and if a handler
        # fails the whole transaction rolls back and the failure is recorded separately.
        # The statements are built once (`_CLAIM`, `_CLAIMED_STATUS`) and run on the session's
        # connection: Core statements need none of the ORM's execute machinery, and building
        # an INSERT's VALUES per event cost more than the database did on SQLite.
        connection = session.connection()
        row = ledger_row(event, payload, source, EventStatus.PROCESSED)
        row["processed_at"] = row["received_at"]
        subject = self._lock_subject(event)
        if subject is not None and connection.dialect.name == "postgresql":
            key = advisory_key(subject)
            statement = _claim_and_lock(tuple(row))
            row["lock_namespace"], row["lock_key"] = ADVISORY_NAMESPACE, key
            inserted = connection.execute(statement, row).first()
            if inserted is not None:
                note_locked(session, [key])
        else:
            inserted = connection.execute(_CLAIM[connection.dialect.name], row).first()
        if inserted is not None:
            return _Claim.NEW
        status = connection.execute(_CLAIMED_STATUS, {"id": event.id}).scalar_one()
        return _Claim.DUPLICATE if status == EventStatus.PROCESSED.value else _Claim.RETRY

    def _table_kind(self, event: Event[Any]) -> MirrorKind | None:
        """The mirrored kind whose table ``event`` changes; None for a kind turned off, or a
        type that is no change to a table (user.password_reset, organization_domain.*)."""
        kind = kind_of_event(event.event)
        if kind is None or kind.name not in self.mirrored or event.event not in kind.event_types:
            return None
        return kind

    def _lock_subject(self, event: Event[Any]) -> str | None:
        """The advisory lock subject `_apply` takes for ``event`` (None when it writes no
        mirrored table)."""
        kind = self._table_kind(event)
        return None if kind is None else f"{kind.lock_prefix}{event.data.id}"

    def _apply(self, session: Session, event: Event[Any]) -> Effect:
        # Dispatch on the type's family (user., organization., organization_membership.,
        # session.) to the kind's rules in `mirror`; no table to change, nothing changes.
        kind = self._table_kind(event)
        if kind is None:
            return Effect.UNCHANGED
        data = event.data
        if event.event.endswith(".deleted"):
            return apply_deletion(
                session, kind, data.id, deleted_at=event.created_at, event_id=event.id
            )
        if kind is SESSION and event.event == "session.revoked":
            assert isinstance(data, AuthSession)
            data = revoked(data)
        return apply_snapshot(session, kind, data)

    def _acknowledgement(
        self, session: Session, event: Event[Any], effect: Effect
    ) -> Acknowledgement:
        # Only an event that changed nothing costs a look at why; the common path reads nothing.
        if effect is not Effect.UNCHANGED:
            return Acknowledgement.APPLIED
        kind = self._table_kind(event)
        if kind is None:
            return Acknowledgement.APPLIED  # no table to change: its own handlers ran
        if event.event.endswith(".deleted"):
            return Acknowledgement.TOMBSTONED  # nothing to remove; the tombstone stays
        data = revoked(event.data) if event.event == "session.revoked" else event.data
        return Acknowledgement(unchanged_reason(session, kind, data))

    def run_handlers(self, session: SyncSession, event: Event[Any], effect: Effect) -> None:
        """Run the app's handlers for ``event`` inside ``session``'s transaction.

        An event of a mirrored kind (users, and organizations, memberships and sessions unless
        turned off) runs the handlers of its effective change (``kind.handlers``: an insert
        runs ``*.created``, an update ``*.updated``, a removal ``*.deleted``, a session stored
        as revoked ``session.revoked``) and none when nothing changed; any other event, and
        every event of a kind turned off, runs its own type's handlers. A handler that raises
        becomes `HandlerError`; the caller rolls back.
        """
        handler_type = event.event
        kind = kind_of_event(event.event)
        if kind is not None and kind.name in self.mirrored:
            effective = kind.handlers.get(effect)
            if effective is not None:
                handler_type = effective
            elif event.event in kind.handler_types():
                return  # a duplicate, stale or resurrecting event changes nothing
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
        self,
        event: Event[Any],
        payload: dict[str, Any],
        source: str,
        cause: BaseException,
        *,
        by_handler: bool,
    ) -> bool:
        """Write the failure to the ledger in its own transaction; False if that failed too."""
        error = describe_failure(cause)
        # Say what really failed: an app handler, or storing the event (no handler blamed then).
        what = "a handler raised" if by_handler else "it could not be stored"
        logger.error(
            "event %s (%s) failed, %s: %s; the transaction was rolled back",
            event.id,
            event.event,
            what,
            type(cause).__name__,
        )
        logger.debug("failure of event %s", event.id, exc_info=cause)
        try:
            with Session(self._engine()) as session:
                row = ledger_row(event, payload, source, EventStatus.FAILED)
                upsert_failure(session, row, error)
                session.commit()
        except SQLAlchemyError as exc:
            logger.error(
                "event %s (%s): recording the failure in the ledger failed too (%s), so the "
                "ledger does not have it",
                event.id,
                event.event,
                type(exc).__name__,
            )
            return False
        return True
