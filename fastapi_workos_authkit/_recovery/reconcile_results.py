"""What the recovery jobs report: `Progress` while they run, and a result dataclass each.

The jobs themselves live in `fastapi_workos_authkit._recovery`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BackfillResult",
    "FailedEvent",
    "LeaseInfo",
    "Progress",
    "ProgressCallback",
    "PruneResult",
    "ReplayResult",
    "ReplayedEvent",
    "SyncEventsResult",
    "SyncStatus",
]


@dataclass(frozen=True)
class Progress:
    """A progress report, sent to the ``progress`` callback after every page or event batch.

    ``total`` is known for `replay_failed` only (WorkOS list endpoints do not count).
    """

    job: str
    done: int
    total: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]
"""Called from the event loop with a `Progress`; keep it quick (print a line, update a bar)."""


@dataclass
class SyncEventsResult:
    """What one `sync_events` run did.

    ``ran`` is false when another instance holds the lease (``lease_holder`` says who).
    ``failed`` events were recorded as failed in the ledger and the cursor moved past them:
    `replay_failed` picks them up. ``failed_event_ids`` are their ledger ids (an id too long for
    the ledger is recorded under `ledger_id`'s shortened form).
    """

    ran: bool = True
    lease_holder: str | None = None
    fetched: int = 0
    processed: int = 0
    duplicates: int = 0
    failed: int = 0
    failed_event_ids: list[str] = field(default_factory=list)
    effects: dict[str, int] = field(default_factory=dict)
    started_after: str | None = None
    cursor: str | None = None
    event_types: list[str] = field(default_factory=list)
    catch_up_types: list[str] = field(default_factory=list)
    catch_up_cursor: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class BackfillResult:
    """What one `backfill_users` run did (``ran`` is false when another instance runs it)."""

    ran: bool = True
    lease_holder: str | None = None
    pages: int = 0
    seen: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    resumed_from: str | None = None
    completed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class ReplayedEvent:
    """One ledger event after a replay: its status now, attempts so far and last error."""

    event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None


@dataclass
class ReplayResult:
    """What one `replay_failed` run did."""

    replayed: int = 0
    succeeded: int = 0
    failed: int = 0
    events: list[ReplayedEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class PruneResult:
    """How many rows `prune` deleted, and the cut-off times it used.

    ``sync_position`` is the ``created_at`` of the event at the `sync_events` cursor (``None``
    before the first sync): nothing from a later event was pruned, whatever the retention.
    """

    events_deleted: int = 0
    tombstones_deleted: int = 0
    sessions_deleted: int = 0
    tombstones_by_kind: dict[str, int] = field(default_factory=dict)
    """Tombstones deleted per kind name (``user``, ``organization``,
    ``organization_membership``); their sum is ``tombstones_deleted``."""
    events_before: str = ""
    tombstones_before: str = ""
    sessions_before: str = ""
    sync_position: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True)
class FailedEvent:
    """A failed ledger event, for `SyncStatus`."""

    event_id: str
    event_type: str
    source: str
    attempts: int
    last_error: str | None
    received_at: str


@dataclass(frozen=True)
class LeaseInfo:
    """A lease row: who holds it and until when; ``active`` is false once it expired."""

    name: str
    holder: str
    acquired_at: str
    expires_at: str
    active: bool


@dataclass(frozen=True)
class KindCounts:
    """Rows and tombstones of one mirrored kind, for `SyncStatus`."""

    rows: int
    tombstones: int


@dataclass
class SyncStatus:
    """The state of the sync: ledger counts by status, mirrored rows, cursors, recent
    failures, leases.

    ``users`` and ``tombstones`` are the users' (as before kinds existed); ``kinds`` has the
    row and tombstone counts of every mirrored kind by name (sessions have no tombstones).
    """

    ledger: dict[str, int] = field(default_factory=dict)
    users: int = 0
    tombstones: int = 0
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    cursors: dict[str, str | None] = field(default_factory=dict)
    last_failures: list[FailedEvent] = field(default_factory=list)
    leases: list[LeaseInfo] = field(default_factory=list)
    max_connections_per_process: int | None = None
    """The most PostgreSQL connections one process of this configuration opens (``None``: an
    app's own engine, whose ``pool_size + max_overflow`` is the budget, or SQLite)."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)
