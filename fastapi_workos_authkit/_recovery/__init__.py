"""Recovery: Events API catch-up, users backfill, replay of failed events, pruning, status.

Webhooks alone lose data (an endpoint down longer than WorkOS's 3-day retry window, an app
installed after its first sign-ups, a handler that failed after the last retry). The recovery
jobs close those gaps; an app runs them through its `AuthKit` (``authkit.sync_events()``,
``authkit.backfill_users()``, ...) or the command line. Each job has its own module:

* `events_sync.sync_events` pages ``GET /events`` from its own cursor into `EventPipeline.process`;
* `backfill.backfill_users`, `backfill_organizations` and `backfill_memberships` page the
  WorkOS lists into `EventPipeline.apply_snapshots`, a page and its cursor per transaction;
* `replay.replay_failed` processes failed ledger events again; `prune.prune` bounds the ledger
  and tombstones; `status.sync_status` reports.

They share `recovery` (their collaborators, state rows and lease). This module re-exports their
public names, with what they report (`reconcile_results`) and the poller (`poller`).
"""

from __future__ import annotations

from .._sync.ledger import ledger_id
from .backfill import backfill_memberships, backfill_organizations, backfill_users
from .events_sync import (
    EventNotRecordedError,
    EventsCursorExpiredError,
    EventTypesChangedError,
    event_types_in_play,
    sync_events,
)
from .poller import EventsPoller
from .prune import DEFAULT_SESSION_RETENTION, MIN_RETENTION, prune
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
from .recovery import (
    DEFAULT_RETENTION,
    EVENTS_CATCH_UP_CURSOR,
    EVENTS_CATCH_UP_POSITION,
    EVENTS_CATCH_UP_TYPES,
    EVENTS_CURSOR,
    EVENTS_LAST_RUN,
    EVENTS_POSITION,
    EVENTS_TYPES,
    MEMBERSHIPS_CURSOR,
    ORGANIZATIONS_CURSOR,
    PAGE_SIZE,
    USERS_CURSOR,
    USERS_LAST_COMPLETED,
    Recovery,
)
from .replay import replay_failed
from .status import sync_status

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_SESSION_RETENTION",
    "EVENTS_CATCH_UP_CURSOR",
    "EVENTS_CATCH_UP_POSITION",
    "EVENTS_CATCH_UP_TYPES",
    "EVENTS_CURSOR",
    "EVENTS_LAST_RUN",
    "EVENTS_POSITION",
    "EVENTS_TYPES",
    "MEMBERSHIPS_CURSOR",
    "MIN_RETENTION",
    "ORGANIZATIONS_CURSOR",
    "PAGE_SIZE",
    "USERS_CURSOR",
    "USERS_LAST_COMPLETED",
    "BackfillResult",
    "EventNotRecordedError",
    "EventTypesChangedError",
    "EventsCursorExpiredError",
    "EventsPoller",
    "FailedEvent",
    "LeaseInfo",
    "Progress",
    "ProgressCallback",
    "PruneResult",
    "Recovery",
    "ReplayResult",
    "ReplayedEvent",
    "SyncEventsResult",
    "SyncStatus",
    "backfill_memberships",
    "backfill_organizations",
    "backfill_users",
    "event_types_in_play",
    "ledger_id",
    "prune",
    "replay_failed",
    "sync_events",
    "sync_status",
]
