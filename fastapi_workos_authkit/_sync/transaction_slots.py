"""`TransactionSlots`: how many pipeline transactions run in worker threads at once.

Each transaction holds one connection of the engine's pool from its first statement to its
commit. When more run at once than the pool keeps open (``pool_size``), SQLAlchemy opens overflow
connections and closes each one when it comes back to a full pool, so under a steady burst of
webhook deliveries every transaction past ``pool_size`` paid for a new PostgreSQL connection (a
server process forked, authenticated, then torn down): measured at 40% of the ingest rate on a
2-core machine. With at most ``pool_size`` transactions at once, the rest wait their turn on the
event loop, which costs nothing, and every transaction gets a connection already open. The
overflow stays free for the app's own queries, Actions and just-in-time fetches.

The limit is per event loop (anyio's `CapacityLimiter` belongs to one), and is the size of the
engine's `QueuePool` (``pool_size``), or `DEFAULT_SLOTS` for a pool without a size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from .._per_loop import PerLoop

T = TypeVar("T")

DEFAULT_SLOTS = 5
"""Transactions at once for an engine whose pool has no size (SQLite in memory, NullPool...)."""


class TransactionSlots:
    """Runs blocking pipeline work in worker threads, at most the engine pool's size at once.

    Args:
        engine: Returns the engine whose pool sizes the limit (asked when a loop first runs
            work, so an engine created on first use, or swapped by `AuthKit.override`, counts).
    """

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        # With the engine it was sized for: `AuthKit.override` may swap the engine.
        self._limiters = PerLoop(lambda: (engine(), anyio.CapacityLimiter(self.size())))

    def size(self) -> int:
        """How many transactions may run at once (the engine pool's ``pool_size``)."""
        pool = self._engine().pool
        return pool.size() if isinstance(pool, QueuePool) else DEFAULT_SLOTS

    def waiting(self) -> int:
        """How many calls on the running event loop wait for a slot now (diagnostics, tests)."""
        return self._current().statistics().tasks_waiting

    async def run_sync(self, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread, once a slot is free (waiting on the event loop)."""
        return await anyio.to_thread.run_sync(work, limiter=self._current())

    def _current(self) -> anyio.CapacityLimiter:
        sized_for, limiter = self._limiters.get()
        if sized_for is not self._engine():
            self._limiters.forget()
            sized_for, limiter = self._limiters.get()
        return limiter
