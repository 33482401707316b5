"""`prune`: bound the ledger and the tombstones, never past what the Events API sync may replay.

The job checks the retention periods and reads how far `sync_events` has got;
`EventPipeline.prune` deletes the rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio.to_thread
from sqlmodel import Session

from .reconcile_results import PruneResult
from .recovery import DEFAULT_RETENTION, EVENTS_POSITION, Recovery, parse_time
from .tables import WorkOSSyncState

__all__ = ["DEFAULT_RETENTION", "MIN_RETENTION", "prune"]

MIN_RETENTION = timedelta(days=3)
"""WorkOS retries a webhook for up to 3 days: ledger rows and tombstones must outlive that."""


def _days(value: timedelta) -> str:
    """``1 day``, ``2.5 days``, ``12 hours``: a retention as a person would write it."""
    days = value.total_seconds() / 86400
    if days >= 1 or days <= 0:
        return f"{days:g} day" + ("" if days == 1 else "s")
    hours = value.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def _check_retention(name: str, value: timedelta) -> None:
    if value < MIN_RETENTION:
        raise ValueError(
            f"{name} must be at least 3 days (got {_days(value)}): WorkOS retries a webhook "
            "for up to 3 days, and a shorter window would let a late retry run twice or "
            "resurrect a deleted user."
        )


def _sync_position(session: Session) -> datetime | None:
    """The ``created_at`` of the event at the Events API cursor, read in the prune's
    transaction: nothing from a later event may go."""
    saved = session.get(WorkOSSyncState, EVENTS_POSITION)
    return parse_time(saved.value if saved is not None else None)


async def prune(
    recovery: Recovery,
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
    now = recovery.now()
    events_before = now - ledger_retention
    tombstones_before = now - tombstone_retention
    pruned = await anyio.to_thread.run_sync(
        lambda: recovery.pipeline.prune(
            events_before=events_before,
            tombstones_before=tombstones_before,
            bound=_sync_position,
        )
    )
    return PruneResult(
        events_deleted=pruned.events,
        tombstones_deleted=pruned.tombstones,
        events_before=events_before.isoformat(),
        tombstones_before=tombstones_before.isoformat(),
        sync_position=pruned.bound.isoformat() if pruned.bound is not None else None,
    )
