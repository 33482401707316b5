"""Named, expiring leases: at most one instance runs a given reconciler at a time.

A lease is a `WorkOSLease` row. Taking one is a single upsert that only succeeds when the row is
free, expired or already ours; a holder that crashes never releases it, and it lapses after its
time to live. The same code is correct on PostgreSQL (row locks) and SQLite (one writer).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from .._clock import utcnow
from .._exceptions import DatabaseUnavailableError
from .._exceptions import LeaseLostError as LeaseLostError
from .._sync.database import dialect_insert, guarded
from .._sync.tables import WorkOSLease

logger = logging.getLogger("fastapi_workos_authkit")


def default_holder() -> str:
    """An identity for one run: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A named lease row with an expiry: ``acquire`` it, ``renew`` it while working, ``release``.

    Taking the lease is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired or mine``: on
    PostgreSQL a concurrent taker blocks on the row until the first commits, then sees an unexpired
    lease and gets nothing; on SQLite the database-wide write lock serialises takers. A holder
    that crashes never releases, and its lease lapses after ``ttl`` seconds.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        holder: str | None = None,
        ttl: float = 60.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if ttl <= 0:
            raise ValueError("A lease needs a positive ttl in seconds")
        self.engine = engine
        self.name = name
        # Unique per run: two runs in one process must exclude each other too.
        self.holder = holder or default_holder()
        self.ttl = timedelta(seconds=ttl)
        self._now = now
        self._renewed_at: datetime | None = None

    def acquire(self) -> str | None:
        """Take the lease; return ``None`` on success, else the current holder's identity."""

        def take() -> str | None:
            now = self._now()
            table = WorkOSLease.__table__  # type: ignore[attr-defined]
            with Session(self.engine) as session:
                statement = dialect_insert(session, table).values(
                    name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self.ttl
                )
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["name"],
                        set_={
                            "holder": statement.excluded.holder,
                            "acquired_at": statement.excluded.acquired_at,
                            "expires_at": statement.excluded.expires_at,
                        },
                        where=(table.c.expires_at <= now) | (table.c.holder == self.holder),
                    )
                )
                # Holders are unique per run, so the row names us exactly when we got it.
                holder = session.exec(
                    select(WorkOSLease.holder).where(col(WorkOSLease.name) == self.name)
                ).one()
                session.commit()
                if holder == self.holder:
                    self._renewed_at = now
                    return None
                return holder

        return guarded(take)

    def renewal_due(self) -> bool:
        """Whether a third of ``ttl`` has passed since the lease was taken or last renewed."""
        return self._renewed_at is None or self._now() - self._renewed_at >= self.ttl / 3

    def renew(self, *, force: bool = False) -> None:
        """Push the expiry ``ttl`` ahead (only when `renewal_due`, unless ``force``).

        Raises `LeaseLostError` if another holder took the lease after it expired.
        """
        if not force and not self.renewal_due():
            return

        def extend() -> None:
            with Session(self.engine) as session:
                self.hold_in(session)
                session.commit()

        guarded(extend)

    def hold_in(self, session: Session) -> None:
        """Check that the lease is still ours and push its expiry, inside ``session``'s transaction.

        Writing progress (a cursor) in the same transaction makes the write conditional on the
        lease: a holder that stalled past ``ttl`` and lost the lease to another run cannot move
        that run's cursor backwards. On PostgreSQL the row lock taken here also makes a concurrent
        `acquire` wait for the commit. Raises `LeaseLostError` (roll the transaction back) if
        another holder has the lease; the caller commits.
        """
        now = self._now()
        result = session.execute(
            update(WorkOSLease)
            .where(col(WorkOSLease.name) == self.name)
            .where(col(WorkOSLease.holder) == self.holder)
            .values(expires_at=now + self.ttl)
        )
        if int(result.rowcount) != 1:  # type: ignore[attr-defined]
            raise LeaseLostError(
                f"Lost the {self.name!r} lease (it expired and another instance took it); "
                "stopping. Raise lease_ttl if runs stall longer than that between pages."
            )
        self._renewed_at = now

    def release(self) -> None:
        """Give the lease up (only if still ours)."""

        def drop() -> None:
            with Session(self.engine) as session:
                session.execute(
                    delete(WorkOSLease)
                    .where(col(WorkOSLease.name) == self.name)
                    .where(col(WorkOSLease.holder) == self.holder)
                )
                session.commit()

        guarded(drop)


@asynccontextmanager
async def held(lease: Lease) -> AsyncIterator[str | None]:
    """Hold ``lease`` for the block; yields ``None`` if taken, else the other holder's id."""
    other = await anyio.to_thread.run_sync(lease.acquire)
    if other is not None:
        yield other
        return
    try:
        yield None
    finally:
        # Shielded: a cancelled poller must still give the lease back on its way out.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(lease.release)
            except DatabaseUnavailableError:
                logger.warning("could not release the %r lease; it will expire", lease.name)
