"""The ``current_user`` read pool on PostgreSQL: psycopg's own async pool, sized and documented.

``current_user`` reads one row per request. A synchronous read pays for a worker-thread hop,
which under load costs more than the query; psycopg 3 speaks async natively, so on PostgreSQL
the read is awaited on `psycopg_pool.AsyncConnectionPool`, which does the pooling (growth, idle
and lifetime limits, replacing broken connections). This module only sizes it, opens its
connections in autocommit (a read is one round trip: no ``BEGIN``/``ROLLBACK``), and turns its
failures into `DatabaseUnavailableError` with a message that says what to change.

The connections are opened from the engine's URL through the dialect
(``dialect.create_connect_args``). An engine's own ``connect_args``, ``creator`` or connect hooks
are *not* applied (SQLAlchemy keeps them inside its pool), which is why `UserStore` uses this
pool by itself only for an engine AuthKit built from a URL. It counts in the per-process
connection budget: ``pool_size + max_overflow + read_pool_size`` (see the deployment guide).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Engine

from .._exceptions import DatabaseUnavailableError
from .._sync.database import driver_message

logger = logging.getLogger("fastapi_workos_authkit")

Params = Mapping[str, Any] | Sequence[Any]

READ_POOL_TIMEOUT_SECONDS = 5.0
"""How long a read waits for a connection of the read pool before answering 503."""

MAX_IDLE_SECONDS = 300.0
"""A connection idle this long is closed (PgBouncer and ``idle_session_timeout`` drop them)."""

MAX_LIFETIME_SECONDS = 1800.0
"""A connection opened this long ago is replaced."""

CONNECT_TIMEOUT_SECONDS = 5
"""psycopg's ``connect_timeout`` for the read pool, unless the URL sets one."""


class ReadPool:
    """At most ``size`` autocommit connections for primary-key reads, bound to one event loop.

    Open it with `open` on the loop that will use it (the app's lifespan does), close it with
    `aclose` on the same loop.

    Args:
        engine: Gives the URL and dialect the connections are opened with.
        size: The most connections open at once (AuthKit's ``read_pool_size``).
        timeout: Seconds a read waits for a free connection before failing.
    """

    def __init__(
        self, engine: Engine, *, size: int, timeout: float = READ_POOL_TIMEOUT_SECONDS
    ) -> None:
        args, connect_kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs = dict(connect_kwargs)
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        # Our own connections, opened in autocommit: the app's pool is never touched.
        kwargs["autocommit"] = True
        self.size = size
        self.timeout = timeout
        self._slots = anyio.Semaphore(size)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            " ".join(str(a) for a in args),
            kwargs=kwargs,
            min_size=0,  # nothing held open while no request needs it
            max_size=size,
            open=False,
            timeout=timeout,
            max_idle=MAX_IDLE_SECONDS,
            max_lifetime=MAX_LIFETIME_SECONDS,
            name="authkit-read",
        )

    async def open(self) -> None:
        """Start the pool on the running loop (no connection is opened until a read needs one)."""
        # Waiting here is far cheaper than waiting inside the pool, which then always has an
        # idle or a new connection for whoever gets through (measured: ~30 us less CPU a read
        # under 32 concurrent requests with 5 connections).
        self._slots = anyio.Semaphore(self.size)
        await self._pool.open(wait=False)

    async def aclose(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    async def fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or ``None`` (see `fetch_all`)."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return its rows.

        A connection found broken (a server restart, an idle timeout) is replaced by the pool;
        the pool's other idle connections are checked (`AsyncConnectionPool.check`, one round
        trip each, only after such a failure) and the read retried once. Raises
        `DatabaseUnavailableError` when PostgreSQL cannot be reached or every connection stays
        busy for the whole timeout.
        """
        slots = self._slots
        try:
            slots.acquire_nowait()  # no wait, no trip through the loop, when one is free
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                raise self._exhausted() from None
        try:
            try:
                return await self._fetch(sql, params)
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                # The server went away under this connection, so likely under the idle ones
                # too: drop the dead ones before the retry takes one of them.
                await self._pool.check()
                return await self._fetch(sql, params)
        except PoolTimeout as exc:
            # Every slot's connection is counted, so this is a connection that could not be
            # opened in time: the server is down or refusing.
            raise DatabaseUnavailableError(
                "The database is unavailable: no connection could be opened for the "
                f"current_user read pool within {self.timeout:g} s"
            ) from exc
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(
                f"The database is unavailable: {driver_message(exc) or type(exc).__name__}"
            ) from exc
        finally:
            slots.release()

    def _exhausted(self) -> DatabaseUnavailableError:
        message = (
            f"the current_user read pool is exhausted: all read_pool_size={self.size} "
            f"connections stayed busy for {self.timeout:g} s. Raise read_pool_size (AuthKit "
            "option or AUTHKIT_READ_POOL_SIZE) and PostgreSQL's max_connections with it (see "
            "the deployment guide's connection budget), or check the database for slow queries"
        )
        logger.error(message)
        return DatabaseUnavailableError(f"The database is unavailable: {message}")

    async def _fetch(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        # On any error or a cancelled request the pool inspects the connection it gets back and
        # closes it if it is broken or still busy, so the next read never inherits its state.
        connection = await self._pool.getconn()
        try:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchall()
        finally:
            await self._pool.putconn(connection)

    async def backend_pids(self) -> list[int]:
        """The server process ids of the idle connections (for tests and diagnostics)."""
        idle = self._pool.get_stats().get("pool_available", 0)
        held = [await self._pool.getconn() for _ in range(idle)]
        try:
            return [connection.info.backend_pid for connection in held]
        finally:
            for connection in held:
                await self._pool.putconn(connection)
