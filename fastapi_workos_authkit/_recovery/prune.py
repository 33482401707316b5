"""`prune`: bound the ledger, the tombstones and the ended sessions, never past what the Events
API sync may replay.

The job checks the retention periods and reads how far `sync_events` has got;
`EventPipeline.prune` deletes the rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio.to_thread
from sqlmodel import Session

from .._sync.tables import WorkOSSyncState
from .reconcile_results import PruneResult
from .recovery import (
    DEFAULT_RETENTION,
    EVENTS_CATCH_UP_POSITION,
    EVENTS_POSITION,
    Recovery,
    parse_time,
)

__all__ = ["DEFAULT_RETENTION", "DEFAULT_SESSION_RETENTION", "MIN_RETENTION", "prune"]

DEFAULT_SESSION_RETENTION = timedelta(days=7)
"""How long an ended or expired session is kept: long enough to refuse its tokens (they live
for minutes) and to see recent sign-outs, short enough that the table stays small."""

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
            "for up to 3 days, and a shorter window would let a late retry run twice, "
            "resurrect a deleted object or store a revoked session as active again."
        )


def _sync_position(session: Session) -> datetime | None:
    """The ``created_at`` of the event at the Events API cursor, read in the prune's
    transaction: nothing from a later event may go. While a catch-up pass runs (after an
    upgrade added event types), the earlier of its position and the main cursor's."""
    positions = []
    for key in (EVENTS_POSITION, EVENTS_CATCH_UP_POSITION):
        saved = session.get(WorkOSSyncState, key)
        moment = parse_time(saved.value if saved is not None else None)
        if moment is not None:
            positions.append(moment)
    return min(positions) if positions else None


async def prune(
    recovery: Recovery,
    *,
    ledger_retention: timedelta = DEFAULT_RETENTION,
    tombstone_retention: timedelta = DEFAULT_RETENTION,
    session_retention: timedelta = DEFAULT_SESSION_RETENTION,
) -> PruneResult:
    """Delete processed ledger rows and tombstones (of every kind) older than their retention
    periods, and sessions that ended (revoked or expired) or passed their ``expires_at`` more
    than ``session_retention`` ago, so the sessions table does not grow without bound.

    Every period must be at least 3 days (WorkOS's webhook retry window), else `ValueError`:
    a late ``session.created`` retry for a pruned revoked session would store it as active.
    The 30-day defaults match the Events API's retention, so any event WorkOS can still send is
    still deduplicated. Failed ledger rows are never pruned: they wait for `replay_failed`.

    Pruning is also bounded by how far `sync_events` has got: nothing from events created after
    the event at its cursor is deleted, since the sync will still replay those events. A sync
    days behind would otherwise replay a ``user.created`` whose ledger row and tombstone were
    both pruned, and bring a deleted user back.
    """
    _check_retention("ledger_retention", ledger_retention)
    _check_retention("tombstone_retention", tombstone_retention)
    _check_retention("session_retention", session_retention)
    now = recovery.now()
    events_before = now - ledger_retention
    tombstones_before = now - tombstone_retention
    sessions_before = now - session_retention
    pruned = await anyio.to_thread.run_sync(
        lambda: recovery.pipeline.prune(
            events_before=events_before,
            tombstones_before=tombstones_before,
            sessions_before=sessions_before,
            bound=_sync_position,
        )
    )
    return PruneResult(
        events_deleted=pruned.events,
        tombstones_deleted=pruned.tombstones,
        sessions_deleted=pruned.sessions,
        tombstones_by_kind=dict(pruned.tombstones_by_kind),
        events_before=events_before.isoformat(),
        tombstones_before=tombstones_before.isoformat(),
        sessions_before=sessions_before.isoformat(),
        sync_position=pruned.bound.isoformat() if pruned.bound is not None else None,
    )
