"""`sync_status`: what the ledger, the cursors and the leases say, read in one transaction."""

from __future__ import annotations

import anyio.to_thread
from sqlalchemy import func
from sqlmodel import Session, col, select

from .._sync.database import guarded
from .._sync.mirror import USER, count_rows
from .._sync.tables import (
    EventStatus,
    WorkOSEventRecord,
    WorkOSLease,
    WorkOSSyncState,
)
from .reconcile_results import FailedEvent, KindCounts, LeaseInfo, SyncStatus
from .recovery import Recovery, iso

__all__ = ["sync_status"]


async def sync_status(recovery: Recovery, *, failures: int = 10) -> SyncStatus:
    """Ledger counts by status, row and tombstone counts per mirrored kind, the cursors, the
    ``failures`` latest failures and the leases."""
    now = recovery.now()
    engine = recovery.engine()

    def read() -> SyncStatus:
        with Session(engine) as session:
            counts = session.exec(
                select(WorkOSEventRecord.status, func.count()).group_by(
                    col(WorkOSEventRecord.status)
                )
            ).all()
            kinds = {
                name: KindCounts(rows=count.rows, tombstones=count.tombstones)
                for name, count in count_rows(session).items()
            }
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
                users=kinds[USER.name].rows,
                tombstones=kinds[USER.name].tombstones,
                kinds=kinds,
                cursors={row.key: row.value for row in state},
                last_failures=[
                    FailedEvent(
                        event_id=r.id,
                        event_type=r.event_type,
                        source=r.source,
                        attempts=r.attempts,
                        last_error=r.last_error,
                        received_at=iso(r.received_at),
                    )
                    for r in failed
                ],
                leases=[
                    LeaseInfo(
                        name=lease.name,
                        holder=lease.holder,
                        acquired_at=iso(lease.acquired_at),
                        expires_at=iso(lease.expires_at),
                        active=lease.expires_at > now,
                    )
                    for lease in leases
                ],
            )

    status = await anyio.to_thread.run_sync(lambda: guarded(read))
    status.max_connections_per_process = recovery.max_connections_per_process()
    return status
