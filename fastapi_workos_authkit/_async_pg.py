"""A small pool of async psycopg connections for the one read on the hot path.

``current_user`` reads one row per request. A synchronous read either blocks the event loop for
a network round trip or pays for a worker-thread hop, which under load costs more than the
query. psycopg 3 speaks async natively, so on PostgreSQL the read is simply awaited.

The connections are opened with the engine's own connect arguments and type adapters
(``dialect.create_connect_args``), in autocommit mode: a read is exactly one round trip, and
psycopg prepares the statement on the server after a few executions.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from sqlalchemy import Engine

from .errors import DatabaseUnavailableError


class AsyncPostgresReader:
    """At most ``size`` async connections, opened on demand and reused.

    Bound to the event loop that first uses it (an `AuthKit` serves one app, one loop); call
    `aclose` on shutdown.
    """

    def __init__(self, engine: Engine, *, size: int = 10, connect_timeout: int = 5) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs.setdefault("connect_timeout", connect_timeout)
        self._conninfo = " ".join(str(a) for a in args)
        self._kwargs = kwargs
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetch_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or ``None``.

        A pooled connection found broken (a server restart) is dropped and the query retried
        once on a fresh one. Raises `DatabaseUnavailableError` when PostgreSQL cannot be reached.
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
                reused = bool(self._idle)
                connection = self._idle.pop() if reused else await self._connect()
                try:
                    cursor = await connection.execute(sql, params)
                    row = await cursor.fetchone()
                except psycopg.OperationalError as exc:
                    await _close_quietly(connection)
                    if reused and attempt == 1:
                        continue
                    raise DatabaseUnavailableError("The database is unavailable") from exc
                except BaseException:
                    # A query error or a cancelled request: the connection's state is unknown,
                    # so it is closed rather than handed to the next request.
                    await asyncio.shield(_close_quietly(connection))
                    raise
                self._idle.append(connection)
                return row
        raise AssertionError("unreachable")  # pragma: no cover

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
        for connection in idle:
            await _close_quietly(connection)

    def discard(self) -> None:
        """Close the idle connections without awaiting (they may belong to a finished loop)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.pgconn.finish()


async def _close_quietly(connection: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        await connection.close()
