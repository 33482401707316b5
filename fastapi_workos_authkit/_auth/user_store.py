"""`UserStore`: the hot-path read of the caller's `WorkOSUser` row by primary key (compiled
once per dialect, run on the read pool, the reader thread or a worker thread), the revoked
session check riding along with it, and the just-in-time fetch of a user not yet mirrored.

It runs past 400 lines because it is one class: its three ways of running the read (read pool,
reader thread, worker thread), its retry on a dropped connection and its lifespan wiring share
the store's state, and most of the length is the docstring saying how the hot path is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio.lowlevel
import anyio.to_thread
from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import make_transient_to_detached

from .._config import DEFAULT_READ_POOL_SIZE, Clock
from .._exceptions import DatabaseUnavailableError, UserNotFoundError
from .._recovery.workos_api import WorkOSClient
from .._sync.database import unavailable_as_error
from .._sync.events import MAX_USER_ID_LENGTH
from .._sync.tables import WorkOSSession, WorkOSUser, WorkOSUserTombstone
from .just_in_time import JIT_TIMEOUT_SECONDS, JustInTime
from .read_batches import ReadBatches
from .user_read_plan import _batch_params, _compile_plan, _fetch_on_engine, _params, _ReadPlan

if TYPE_CHECKING:
    from .._sync.pipeline import EventPipeline
    from .read_pool import ReadPool
    from .read_thread import ReadThread

logger = logging.getLogger("fastapi_workos_authkit")


ReadMode = Literal["auto", "async", "thread"]
"""How `UserStore` runs its primary-key read."""

_Read = tuple[WorkOSUser | None, str | None]
"""A read's outcome: the user's row (or None) and the status of the token's session."""


class SessionRevokedError(UserNotFoundError):
    """The token's ``sid`` names a session mirrored as revoked (answer 401)."""

    def __init__(self) -> None:
        super().__init__("The session was revoked")


