"""Recovery: Events API catch-up, users backfill, replay of failed events, pruning, the lease.

Webhooks alone lose data (an endpoint down longer than WorkOS's 3-day retry window, an app
installed after its first sign-ups, a handler that failed after the last retry). The jobs here
close those gaps, and every one of them goes through the same pipeline as a webhook delivery:

* `sync_events` pages ``GET /events`` from its **own** persisted cursor (the id of the last event
  it processed from the Events API, never anything derived from webhook rows) and hands each event
  to `EventPipeline.process`. An event that also arrives by webhook takes effect once.
* `backfill_users` pages ``GET /user_management/users`` oldest first and applies each user as a
  snapshot (newest ``updated_at`` wins, tombstones hold), one transaction per page, with its cursor
  saved in that same transaction.
* `replay_failed` gives failed ledger events another go; `prune` bounds the ledger and tombstones.

`sync_events` and `backfill_users` each hold a named lease row while they run, so with several
app instances on one database at most one of each runs at a time; a crashed holder's lease
expires after ``lease_ttl`` seconds.

What the jobs report lives in `reconcile_results`, the poller in `poller`; both are re-exported
here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from sqlalchemy import Engine, delete, func, update
from sqlmodel import Session, col, select

from .database import dialect_insert, guarded, refresh_statistics
from .errors import (
    AuthKitError,
    DatabaseUnavailableError,
    EventFailedError,
    InvalidEventError,
)
from .events import SYNCED_EVENT_TYPES, User, parse_event
from .lease import Lease, held
from .pipeline import EventPipeline, Outcome, SyncSession, snapshot_event
from .poller import EventsPoller
from .reconcile_results import (
    BackfillResult,
    FailedEvent,
    LeaseInfo,
    Progress,
    ProgressCallback,
    PruneResult,
    ReplayedEvent,
    ReplayResult,
    SyncEventsResult,
    SyncStatus,
)
from .tables import (
    EventStatus,
    WorkOSEventRecord,
    WorkOSLease,
    WorkOSSyncState,
    WorkOSUser,
    WorkOSUserTombstone,
)
from .user_table import HANDLERS_FOR_EFFECT, USERS, Effect, apply_users
from .workos_api import Keepalive, Page, WorkOSAPIError

if TYPE_CHECKING:
    from .authkit import AuthKit

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = [
    "BackfillResult",
    "EventTypesChangedError",
    "EventsCursorExpiredError",
    "EventsPoller",
    "FailedEvent",
    "LeaseInfo",
    "Progress",
    "ProgressCallback",
    "PruneResult",
    "ReplayResult",
    "ReplayedEvent",
    "SyncEventsResult",
    "SyncStatus",
    "backfill_users",
    "event_types_in_play",
    "prune",
    "replay_failed",
    "sync_events",
    "sync_status",
]


class EventTypesChangedError(AuthKitError):
    """`sync_events` was asked for other event types than those its cursor was advanced for.

    Continuing would step over the events of the missing types for good (or mark events
    processed without the handlers that should have run), so the run refuses instead.
    """


class EventsCursorExpiredError(AuthKitError):
    """WorkOS no longer knows the events cursor: it keeps events for 30 days only."""


EVENTS_CURSOR = "events.cursor"
"""`WorkOSSyncState` key: id of the last event `sync_events` processed from the Events API."""
EVENTS_TYPES = "events.types"
"""`WorkOSSyncState` key: the sorted, comma-joined event types the cursor was advanced for."""
EVENTS_POSITION = "events.position_at"
"""`WorkOSSyncState` key: ``created_at`` of the event at the cursor (before the first event: the
moment the sync starts from). `prune` keeps everything newer, since the sync may still replay it."""
EVENTS_LAST_RUN = "events.last_run_at"
USERS_CURSOR = "users_backfill.cursor"
"""`WorkOSSyncState` key: id of the last user of the last page `backfill_users` committed."""
USERS_LAST_COMPLETED = "users_backfill.completed_at"

PAGE_SIZE = 100
MIN_RETENTION = timedelta(days=3)
"""WorkOS retries a webhook for up to 3 days: ledger rows and tombstones must outlive that."""
DEFAULT_RETENTION = timedelta(days=30)
"""The Events API keeps 30 days of events; keeping the ledger as long dedups all of them."""


# -- small database helpers ----------------------------------------------------------------


def _write_state(session: Session, key: str, value: str | None) -> None:
    table = WorkOSSyncState.__table__  # type: ignore[attr-defined]
    statement = dialect_insert(session, table).values(key=key, value=value, updated_at=_utcnow())
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
    )


def _read_state(engine: Engine, key: str) -> str | None:
    def read() -> str | None:
        with Session(engine) as session:
            row = session.get(WorkOSSyncState, key)
            return row.value if row is not None else None

    return guarded(read)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _clock(authkit: AuthKit) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(authkit.clock(), UTC)


# -- sync_events ---------------------------------------------------------------------------


def event_types_in_play(authkit: AuthKit) -> list[str]:
    """The types `sync_events` asks for: ``user.*``, every handled type, and the extras."""
    handled = authkit.handlers.event_types()
    return sorted(SYNCED_EVENT_TYPES | handled | set(authkit.settings.additional_event_types))


def _range_start(authkit: AuthKit) -> datetime | None:
    start: datetime | timedelta | None = getattr(authkit, "events_range_start", None)
    if isinstance(start, timedelta):
        return _clock(authkit)() - start
    return start


def _record_invalid(engine: Engine, raw: dict[str, Any], error: str) -> None:
    """Keep an event the API sent but we cannot parse, as a failed ledger row (never drop it)."""
    table = WorkOSEventRecord.__table__  # type: ignore[attr-defined]

    def record() -> None:
        with Session(engine) as session:
            statement = dialect_insert(session, table).values(
                id=str(raw.get("id")),
                event_type=str(raw.get("event") or "unknown")[:128],
                subject_id=None,
                source="events_api",
                status=EventStatus.FAILED.value,
                attempts=1,
                last_error=error[:2000],
                received_at=_utcnow(),
                payload=raw,
            )
            session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
            session.commit()

    guarded(record)


def _is_recorded(engine: Engine, event_id: str) -> bool:
    def check() -> bool:
        with Session(engine) as session:
            return session.get(WorkOSEventRecord, event_id) is not None

    return guarded(check)


def _read_states(engine: Engine, keys: tuple[str, ...]) -> dict[str, str | None]:
    def read() -> dict[str, str | None]:
        with Session(engine) as session:
            rows = session.exec(select(WorkOSSyncState).where(col(WorkOSSyncState.key).in_(keys)))
            found = {row.key: row.value for row in rows}
            return {key: found.get(key) for key in keys}

    return guarded(read)


def _save_under_lease(lease: Lease, values: Mapping[str, str | None]) -> None:
    """Write sync state in one transaction that first checks the lease is still ours."""

    def save() -> None:
        with Session(lease.engine) as session:
            lease.hold_in(session)
            for key, value in values.items():
                _write_state(session, key, value)
            session.commit()

    guarded(save)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _start_moment(start: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(start, timedelta):
        return now - start
    if start.tzinfo is None:
        raise ValueError("restart_from must be an aware datetime (UTC) or a timedelta")
    return start


def _types_changed(stored: str, wanted: list[str]) -> EventTypesChangedError:
    before = set(stored.split(",")) if stored else set()
    added = sorted(set(wanted) - before)
    removed = sorted(before - set(wanted))
    change = "; ".join(
        part
        for part in (
            f"new: {', '.join(added)}" if added else "",
            f"no longer asked for: {', '.join(removed)}" if removed else "",
        )
        if part
    )
    return EventTypesChangedError(
        f"The events cursor was advanced for other event types than this AuthKit asks for "
        f"({change}). Continuing would skip events for good. If this is not the app's own "
        "AuthKit, run with it (CLI: --app main:authkit), so its handlers run. If the app's "
        "handlers changed on purpose, restart the cursor from a moment before the change "
        "(sync_events(restart_from=...), CLI: sync-events --from 2026-01-31T00:00:00Z, or "
        "--reset-cursor for the configured events_range_start); the ledger skips the events "
        "already processed."
    )


def _cursor_expired(cursor: str, position: str | None, exc: WorkOSAPIError) -> AuthKitError:
    since = f" (its event is from {position})" if position else ""
    return EventsCursorExpiredError(
        f"WorkOS refused the events cursor {cursor}{since} with {exc.status_code}: the Events "
        "API keeps events for 30 days, so the cursor has most likely expired and the events in "
        "between are gone from it. To recover, run backfill_users() (CLI: backfill-users) to "
        "refresh every user, then restart the cursor: sync_events(restart_from=timedelta(days=29))"
        " (CLI: sync-events --reset-cursor, or --from <an ISO datetime within the last 30 days>)."
        " The ledger skips events already processed."
    )


async def sync_events(
    authkit: AuthKit,
    *,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
    restart_from: datetime | timedelta | None = None,
) -> SyncEventsResult:
    """Pull every event of the types in play since the cursor and process each one once.

    The cursor is saved after each event commits, so a crash at any point resumes exactly after
    the last committed event (an event processed but not yet counted by the cursor is a ledger
    duplicate next time, with no second effect). Each cursor write checks, in its transaction,
    that the lease is still ours: a run that stalled and lost it stops with `LeaseLostError`
    instead of moving the new holder's cursor backwards.

    The event types the cursor was advanced for are saved beside it. A later run that asks for
    other types (an `AuthKit` without the app's handlers, or a handler added since) raises
    `EventTypesChangedError` rather than step over events for good. ``restart_from`` (an aware
    ``datetime``, or a ``timedelta`` before now) forgets the cursor and starts again from that
    moment with the current types; the ledger skips what was already processed.

    A handler that raises does not stop the run: the pipeline records the event as failed in the
    ledger (with its payload), the cursor moves on, and `replay_failed` processes it again once
    the handler is fixed. Stopping instead would hold every later event hostage to one bad
    handler; moving on loses nothing because the failed row is checked before the cursor moves.
    Database outages and WorkOS errors stop the run with the cursor at the last committed event.
    """
    api = authkit.workos_api
    engine = authkit.engine
    types = event_types_in_play(authkit)
    joined = ",".join(types)
    result = SyncEventsResult(event_types=types)
    lease = Lease(engine, "sync_events", ttl=lease_ttl, now=_clock(authkit))

    async def renew() -> None:
        await anyio.to_thread.run_sync(partial(lease.renew, force=True))

    # Retry waits (Retry-After up to minutes, 5xx backoff) renew the lease at least three times
    # per ttl, so a long WorkOS outage never lets another instance take over mid-run.
    keepalive = Keepalive(lease_ttl / 3, renew)
    async with held(lease) as other:
        if other is not None:
            logger.info("sync_events skipped: %s holds the lease", other)
            return SyncEventsResult(ran=False, lease_holder=other, event_types=types)
        keys = (EVENTS_CURSOR, EVENTS_TYPES, EVENTS_POSITION)
        saved = await anyio.to_thread.run_sync(_read_states, engine, keys)
        cursor = saved[EVENTS_CURSOR]
        position = saved[EVENTS_POSITION]
        if restart_from is not None:
            start = _start_moment(restart_from, _clock(authkit)())
            cursor, position = None, start.isoformat()
            fresh = {EVENTS_CURSOR: None, EVENTS_TYPES: joined, EVENTS_POSITION: position}
            await anyio.to_thread.run_sync(_save_under_lease, lease, fresh)
        elif saved[EVENTS_TYPES] is not None and saved[EVENTS_TYPES] != joined:
            raise _types_changed(saved[EVENTS_TYPES] or "", types)
        elif saved[EVENTS_TYPES] is None or (cursor is None and position is None):
            if cursor is None and position is None:
                first = _range_start(authkit) or _clock(authkit)() - DEFAULT_RETENTION
                position = first.isoformat()
            started = {EVENTS_TYPES: joined, EVENTS_POSITION: position}
            await anyio.to_thread.run_sync(_save_under_lease, lease, started)
        result.started_after = result.cursor = cursor
        range_start = None if cursor else _parse_time(position)
        effects: Counter[str] = Counter()
        while True:
            try:
                page = await api.list_events(
                    events=types,
                    after=cursor,
                    range_start=range_start,
                    limit=PAGE_SIZE,
                    keepalive=keepalive,
                )
            except WorkOSAPIError as exc:
                if cursor and exc.status_code in (400, 404, 410, 422):
                    raise _cursor_expired(cursor, position, exc) from exc
                raise
            # The fetch may have waited out retries: renew before processing, so the page never
            # starts on a lease that is about to lapse (and a lost one stops the run right here).
            await renew()
            result.fetched += len(page.data)
            for raw in page.data:
                event_id = raw.get("id")
                if not isinstance(event_id, str) or not event_id:
                    raise InvalidEventError(
                        f"The Events API sent a {str(raw.get('event'))[:128]!r} event without an "
                        f"id, after {cursor or 'the start'}. An event without an id can neither "
                        "be deduplicated nor serve as a cursor, so sync_events stopped with the "
                        "cursor on the last good event and recorded nothing for it. To step over "
                        "it, restart the cursor from a moment after it (CLI: sync-events --from "
                        "<ISO datetime>)."
                    )
                outcome = await anyio.to_thread.run_sync(_sync_one, authkit, lease, raw)
                if outcome is None:
                    result.failed += 1
                    result.failed_event_ids.append(event_id)
                elif outcome[0] is Outcome.DUPLICATE:
                    result.duplicates += 1
                else:
                    result.processed += 1
                    effects[outcome[1].value] += 1
                cursor = result.cursor = event_id
                position = raw.get("created_at") or position
            if progress is not None and page.data:
                progress(
                    Progress(
                        "sync-events",
                        result.fetched,
                        counts={
                            "processed": result.processed,
                            "duplicates": result.duplicates,
                            "failed": result.failed,
                        },
                    )
                )
            # WorkOS leaves list_metadata.after out on the last page; a short page is not the
            # end (the type filter can make pages short).
            if not page.data or page.after is None:
                break
        result.effects = dict(effects)
        now = _clock(authkit)().isoformat()
        await anyio.to_thread.run_sync(_save_under_lease, lease, {EVENTS_LAST_RUN: now})
    return result


def _sync_one(authkit: AuthKit, lease: Lease, raw: dict[str, Any]) -> tuple[Outcome, Effect] | None:
    """Process one event from the API and then move the cursor; ``None`` if it failed."""
    engine = authkit.engine
    event_id = str(raw["id"])
    outcome: tuple[Outcome, Effect] | None
    created_at: datetime | None = None
    try:
        event = parse_event(raw)
    except InvalidEventError as exc:
        logger.error("event %s from the Events API is invalid: %s", event_id, exc)
        _record_invalid(engine, raw, f"InvalidEventError: {exc}")
        outcome = None
        created_at = _parse_time(raw.get("created_at"))
    else:
        created_at = event.created_at
        try:
            processed = authkit.pipeline.process(event, raw, source="events_api")
            outcome = (processed.outcome, processed.effect)
        except EventFailedError:
            outcome = None
    if outcome is None and not _is_recorded(engine, event_id):
        # The failure could not be written down: moving the cursor would lose the event.
        raise DatabaseUnavailableError(
            f"Event {event_id} failed and could not be recorded in the ledger; stopping"
        )
    values: dict[str, str | None] = {EVENTS_CURSOR: event_id}
    if created_at is not None:
        values[EVENTS_POSITION] = created_at.astimezone(UTC).isoformat()
    _save_under_lease(lease, values)
    return outcome


# -- backfill_users ------------------------------------------------------------------------


def _apply_page(
    pipeline: EventPipeline,
    lease: Lease,
    users: list[User],
    *,
    run_handlers: bool,
    cursor: str,
) -> Counter[Effect]:
    """Apply one page of users and save the cursor, all in one transaction.

    This is `EventPipeline.apply_user_snapshot` for a whole page: the same rules (`apply_users`)
    and the same handler runner, but one commit per hundred users instead of one each, which is
    what lets a backfill keep up with WorkOS's rate limit. The transaction also checks that the
    lease is still ours, so a run that lost it never moves the cursor.
    """
    engine = lease.engine
    effects: Counter[Effect] = Counter()

    def apply() -> None:
        with SyncSession(engine, expire_on_commit=False) as session:
            for user, effect in zip(users, apply_users(session, users), strict=True):
                effects[effect] += 1
                handler_type = HANDLERS_FOR_EFFECT.get(effect)
                if run_handlers and handler_type is not None:
                    event = snapshot_event(user, handler_type, "backfill")
                    pipeline.run_handlers(session, event, effect)
            _write_state(session, USERS_CURSOR, cursor)
            lease.hold_in(session)
            session.commit()

    guarded(apply)
    return effects


# Pages after which a backfill refreshes the users table's statistics: powers of four, so a
# million users cost ten ANALYZE runs.
_ANALYZE_AFTER_PAGES = frozenset(4**n for n in range(12))


@asynccontextmanager
async def _prefetching(
    fetch: Callable[[str | None], Awaitable[Page[User]]], after: str | None
) -> AsyncIterator[MemoryObjectReceiveStream[Page[User]]]:
    """The pages of a listing, each fetched while the caller still works on the one before.

    Fetching and applying overlap, and they are most of a backfill's time; at most two pages
    wait in memory. A failure on either side cancels the other and is raised as itself, as a
    plain loop would raise it (the CLI maps `WorkOSAPIError`, `HandlerError` and so on).
    """
    send, receive = anyio.create_memory_object_stream[Page[User]](1)

    async def produce() -> None:
        cursor = after
        async with send:
            while True:
                page = await fetch(cursor)
                await send.send(page)
                if not page.data or page.after is None:
                    return
                cursor = page.data[-1].id

    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            yield receive
    except BaseExceptionGroup as errors:
        raise _first_failure(errors) from None


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cancelled = anyio.get_cancelled_exc_class()
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_failure(error)
        if not isinstance(error, cancelled):
            return error
    return group.exceptions[0]


async def backfill_users(
    authkit: AuthKit,
    *,
    run_handlers: bool = True,
    restart: bool = False,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
) -> BackfillResult:
    """Copy every WorkOS user into the users table, oldest first, refreshing existing rows.

    Each page of 100 is applied in one transaction under the pipeline's rules (newest
    ``updated_at`` wins; a tombstoned id stays deleted), together with the cursor, so a crash
    resumes at the first page not committed. With ``run_handlers`` (the default) an inserted
    row runs the ``user.created`` handlers and a refreshed one ``user.updated``, inside the page's
    transaction, with a synthetic event whose id starts with ``backfill_``. A handler that raises
    rolls its page back and stops the run (`HandlerError`); fix it and run again to resume there.
    A finished run clears the cursor, so the next run is a full refresh; ``restart`` ignores a
    cursor left by an interrupted run.
    """
    api = authkit.workos_api
    engine = authkit.engine
    lease = Lease(engine, "backfill_users", ttl=lease_ttl, now=_clock(authkit))

    async def renew() -> None:
        await anyio.to_thread.run_sync(partial(lease.renew, force=True))

    keepalive = Keepalive(lease_ttl / 3, renew)
    result = BackfillResult()
    async with held(lease) as other:
        if other is not None:
            logger.info("backfill_users skipped: %s holds the lease", other)
            return BackfillResult(ran=False, lease_holder=other)
        cursor = None
        if not restart:
            cursor = await anyio.to_thread.run_sync(_read_state, engine, USERS_CURSOR)
        result.resumed_from = cursor
        async with _prefetching(
            lambda after: api.list_users(
                after=after, limit=PAGE_SIZE, order="asc", keepalive=keepalive
            ),
            cursor,
        ) as pages:
            async for page in pages:
                await renew()  # before the page, which may run slow handlers
                if page.data:
                    cursor = page.data[-1].id
                    effects = await anyio.to_thread.run_sync(
                        partial(
                            _apply_page,
                            authkit.pipeline,
                            lease,
                            page.data,
                            run_handlers=run_handlers,
                            cursor=cursor,
                        )
                    )
                    result.pages += 1
                    if result.pages in _ANALYZE_AFTER_PAGES:
                        # The table grows fast: keep the planner's row counts honest.
                        await anyio.to_thread.run_sync(refresh_statistics, engine, USERS)
                    result.seen += len(page.data)
                    result.inserted += effects[Effect.INSERTED]
                    result.updated += effects[Effect.UPDATED]
                    result.unchanged += effects[Effect.UNCHANGED]
                    if progress is not None:
                        progress(
                            Progress(
                                "backfill-users",
                                result.seen,
                                counts={
                                    "inserted": result.inserted,
                                    "updated": result.updated,
                                    "unchanged": result.unchanged,
                                },
                            )
                        )
        result.completed = True
        now = _clock(authkit)().isoformat()
        await anyio.to_thread.run_sync(
            _save_under_lease, lease, {USERS_CURSOR: None, USERS_LAST_COMPLETED: now}
        )
    return result


# -- replay_failed -------------------------------------------------------------------------


def _failed_ids(engine: Engine, limit: int | None) -> list[str]:
    def load() -> list[str]:
        with Session(engine) as session:
            query = (
                select(WorkOSEventRecord.id)
                .where(col(WorkOSEventRecord.status) == EventStatus.FAILED.value)
                .order_by(col(WorkOSEventRecord.received_at), col(WorkOSEventRecord.id))
            )
            if limit is not None:
                query = query.limit(limit)
            return list(session.exec(query).all())

    return guarded(load)


def _replay_one(authkit: AuthKit, event_id: str) -> ReplayedEvent | None:
    engine = authkit.engine

    def load() -> WorkOSEventRecord | None:
        with Session(engine, expire_on_commit=False) as session:
            return session.get(WorkOSEventRecord, event_id)

    record = guarded(load)
    if record is None:  # pruned meanwhile
        return None
    if record.status == EventStatus.FAILED:
        try:
            event = parse_event(record.payload)
        except InvalidEventError as exc:
            _bump_failure(engine, event_id, f"InvalidEventError: {exc}")
        else:
            with suppress(EventFailedError):
                authkit.pipeline.process(event, record.payload, source="replay")
    after = guarded(load)
    if after is None:
        return None
    return ReplayedEvent(
        event_id=after.id,
        event_type=after.event_type,
        status=str(after.status),
        attempts=after.attempts,
        last_error=after.last_error,
    )


def _bump_failure(engine: Engine, event_id: str, error: str) -> None:
    def bump() -> None:
        with Session(engine) as session:
            session.execute(
                update(WorkOSEventRecord)
                .where(col(WorkOSEventRecord.id) == event_id)
                .values(attempts=WorkOSEventRecord.attempts + 1, last_error=error[:2000])
            )
            session.commit()

    guarded(bump)


async def replay_failed(
    authkit: AuthKit,
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Process every failed ledger event again, oldest first, through the pipeline.

    Each attempt is counted in the ledger row's ``attempts``; an event that fails again stays
    ``failed`` with the new error. An event processed meanwhile by a webhook retry counts as
    succeeded (it is a duplicate, with no second effect).
    """
    ids = await anyio.to_thread.run_sync(_failed_ids, authkit.engine, limit)
    result = ReplayResult()
    for index, event_id in enumerate(ids, start=1):
        replayed = await anyio.to_thread.run_sync(_replay_one, authkit, event_id)
        if replayed is not None:
            result.replayed += 1
            result.events.append(replayed)
            if replayed.status == EventStatus.PROCESSED:
                result.succeeded += 1
            else:
                result.failed += 1
        if progress is not None:
            progress(
                Progress(
                    "replay-failed",
                    index,
                    total=len(ids),
                    counts={"succeeded": result.succeeded, "failed": result.failed},
                )
            )
    return result


