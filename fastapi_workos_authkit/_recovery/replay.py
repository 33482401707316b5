"""`replay_failed`: give the events the ledger holds as failed another go, through the pipeline.

The job reads the failed rows and reports; `EventPipeline.retry` processes each one again and
records the outcome in the ledger.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from .._sync.database import guarded
from .._sync.pipeline import EventPipeline
from .._sync.tables import EventStatus, WorkOSEventRecord
from .reconcile_results import Progress, ProgressCallback, ReplayedEvent, ReplayResult
from .recovery import Recovery

__all__ = ["replay_failed"]


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


def _replay_one(engine: Engine, pipeline: EventPipeline, event_id: str) -> ReplayedEvent | None:
    def load() -> WorkOSEventRecord | None:
        with Session(engine, expire_on_commit=False) as session:
            return session.get(WorkOSEventRecord, event_id)

    record = guarded(load)
    if record is None:  # pruned meanwhile
        return None
    if record.status == EventStatus.FAILED:
        pipeline.retry(record)
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


async def replay_failed(
    recovery: Recovery,
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> ReplayResult:
    """Process every failed ledger event again, oldest first, through the pipeline.

    Each attempt is counted in the ledger row's ``attempts``; an event that fails again stays
    ``failed`` with the new error. An event processed meanwhile by a webhook retry counts as
    succeeded (it is a duplicate, with no second effect).
    """
    engine = recovery.engine()
    ids = await anyio.to_thread.run_sync(_failed_ids, engine, limit)
    result = ReplayResult()
    for index, event_id in enumerate(ids, start=1):
        replayed = await anyio.to_thread.run_sync(_replay_one, engine, recovery.pipeline, event_id)
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