class UserStore:
    """Reads `WorkOSUser` rows by primary key, and fetches unsynced users just in time.

    The read runs on every authenticated request, so it is built for speed (measured by
    ``bench/bench_current_user.py``), from public APIs only. The ``SELECT`` is compiled once by
    SQLAlchemy Core for the engine's dialect; each value goes through the column type's own
    result processor (aware UTC datetimes, JSON); the row becomes a `WorkOSUser` the way the
    ORM's loader builds one (a new instance from the mapper's class manager, its state's dict
    filled in, no attribute events), marked detached, so an app can ``session.merge()`` it like
    any loaded row. An ORM ``Session.get`` does the same work with several times the overhead.

    The event loop never waits on the database. How the read is run (``mode``):

    * ``"auto"`` (default): ``"async"`` on PostgreSQL with psycopg 3 when AuthKit built the
      engine itself from ``database_url``; ``"thread"`` otherwise: SQLite, any other driver,
      and an ``engine=`` of the app's, whose ``connect_args`` (``sslmode``...), ``creator`` or
      connect hooks only its own pool applies.
    * ``"async"``: awaited on the read pool (`psycopg_pool.AsyncConnectionPool`, at most
      ``read_pool_size`` autocommit connections opened from the engine's URL, not its
      ``connect_args``): one round trip, no thread hop. Reads that find every connection busy
      are answered together by one statement when one comes free (`ReadBatches`). The pool
      belongs to the app's lifespan on asyncio (opened on its first read, closed at shutdown);
      outside a lifespan, or on trio, the read runs as ``"thread"``.
    * ``"thread"``: ``engine.connect()`` in a worker thread, on the engine's own pool, exactly
      as the engine is configured. On SQLite, inside the lifespan, that thread is one reader
      thread fed by a queue (`ReadThread`): a local read takes microseconds, and anyio's
      thread pool costs several times that per request under load. With AuthKit's own SQLite
      engine that thread keeps one connection checked out and runs the compiled statement on
      its DB-API cursor.

    A connection the server dropped (a restart) costs one retry, not an error: on the engine's
    pool SQLAlchemy invalidates the pool's older connections when it sees the disconnect; the
    read pool checks its idle ones and replaces the dead.

    The just-in-time fetch of an unsynced user is single-flight: concurrent requests for one id
    share one WorkOS call and its outcome, failures included. A 404 is remembered for
    ``not_found_ttl`` seconds (by the owner's clock; at most `NOT_FOUND_CACHE_SIZE` ids), so a
    token for a user WorkOS does not know cannot spend the WorkOS rate limit. Failures (5xx,
    timeouts, a body that is not a user) are not remembered: the next request asks again.

    Args:
        engine: Returns the engine to read from (the owner may create it on first use).
        owns_engine: Whether the owner built that engine from a URL alone (no ``connect_args``,
            ``creator`` or connect hooks of the app's), so ``"auto"`` may pick ``"async"``.
        pipeline: Applies a user fetched just in time, by the webhook rules.
        workos_api: Returns the WorkOS REST client, or ``None`` without an API key (an unsynced
            user is then unknown).
        clock: Returns Unix seconds, for ``not_found_ttl``.
        mode: One of the above.
        not_found_ttl: Seconds a 404 from WorkOS is remembered (0 remembers nothing).
        read_pool_size: The most connections the ``"async"`` read pool opens.
    """

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        owns_engine: bool,
        pipeline: EventPipeline,
        workos_api: Callable[[], WorkOSClient | None],
        clock: Clock,
        mode: ReadMode = "auto",
        not_found_ttl: float = 5.0,
        read_pool_size: int = DEFAULT_READ_POOL_SIZE,
        reject_revoked_sessions: bool = True,
    ) -> None:
        if read_pool_size < 1:
            raise ValueError("read_pool_size must be at least 1")
        self._engine = engine
        self._owns_engine = owns_engine
        self._pipeline = pipeline
        self._workos_api = workos_api
        self._clock = clock
        self.mode: ReadMode = mode
        self._read_pool_size = read_pool_size
        self.reject_revoked_sessions = reject_revoked_sessions
        """Whether `load` reads the token's session with the user and refuses a revoked one."""
        self._jit: JustInTime[str] = JustInTime(clock, not_found_ttl)
        self._plan: tuple[Engine, bool, _ReadPlan] | None = None
        self._plan_lock = threading.Lock()  # reads in worker threads may build it concurrently
        self._read_pool: ReadPool | None = None
        self._batches: ReadBatches[tuple[str, str | None], _Read] | None = None
        self._read_thread: ReadThread[tuple[WorkOSUser | None, str | None]] | None = None
        self._held: Connection | None = None  # the SQLite reader thread's own connection
        self._open_lock = anyio.Lock()
        # The event loop of the lifespan that is running, on asyncio (None outside one, or on
        # another backend): the read pool and the reader thread are bound to it, so only
        # reads on it may use them.
        self._loop: anyio.lowlevel.EventLoopToken | None = None
        self._new_instance = inspect(WorkOSUser).class_manager.new_instance

    def resolved_mode(self) -> ReadMode:
        """The mode reads use inside the lifespan: ``mode``, with ``"auto"`` resolved."""
        if self.mode != "auto":
            return self.mode
        dialect = self._engine().dialect
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            return "async" if self._owns_engine else "thread"
        return "thread"

    def read_pool_size(self) -> int:
        """Connections the read pool may open in this process: 0 unless reads are ``"async"``."""
        return self._read_pool_size if self.resolved_mode() == "async" else 0

    async def reader_backend_pids(self) -> list[int]:
        """PostgreSQL process ids of the connections reads would use next (tests, diagnostics).

        The read pool's idle connections while it is open; otherwise the one connection the
        engine's pool hands out next.
        """
        if self._read_pool is not None:
            return await self._read_pool.backend_pids()

        def ask() -> list[int]:
            with unavailable_as_error(), self._engine().connect() as connection:
                return [connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()]

        return await anyio.to_thread.run_sync(ask)

    @property
    def not_found_ttl(self) -> float:
        """Seconds a 404 from WorkOS for a user id is remembered (0 remembers nothing)."""
        return self._jit.not_found_ttl

    def _plan_for(self, engine: Engine) -> _ReadPlan:
        with_session = self.reject_revoked_sessions
        cached = self._plan
        if cached is not None and cached[0] is engine and cached[1] is with_session:
            return cached[2]
        with self._plan_lock:
            plan = self._plan
            if plan is None or plan[0] is not engine or plan[1] is not with_session:
                plan = (engine, with_session, _compile_plan(engine, with_session=with_session))
                self._plan = plan
            return plan[2]

    def read(self, user_id: str) -> WorkOSUser | None:
        """The row for ``user_id``, or ``None``, read on the engine's pool.

        Synchronous (blocking: call it from a worker thread); raises `DatabaseUnavailableError`.
        """
        return self.read_with_session((user_id, None))[0]

    def read_with_session(
        self, key: tuple[str, str | None]
    ) -> tuple[WorkOSUser | None, str | None]:
        """For ``(user_id, session_id)``: the user's row (or ``None``) and, in the same statement,
        the mirrored status of that session (``None`` when it is not mirrored, when
        ``session_id`` is ``None``, or when `reject_revoked_sessions` is off).

        Synchronous (blocking: call it from a worker thread); raises `DatabaseUnavailableError`.
        """
        engine: Engine = self._engine()
        plan = self._plan_for(engine)
        params = _params(plan, *key)
        with unavailable_as_error():
            try:
                row = _fetch_on_engine(engine, plan.sql, params)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The server dropped the connection (a restart). SQLAlchemy has invalidated
                # the pool's other connections of that age too, so the retry gets a new one.
                row = _fetch_on_engine(engine, plan.sql, params)
        return self._build(plan, row)

    async def _read_in_mode(
        self, user_id: str, session_id: str | None = None
    ) -> tuple[WorkOSUser | None, str | None]:
        """`read_with_session`, without blocking the event loop.

        Inside the lifespan: on the read pool (``"async"``), or on SQLite in the reader thread;
        otherwise, or outside the lifespan, in one of anyio's worker threads. Raises
        `DatabaseUnavailableError`.
        """
        if self._loop is not None and anyio.lowlevel.current_token() == self._loop:
            if self.resolved_mode() == "async":
                batches = self._batches or await self._open_read_pool()
                if batches is not None:
                    return await batches.read((user_id, session_id))
            elif self._read_thread is not None:
                return await self._read_thread.run((user_id, session_id))
        return await anyio.to_thread.run_sync(self.read_with_session, (user_id, session_id))

    async def _open_read_pool(self) -> ReadBatches[tuple[str, str | None], _Read] | None:
        async with self._open_lock:
            if self._read_pool is None and self._loop == anyio.lowlevel.current_token():
                from .read_pool import ReadPool  # psycopg is an optional dependency

                pool = ReadPool(self._engine(), size=self._read_pool_size)
                await pool.open()
                self._read_pool = pool
                # One batch in flight per connection of the pool.
                self._batches = ReadBatches(self._read_many, concurrency=self._read_pool_size)
        return self._batches

    async def _read_many(self, keys: Sequence[tuple[str, str | None]]) -> list[_Read]:
        """Reads ``keys`` on the read pool: one key by the single read, several by one statement
        (`ReadBatches` decides; the read of one key is the cheaper statement)."""
        pool = self._read_pool
        if pool is None:  # closed while this batch waited for its turn
            raise DatabaseUnavailableError("The database is unavailable: AuthKit is shutting down")
        plan = self._plan_for(self._engine())
        if len(keys) == 1 or plan.batch_sql is None:
            return [
                self._build(plan, await pool.fetch_one(plan.sql, _params(plan, *key)))
                for key in keys
            ]
        found: list[_Read] = [(None, None)] * len(keys)
        for row in await pool.fetch_all(plan.batch_sql, _batch_params(plan, keys)):
            found[row[0] - 1] = self._build(plan, row[1:])
        return found

    def _build(self, plan: _ReadPlan, row: Sequence[Any] | None) -> _Read:
        if row is None:
            return None, None
        values = {}
        # select(table) lists the columns in table order, which is the plan's order; reading
        # the names from cursor.description instead costs more than the rest of this loop.
        # zip stops at the user's last column: the session status, if any, comes after it.
        for (attribute, process), value in zip(plan.columns, row):  # noqa: B905
            values[attribute] = process(value) if process and value is not None else value
        # What the ORM's loader does with a loaded row: a new instance from the mapper's class
        # manager, without __init__ (no validation of values the database already holds), its
        # values put straight into the instance state's dict (committed values, no attribute
        # events), then marked persistent-detached so `session.merge(user)` updates the row
        # rather than inserting it again. The constructor costs 6x this, set_committed_value 3x.
        user: WorkOSUser = self._new_instance()
        inspect(user).dict.update(values)
        make_transient_to_detached(user)
        return user, (row[-1] if plan.with_session else None)

    async def open(self) -> None:
        """Start serving reads on this event loop (the lifespan calls it).

        On SQLite the reader thread starts; the PostgreSQL read pool opens on the first read.
        """
        token = anyio.lowlevel.current_token()
        if not isinstance(token.native_token, asyncio.AbstractEventLoop):
            # psycopg's pool and the reader thread's hand-back are asyncio's; on another
            # backend (trio) every read runs in one of anyio's worker threads.
            return
        self._loop = token
        if self._read_thread is None and self._engine().dialect.name == "sqlite":
            from .read_thread import ReadThread

            if self._owns_engine:
                self._read_thread = ReadThread(
                    self._read_held, name="authkit-sqlite-read", on_stop=self._release_held
                )
            else:
                # An app's engine: each read checks a connection out and back, as usual.
                self._read_thread = ReadThread(self.read_with_session, name="authkit-sqlite-read")

    def _read_held(self, key: tuple[str, str | None]) -> tuple[WorkOSUser | None, str | None]:
        """`read_with_session` on one connection the reader thread keeps checked out of
        AuthKit's own SQLite engine (only that thread uses it; it goes back to the pool when
        the thread stops). Skipping the checkout and the result wrapping per read makes the
        hop to the thread cost no more than the read did on the event loop."""
        engine = self._engine()
        plan = self._plan_for(engine)
        if self._held is None:
            with unavailable_as_error():
                self._held = engine.connect()
        driver_connection = self._held.connection  # the DB-API connection (public API)
        try:
            cursor = driver_connection.cursor()
            try:
                cursor.execute(plan.sql, _params(plan, *key))
                row = cursor.fetchone()
            finally:
                cursor.close()
            # Ends the read transaction sqlite3 may have begun (it does with autocommit=False),
            # so the next read sees every commit made since.
            driver_connection.rollback()
        except engine.dialect.loaded_dbapi.Error as exc:
            self._release_held()  # the next read starts on a fresh connection
            if isinstance(exc, engine.dialect.loaded_dbapi.OperationalError):
                raise DatabaseUnavailableError(f"The database is unavailable: {exc}") from exc
            raise
        return self._build(plan, row)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(SQLAlchemyError):
                held.close()

    async def rebind(self, *, owns_engine: bool) -> None:
        """Start afresh on the engine the getter now returns (see `AuthKit.override`).

        Closes the async reader, forgets the compiled read plan and the remembered 404s, and
        records whether AuthKit built that engine itself (which allows the async reader).
        """
        was_open = self._loop is not None
        await self.aclose()
        self._held = None  # closed by the reader thread's stop, when there was one
        self._owns_engine = owns_engine
        self._jit.forget()
        if was_open:
            await self.open()  # the SQLite reader thread again, now on the new engine

    async def aclose(self) -> None:
        """Close the read pool and stop the reader thread (the engine's pool is left alone)."""
        pool, self._read_pool = self._read_pool, None
        self._batches = None
        thread, self._read_thread = self._read_thread, None
        self._loop = None
        if thread is not None:
            thread.stop()
        if pool is not None:
            await pool.aclose()
        self._plan = None

    def dispose(self) -> None:
        """Forget the compiled read (the read pool, if any, is closed by `aclose`)."""
        self._plan = None

    async def session_revoked(self, session_id: str) -> bool:
        """Whether session ``session_id`` is mirrored as revoked (for the dependencies that do
        not read the user; `load` reads the session with the user instead)."""

        def ask() -> bool:
            table = WorkOSSession.__table__  # type: ignore[attr-defined]
            query = select(table.c.status).where(table.c.id == session_id)
            with unavailable_as_error(), self._engine().connect() as connection:
                return connection.execute(query).scalar_one_or_none() == "revoked"

        return await anyio.to_thread.run_sync(ask)

    def is_tombstoned(self, user_id: str) -> bool:
        """Whether ``user_id`` was deleted."""
        with unavailable_as_error(), self._engine().connect() as connection:
            table = WorkOSUserTombstone.__table__  # type: ignore[attr-defined]
            found = connection.execute(
                select(table.c.user_id).where(table.c.user_id == user_id)
            ).first()
        return found is not None

    async def load(self, user_id: str, session_id: str | None = None) -> WorkOSUser:
        """The synced row, fetched from WorkOS just in time when it is not there yet.

        With `reject_revoked_sessions`, the status of session ``session_id`` (the token's
        ``sid``) is read in the same statement as the user, and a session mirrored as revoked
        is refused.

        Raises:
            SessionRevokedError: the token's session was revoked.
            UserNotFoundError: deleted, unknown to WorkOS, or unsynced without an API key.
            DatabaseUnavailableError: the database is down.
            WorkOSAPIError: WorkOS could not be asked.
        """
        user, session_status = await self._read_in_mode(user_id, session_id)
        if user is None:
            # The first request after sign-up can beat the user.created webhook.
            user, session_status = await self._just_in_time(user_id, session_id)
        # Only "revoked" refuses. A sign-out or an admin's revocation is an event WorkOS sends,
        # and is what this check exists for. "expired" is not: a session that times out sends
        # no event (the mirror keeps it "active"), so refusing "expired" would depend on
        # whether a snapshot happened to say so; and an access token outliving its session's
        # expiry by a few minutes is WorkOS's own design, bounded by the token's exp.
        if session_status == "revoked":
            raise SessionRevokedError()
        return user

    async def _just_in_time(
        self, user_id: str, session_id: str | None
    ) -> tuple[WorkOSUser, str | None]:
        if len(user_id) > MAX_USER_ID_LENGTH:
            # A plausible id, but longer than the users table holds: no WorkOS answer could be
            # stored, so don't spend a call (and the rate limit) on it.
            raise UserNotFoundError("The user does not exist")

        async def reread() -> tuple[WorkOSUser, str | None]:
            user, session_status = await self._read_in_mode(user_id, session_id)
            if user is None:  # a tombstone won the race
                raise UserNotFoundError("The user was deleted")
            return user, session_status

        async def fetch() -> None:
            await self._fetch(user_id)

        return await self._jit.run(
            user_id,
            fetch=fetch,
            reread=reread,
            not_found=lambda: UserNotFoundError("The user does not exist"),
        )

    async def _fetch(self, user_id: str) -> None:
        if await anyio.to_thread.run_sync(self.is_tombstoned, user_id):
            raise UserNotFoundError("The user was deleted")
        workos_api = self._workos_api()
        if workos_api is None:
            raise UserNotFoundError("The user is not synced yet")
        # The REST client retries with backoff for a long while; a request cannot wait that long.
        with anyio.fail_after(JIT_TIMEOUT_SECONDS):
            snapshot = await workos_api.get_user(user_id)
        if snapshot is None or snapshot.id != user_id:
            if snapshot is None:
                self._jit.remember_not_found(user_id)
            raise UserNotFoundError("The user does not exist")
        pipeline = self._pipeline
        await anyio.to_thread.run_sync(lambda: pipeline.apply_user_snapshot(snapshot, source="jit"))
        logger.info("user %s fetched just in time", user_id)

    def fetch_waiters(self, user_id: str) -> int:
        """How many requests wait on the just-in-time fetch of ``user_id`` in progress, besides
        the one making it (diagnostics, tests); 0 when none is in progress."""
        return self._jit.waiters(user_id)