# -- prune ---------------------------------------------------------------------------------


def _check_retention(name: str, value: timedelta) -> None:
    if value < MIN_RETENTION:
        raise ValueError(
            f"{name} must be at least 3 days (got {value}): WorkOS retries a webhook for up to "
            "3 days, and a shorter window would let a late retry run twice or resurrect a "
            "deleted user."
        )


async def prune(
    authkit: AuthKit,
    *,
    ledger_retention: timedelta = DEFAULT_RETENTION,
    tombstone_retention: timedelta = DEFAULT_RETENTION,
) -> PruneResult:
    """Delete processed ledger rows and tombstones older than their retention periods.

    Both periods must be at least 3 days (WorkOS's webhook retry window), else `ValueError`.
    The 30-day defaults match the Events API's retention, so any event WorkOS can still send is
    still deduplicated. Failed ledger rows are never pruned: they wait for `replay_failed`.

    Pruning is also bounded by how far `sync_events` has got: nothing from events created after
    the event at its cursor is deleted, since the sync will still replay those events. A sync
    days behind would otherwise replay a ``user.created`` whose ledger row and tombstone were
    both pruned, and bring a deleted user back.
    """
    _check_retention("ledger_retention", ledger_retention)
    _check_retention("tombstone_retention", tombstone_retention)
    now = _clock(authkit)()
    events_before = now - ledger_retention
    tombstones_before = now - tombstone_retention

    def run() -> PruneResult:
        with Session(authkit.engine) as session:
            saved = session.get(WorkOSSyncState, EVENTS_POSITION)
            position = _parse_time(saved.value if saved is not None else None)
            prune_events = (
                delete(WorkOSEventRecord)
                .where(col(WorkOSEventRecord.status) == EventStatus.PROCESSED.value)
                .where(col(WorkOSEventRecord.received_at) < events_before)
            )
            prune_tombstones = delete(WorkOSUserTombstone).where(
                col(WorkOSUserTombstone.deleted_at) < tombstones_before
            )
            if position is not None:
                # Event time, not arrival time: the sync replays by created_at. A row without
                # one (never for processed events) falls back to when it arrived.
                created = func.coalesce(
                    col(WorkOSEventRecord.event_created_at), col(WorkOSEventRecord.received_at)
                )
                prune_events = prune_events.where(created < position)
                # A tombstone is stamped with its user.deleted event's created_at.
                prune_tombstones = prune_tombstones.where(
                    col(WorkOSUserTombstone.deleted_at) < position
                )
            events = session.execute(prune_events)
            tombstones = session.execute(prune_tombstones)
            session.commit()
            return PruneResult(
                events_deleted=int(events.rowcount),  # type: ignore[attr-defined]
                tombstones_deleted=int(tombstones.rowcount),  # type: ignore[attr-defined]
                events_before=events_before.isoformat(),
                tombstones_before=tombstones_before.isoformat(),
                sync_position=position.isoformat() if position is not None else None,
            )

    return await anyio.to_thread.run_sync(lambda: guarded(run))


