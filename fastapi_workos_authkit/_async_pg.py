"""A small pool of async psycopg connections for the one read on the hot path.

``current_user`` reads one row per request. A synchronous read either blocks the event loop for
a network round trip or pays for a worker-thread hop, which under load costs more than the
query. psycopg 3 speaks async natively, so on PostgreSQL the read is simply awaited.

The connections are opened from the engine's URL through the dialect
(``dialect.create_connect_args``), in autocommit mode: a read is exactly one round trip, and
psycopg prepares the statement on the server after a few executions. An engine's own
``connect_args``, ``creator`` or ``do_connect`` hooks are *not* applied (SQLAlchemy keeps them
inside its pool), which is why `UserStore` picks this reader by itself only for an engine
AuthKit built from a URL.

A connection that has sat idle for `MAX_IDLE_SECONDS`, or was opened more than
`MAX_LIFETIME_SECONDS` ago, is closed rather than reused, so a server-side
``idle_session_timeout`` or a PgBouncer ``server_idle_timeout`` never surfaces as an error.
When a query finds the server gone (a restart, or the backends terminated), every idle
connection is presumed dead too: all are closed and the query is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine

from .errors import DatabaseUnavailableError

MAX_IDLE_SECONDS = 300.0
"""An idle connection older than this is closed instead of reused."""

MAX_LIFETIME_SECONDS = 1800.0
"""A connection opened longer ago than this is closed when it comes back, instead of reused."""


@dataclass
class _Idle:
    connection: psycopg.AsyncConnection[Any]
    opened_at: float
    idle_since: float


class AsyncPostgresReader:
    """At most ``size`` async connections, opened on demand and reused.

    Bound to the event loop that first uses it (an `AuthKit` serves one app, one loop); call
    `aclose` on shutdown.

    Args:
        engine: Gives the URL and dialect the connections are opened with.
        size: The most connections open at once.
        connect_timeout: psycopg's ``connect_timeout``, in seconds, unless the URL sets one.
        max_idle: Seconds an idle connection may wait to be reused (`MAX_IDLE_SECONDS`).
        max_lifetime: Seconds a connection may live (`MAX_LIFETIME_SECONDS`).
        clock: Monotonic seconds; tests inject one to age connections.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        size: int = 10,
        connect_timeout: int = 5,
        max_idle: float = MAX_IDLE_SECONDS,
        max_lifetime: float = MAX_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs.setdefault("connect_timeout", connect_timeout)
        self._conninfo = " ".join(str(a) for a in args)
        self._kwargs = kwargs
        self._size = size
        self._max_idle = max_idle
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._idle: list[_Idle] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def idle_backend_pids(self) -> list[int]:
        """The server process ids of the idle connections (for tests and diagnostics)."""
        return [entry.connection.info.backend_pid for entry in self._idle]

    async def fetch_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or ``None``.

        A pooled connection found broken (a server restart) is dropped with every other idle
        one, and the query retried once on a new connection. Raises `DatabaseUnavailableError`
        when PostgreSQL cannot be reached.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or the app now runs on another loop (a test suite starting one
            # TestClient after another without the lifespan): start afresh on this loop.
            self.discard()
            self._loop = loop
            self._slots = asyncio.Semaphore(self._size)
        assert self._slots is not None
        async with self._slots:
            for attempt in (1, 2):
                entry = await self._checkout() if attempt == 1 else None
                if entry is None:
                    entry = _Idle(await self._connect(), self._clock(), 0.0)
                    reused = False
                else:
                    reused = True
                connection = entry.connection
                try:
                    cursor = await connection.execute(sql, params)
                    row = await cursor.fetchone()
                except psycopg.OperationalError as exc:
                    await _close_quietly(connection)
                    if reused:
                        # The server went away under this connection, so under the others
                        # too: taking the next idle one would likely fail the same way.
                        await self.aclose()
                        continue
                    raise DatabaseUnavailableError("The database is unavailable") from exc
                except BaseException:
                    # A query error or a cancelled request: the connection's state is unknown,
                    # so it is closed rather than handed to the next request.
                    await asyncio.shield(_close_quietly(connection))
                    raise
                now = self._clock()
                if now - entry.opened_at < self._max_lifetime:
                    entry.idle_since = now
                    self._idle.append(entry)
                else:
                    await _close_quietly(connection)
                return row
        raise AssertionError("unreachable")  # pragma: no cover

    async def _checkout(self) -> _Idle | None:
        """The most recently used idle connection still young enough, or ``None``."""
        now = self._clock()
        while self._idle:
            entry = self._idle.pop()
            if now - entry.idle_since < self._max_idle:
                # The most recent is the youngest: the rest are older still, close them.
                if self._idle and now - self._idle[0].idle_since >= self._max_idle:
                    await self._close_stale(now)
                return entry
            await _close_quietly(entry.connection)
        return None

    async def _close_stale(self, now: float) -> None:
        keep = [e for e in self._idle if now - e.idle_since < self._max_idle]
        stale = [e for e in self._idle if now - e.idle_since >= self._max_idle]
        self._idle = keep
        for entry in stale:
            await _close_quietly(entry.connection)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, **self._kwargs
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError("The database is unavailable") from exc

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        for entry in idle:
            await _close_quietly(entry.connection)

    def discard(self) -> None:
        """Close the idle connections without awaiting (they may belong to a finished loop)."""
        idle, self._idle = self._idle, []
        for entry in idle:
            entry.connection.pgconn.finish()


async def _close_quietly(connection: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        await connection.close()
