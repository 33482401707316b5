"""What the recovery jobs share: their collaborators, their state rows, and their lease.

The jobs (`events_sync`, `backfill`, `replay`, `prune`, `status`) only fetch, page, hold a lease
and report; every write of a mirrored row or a ledger row goes through `EventPipeline`. What
they keep of their own is a few `WorkOSSyncState` rows (cursors, positions), written here.

`Recovery` is everything a job may use, and nothing more: `AuthKit` builds one and passes it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from .._clock import utcnow
from .._sync.database import dialect_insert, guarded
from .._sync.pipeline import EventPipeline
from .._sync.tables import WorkOSSyncState
from .lease import Lease, held
from .workos_api import Keepalive, WorkOSClient

logger = logging.getLogger("fastapi_workos_authkit")

PAGE_SIZE = 100
DEFAULT_RETENTION = timedelta(days=30)
"""The Events API keeps 30 days of events; keeping the ledger as long dedups all of them."""

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
ORGANIZATIONS_CURSOR = "organizations_backfill.cursor"
"""`WorkOSSyncState` key: id of the last organization `backfill_organizations` committed."""
ORGANIZATIONS_LAST_COMPLETED = "organizations_backfill.completed_at"
MEMBERSHIPS_CURSOR = "memberships_backfill.cursor"
"""`WorkOSSyncState` key: ``<organization id>/<membership id>``: the organization whose
memberships `backfill_memberships` was listing and the last membership of it committed."""
MEMBERSHIPS_LAST_COMPLETED = "memberships_backfill.completed_at"
EVENTS_CATCH_UP_CURSOR = "events.catch_up.cursor"
"""`WorkOSSyncState` key: id of the last event of the catch-up pass (`sync_events`), which pulls
the event types a package upgrade added to the default set from their own starting point
while the main cursor keeps its place. Gone once the two cursors are merged."""
EVENTS_CATCH_UP_TYPES = "events.catch_up.types"
"""`WorkOSSyncState` key: the sorted, comma-joined event types the catch-up pass pulls."""
EVENTS_CATCH_UP_POSITION = "events.catch_up.position_at"
"""`WorkOSSyncState` key: ``created_at`` of the event at the catch-up cursor (or its start)."""


@dataclass(frozen=True)
class Recovery:
    """The collaborators of the recovery jobs, built by `AuthKit`.

    Attributes:
        engine: Returns the engine (created on first use by the app's `AuthKit`).
        pipeline: Where every mirrored-row and ledger write goes.
        workos: Returns the WorkOS REST client (created on first use; needs the API key).
        clock: The current Unix time in seconds.
        handled_event_types: Returns the event types that have handlers now (handlers may be
            registered after `AuthKit` is built).
        additional_event_types: Event types to pull besides ``user.*`` and the handled ones.
        events_range_start: Where the very first `sync_events` run starts: a ``timedelta``
            before now, an aware ``datetime``, or ``None`` for 30 days.
        max_connections_per_process: Returns the most PostgreSQL connections one process opens
            (``None`` when not the owner's to know); `sync_status` reports it.
    """

    engine: Callable[[], Engine]
    pipeline: EventPipeline
    workos: Callable[[], WorkOSClient]
    clock: Callable[[], float]
    handled_event_types: Callable[[], Iterable[str]]
    additional_event_types: tuple[str, ...] = ()
    events_range_start: datetime | timedelta | None = None
    max_connections_per_process: Callable[[], int | None] = lambda: None

    def now(self) -> datetime:
        """The clock's time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.clock(), UTC)


# -- state rows ----------------------------------------------------------------------------


def write_state(session: Session, key: str, value: str | None) -> None:
    """Upsert one state row inside ``session``'s transaction."""
    table = WorkOSSyncState.__table__  # type: ignore[attr-defined]
    statement = dialect_insert(session, table).values(key=key, value=value, updated_at=utcnow())
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
        )
    )


def read_state(engine: Engine, key: str) -> str | None:
    """One state row's value (``None`` if absent). Synchronous."""

    def read() -> str | None:
        with Session(engine) as session:
            row = session.get(WorkOSSyncState, key)
            return row.value if row is not None else None

    return guarded(read)


def read_states(engine: Engine, keys: tuple[str, ...]) -> dict[str, str | None]:
    """Several state rows' values, read together. Synchronous."""

    def read() -> dict[str, str | None]:
        with Session(engine) as session:
            rows = session.exec(select(WorkOSSyncState).where(col(WorkOSSyncState.key).in_(keys)))
            found = {row.key: row.value for row in rows}
            return {key: found.get(key) for key in keys}

    return guarded(read)


def save_under_lease(lease: Lease, values: Mapping[str, str | None]) -> None:
    """Write state rows in one transaction that first checks the lease is still ours."""

    def save() -> None:
        with Session(lease.engine) as session:
            lease.hold_in(session)
            for key, value in values.items():
                write_state(session, key, value)
            session.commit()

    guarded(save)


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 string (``Z`` allowed) as an aware datetime; ``None`` if it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None) -> str:
    """``moment`` in ISO 8601, or an empty string."""
    return moment.isoformat() if moment is not None else ""


# -- the lease a job holds while it runs ---------------------------------------------------


@dataclass(frozen=True)
class LeasedRun:
    """A job's hold on its lease: renew it, and let WorkOS retry waits renew it too."""

    lease: Lease
    keepalive: Keepalive
    """Pass it to the WorkOS client: a retry wait (``Retry-After`` up to minutes, 5xx backoff)
    renews the lease at least three times per ttl, so a long WorkOS outage never lets another
    instance take over mid-run."""

    async def renew(self) -> None:
        """Push the lease's expiry ahead now; `LeaseLostError` if another run took it."""
        await anyio.to_thread.run_sync(partial(self.lease.renew, force=True))


@asynccontextmanager
async def leased(recovery: Recovery, name: str, ttl: float) -> AsyncIterator[LeasedRun | str]:
    """Hold the lease ``name`` for the block: yields a `LeasedRun`, or, when another run
    holds it, that run's identity (a string), and the job skips."""
    lease = Lease(recovery.engine(), name, ttl=ttl, now=recovery.now)

    async def renew() -> None:
        await anyio.to_thread.run_sync(partial(lease.renew, force=True))

    run = LeasedRun(lease, Keepalive(ttl / 3, renew))
    async with held(lease) as other:
        if other is not None:
            logger.info("%s skipped: %s holds the lease", name, other)
            yield other
        else:
            yield run