# -- status --------------------------------------------------------------------------------


async def sync_status(authkit: AuthKit, *, failures: int = 10) -> SyncStatus:
    """Ledger counts by status, the cursors, the ``failures`` latest failures and the leases."""
    now = _clock(authkit)()

    def read() -> SyncStatus:
        with Session(authkit.engine) as session:
            counts = session.exec(
                select(WorkOSEventRecord.status, func.count()).group_by(
                    col(WorkOSEventRecord.status)
                )
            ).all()
            users = session.exec(select(func.count()).select_from(WorkOSUser)).one()
            tombstones = session.exec(select(func.count()).select_from(WorkOSUserTombstone)).one()
            state = session.exec(select(WorkOSSyncState)).all()
            failed = session.exec(
                select(WorkOSEventRecord)
                .where(col(WorkOSEventRecord.status) == EventStatus.FAILED.value)
                .order_by(col(WorkOSEventRecord.received_at).desc())
                .limit(failures)
            ).all()
            leases = session.exec(select(WorkOSLease).order_by(col(WorkOSLease.name))).all()
            ledger = {str(EventStatus.PROCESSED): 0, str(EventStatus.FAILED): 0}
            ledger.update({str(status): int(count) for status, count in counts})
            return SyncStatus(
                ledger=ledger,
                users=int(users),
                tombstones=int(tombstones),
                cursors={row.key: row.value for row in state},
                last_failures=[
                    FailedEvent(
                        event_id=r.id,
                        event_type=r.event_type,
                        source=r.source,
                        attempts=r.attempts,
                        last_error=r.last_error,
                        received_at=_iso(r.received_at),
                    )
                    for r in failed
                ],
                leases=[
                    LeaseInfo(
                        name=lease.name,
                        holder=lease.holder,
                        acquired_at=_iso(lease.acquired_at),
                        expires_at=_iso(lease.expires_at),
                        active=lease.expires_at > now,
                    )
                    for lease in leases
                ],
            )

    status = await anyio.to_thread.run_sync(lambda: guarded(read))
    status.max_connections_per_process = authkit.max_connections_per_process
    return status
