"""FastAPI dependencies: who is calling, as verified claims or as the synced `WorkOSUser` row,
and in which organization (`WorkOSOrganization`, `WorkOSOrganizationMembership`).

Every dependency is a stable object on the `AuthKit` instance (``authkit.current_user``...), so
``app.dependency_overrides[authkit.current_user]`` works. Each one *is* the same HTTP Bearer
security scheme, so ``/docs`` shows an Authorize button, and they work on WebSocket routes too.
Errors follow RFC 6750. The token is verified once per request, however many dependencies ask,
and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import anyio.to_thread
from fastapi import HTTPException, WebSocketException, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security.base import SecurityBase
from sqlalchemy import Connection, Engine, String, bindparam, inspect, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

from .._config import DEFAULT_READ_POOL_SIZE, Clock
from .._exceptions import DatabaseUnavailableError, HandlerError
from .._exceptions import UserNotFoundError as UserNotFoundError
from .._recovery.workos_api import MAX_ID_LENGTH, WorkOSAPIError, WorkOSClient, is_plausible_id
from .._sync.database import unavailable_as_error
from .._sync.events import MAX_USER_ID_LENGTH
from .._sync.mirror import MEMBERSHIP, ORGANIZATION, MirrorKind, get_membership, is_tombstoned
from .._sync.tables import (
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSUser,
    WorkOSUserTombstone,
)
from .tokens import AccessTokenClaims, InvalidTokenError, KeysUnavailableError, TokenVerifier

if TYPE_CHECKING:
    from .._sync.pipeline import EventPipeline
    from .read_pool import ReadPool
    from .read_thread import ReadThread

logger = logging.getLogger("fastapi_workos_authkit")

JIT_TIMEOUT_SECONDS = 10.0
"""How long a request waits for WorkOS when fetching an unsynced user just in time."""

NOT_FOUND_CACHE_SIZE = 10_000
"""How many user ids WorkOS answered 404 for are remembered (for ``user_not_found_ttl``) at most;
past it the oldest are forgotten first."""

_SCOPE_KEY = "fastapi_workos_authkit.claims"
_USER_KEY = "fastapi_workos_authkit.user"
_WS_POLICY_VIOLATION = 1008  # RFC 6455: the close code for "not allowed"
_WS_TRY_AGAIN_LATER = 1013
_EARLIEST = datetime.min.replace(tzinfo=UTC)


SCHEME_NAME = "WorkOSAccessToken"
"""The name of the one security scheme every `AuthKit` dependency declares in OpenAPI."""


class AccessTokenBearer(SecurityBase):
    """Base of every `AuthKit` dependency: it *is* the HTTP Bearer security scheme.

    Being a `SecurityBase` itself, each dependency shows in OpenAPI (one ``WorkOSAccessToken``
    scheme, Swagger's Authorize button) without a nested dependency for FastAPI to solve on
    every request. FastAPI's `HTTPBearer` reads a `Request`, which a WebSocket route cannot
    provide; these read the common `HTTPConnection` (see `bearer_token`), and raise their
    errors themselves, in RFC 6750 form.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description=(
                "An AuthKit access token, as returned by `getAccessToken()` in the WorkOS "
                "frontend SDKs: `Authorization: Bearer <token>`."
            ),
        )
        self.scheme_name = SCHEME_NAME


def bearer_token(connection: HTTPConnection) -> str | None:
    """The request's bearer token; ``None`` without one; refused if the header is broken."""
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic...) carries no bearer credentials
    token = token.strip()
    if not token or " " in token:
        raise _refuse(connection, "The Authorization header must be 'Bearer <token>'")
    return token


def _quote(value: str) -> str:
    # RFC 6750 attribute values are quoted strings; our messages never need a quote or backslash.
    return value.replace("\\", "").replace('"', "'")


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = []
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quote(description)}"')
    if scope:
        parts.append(f'scope="{_quote(scope)}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def _is_websocket(connection: HTTPConnection) -> bool:
    return connection.scope.get("type") == "websocket"


def _unauthenticated(connection: HTTPConnection) -> Exception:
    message = "Authentication required: send 'Authorization: Bearer <access token>'"
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, message)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": _challenge()}
    )


def _refuse(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        description,
        headers={"WWW-Authenticate": _challenge("invalid_token", description)},
    )


def _forbid(connection: HTTPConnection, description: str, scope: str = "") -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        description,
        headers={"WWW-Authenticate": _challenge("insufficient_scope", description, scope)},
    )


def _unavailable(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_TRY_AGAIN_LATER, description)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, description, headers={"Retry-After": "5"}
    )


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }


_401 = _error(
    "No valid access token: missing, expired or badly signed, its user unknown or deleted, or "
    'its session revoked (`WWW-Authenticate: Bearer error="invalid_token"`).'
)
_403 = _error(
    "The token is valid but does not grant this (`WWW-Authenticate: Bearer "
    'error="insufficient_scope"`); `detail` says why.'
)
_503 = _error(
    "The database, WorkOS's keys or WorkOS's API could not be reached; retry after "
    "`Retry-After` seconds."
)
RESPONSES_401_503: dict[int | str, dict[str, Any]] = {401: _401, 503: _503}
"""OpenAPI ``responses`` of ``current_user`` (pass ``responses=`` to a route)."""
RESPONSES_401_403_503: dict[int | str, dict[str, Any]] = {401: _401, 403: _403, 503: _503}
"""OpenAPI ``responses`` of the dependencies that can answer 403 too."""


async def verified_claims(
    auth: BearerAuth, connection: HTTPConnection, *, required: bool
) -> AccessTokenClaims | None:
    """Verify the request's token once; later calls in the same request reuse the result."""
    cached = connection.scope.get(_SCOPE_KEY)
    if cached is not None and cached[0] is auth:
        claims: AccessTokenClaims = cached[1]
        return claims
    token = bearer_token(connection)
    if token is None:
        if required:
            raise _unauthenticated(connection)
        return None
    try:
        claims = await auth.verifier().verify(token)
    except InvalidTokenError as exc:
        logger.info("access token refused: %s", exc)
        raise _refuse(connection, str(exc)) from None
    except KeysUnavailableError as exc:
        raise _unavailable(connection, str(exc)) from None
    if not is_plausible_id(claims.sub):
        # A signed token is still input: its sub becomes a database key and a REST path
        # segment (the just-in-time fetch), so a sub like "../../sso/jwks/..." stops here.
        logger.warning("access token refused: its sub is not a plausible user id")
        raise _refuse(
            connection,
            "The token's sub is not a user id: letters, digits and underscores only, "
            f"at most {MAX_ID_LENGTH} characters",
        )
    connection.scope[_SCOPE_KEY] = (auth, claims)
    return claims


def _compile_plan(engine: Engine, *, with_session: bool) -> _ReadPlan:
    dialect = engine.dialect
    table = WorkOSUser.__table__  # type: ignore[attr-defined]
    query = select(table).where(table.c.id == bindparam("user_id"))
    if with_session:
        # The token's session rides along with the user: one statement, one round trip. A
        # scalar subquery (not a join) keeps the user row whatever the sessions table holds,
        # and is NULL for a sid never mirrored or a token without one.
        sessions = WorkOSSession.__table__  # type: ignore[attr-defined]
        status_of_sid = (
            select(sessions.c.status)
            .where(sessions.c.id == bindparam("session_id", type_=String()))
            .scalar_subquery()
        )
        query = query.add_columns(status_of_sid.label("session_status"))
    compiled = query.compile(dialect=dialect)
    order = tuple(compiled.positiontup or ()) if compiled.positional else ()
    attributes = {
        column.key: prop.key for prop in inspect(WorkOSUser).column_attrs for column in prop.columns
    }
    return _ReadPlan(
        sql=str(compiled),
        positional=bool(compiled.positional),
        session_first=order[:1] == ("session_id",),
        with_session=with_session,
        columns=tuple(
            (
                attributes[column.key],
                column.type.dialect_impl(dialect).result_processor(dialect, None),
            )
            for column in table.columns
        ),
    )


class SessionRevokedError(UserNotFoundError):
    """The token's ``sid`` names a session mirrored as revoked (answer 401)."""

    def __init__(self) -> None:
        super().__init__("The session was revoked")


class AccessDeniedError(Exception):
    """The caller is authenticated, but not allowed here (answer 403); the message says why."""


ReadMode = Literal["auto", "async", "thread"]
"""How `UserStore` runs its primary-key read."""


def _fetch_on_engine(engine: Engine, sql: str, params: Any) -> Sequence[Any] | None:
    connection: Connection
    with engine.connect() as connection:
        return connection.exec_driver_sql(sql, params).first()


@dataclass(frozen=True)
class _ReadPlan:
    """The primary-key read, compiled once for one engine's dialect."""

    sql: str
    positional: bool
    session_first: bool  # positional SQL whose first parameter is the session id
    with_session: bool  # the row ends with the status of the token's session
    # in select order: (attribute name, SQLAlchemy's own result processor for that column)
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]


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
      ``connect_args``): one round trip, no thread hop. The pool belongs to the app's lifespan
      (opened on its first read, closed at shutdown); outside a lifespan the read runs as
      ``"thread"``.
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
        self._read_thread: ReadThread[tuple[WorkOSUser | None, str | None]] | None = None
        self._held: Connection | None = None  # the SQLite reader thread's own connection
        self._open_lock = anyio.Lock()
        # The event loop of the lifespan that is running (None outside one): the read pool is
        # opened and closed on it, and only reads on it may use the pool.
        self._loop: asyncio.AbstractEventLoop | None = None
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
        if self._loop is not None and asyncio.get_running_loop() is self._loop:
            if self.resolved_mode() == "async":
                pool = self._read_pool or await self._open_read_pool()
                if pool is not None:
                    plan = self._plan_for(self._engine())
                    row = await pool.fetch_one(plan.sql, _params(plan, user_id, session_id))
                    return self._build(plan, row)
            elif self._read_thread is not None:
                return await self._read_thread.run((user_id, session_id))
        return await anyio.to_thread.run_sync(self.read_with_session, (user_id, session_id))

    async def _open_read_pool(self) -> ReadPool | None:
        async with self._open_lock:
            if self._read_pool is None and self._loop is asyncio.get_running_loop():
                from .read_pool import ReadPool  # psycopg is an optional dependency

                pool = ReadPool(self._engine(), size=self._read_pool_size)
                await pool.open()
                self._read_pool = pool
        return self._read_pool

    def _build(
        self, plan: _ReadPlan, row: Sequence[Any] | None
    ) -> tuple[WorkOSUser | None, str | None]:
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
        self._loop = asyncio.get_running_loop()
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


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class JustInTime(Generic[K]):
    """What every just-in-time fetch shares: single flight, and a short memory of 404s.

    `run` fetches an object missing from the mirror. Concurrent requests for one key share one
    WorkOS call and its outcome, failures included. A 404 (the fetch calls `remember_not_found`)
    is remembered for ``not_found_ttl`` seconds by ``clock`` (at most `NOT_FOUND_CACHE_SIZE`
    keys), so tokens naming objects WorkOS does not know cannot spend the WorkOS rate limit.
    Failures (5xx, timeouts, a body that is not the object) are not remembered: the next request
    asks again.

    Args:
        clock: Returns Unix seconds.
        not_found_ttl: Seconds a 404 is remembered (0 remembers nothing).
    """

    def __init__(self, clock: Clock, not_found_ttl: float) -> None:
        if not not_found_ttl >= 0:  # also refuses NaN
            raise ValueError("not_found_ttl must be 0 or a positive number of seconds")
        self._clock = clock
        self.not_found_ttl = float(not_found_ttl)
        # key -> when its 404 stops being trusted; insertion order is expiry order, since every
        # entry lives the same TTL, so the first entry is always the next to expire.
        self._not_found: OrderedDict[K, float] = OrderedDict()
        self._flights: dict[K, _Flight] = {}

    def forget(self) -> None:
        """Forget every remembered 404 (the database or WorkOS behind it changed)."""
        self._not_found.clear()

    async def run(
        self,
        key: K,
        *,
        fetch: Callable[[], Awaitable[None]],
        reread: Callable[[], Awaitable[V]],
        not_found: Callable[[], Exception],
    ) -> V:
        """``fetch()`` (applying the object through the pipeline) then ``reread()``, once per key
        at a time: a request arriving meanwhile waits for that fetch and rereads. A key WorkOS
        recently answered 404 for raises ``not_found()`` without a call."""
        if self._known_not_found(key):
            raise not_found()
        while True:
            flight = self._flights.get(key)
            if flight is None:
                break
            # Another request is fetching this object: share its outcome rather than ask again.
            flight.waiters += 1
            try:
                await flight.done.wait()
            finally:
                flight.waiters -= 1
            if flight.error is not None:
                raise flight.error
            if flight.fetched:
                return await reread()
            # The fetching request was cancelled (its client went away): try again, maybe
            # leading the next flight.
        flight = _Flight()
        self._flights[key] = flight
        try:
            await fetch()
            result = await reread()
            flight.fetched = True
            return result
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    def waiters(self, key: K) -> int:
        """How many requests wait on the fetch of ``key`` in progress, besides its leader."""
        flight = self._flights.get(key)
        return 0 if flight is None else flight.waiters

    def _known_not_found(self, key: K) -> bool:
        expires = self._not_found.get(key)
        if expires is None:
            return False
        if self._clock() < expires:
            return True
        del self._not_found[key]
        return False

    def remember_not_found(self, key: K) -> None:
        """Remember that WorkOS answered 404 for ``key``, for ``not_found_ttl`` seconds."""
        if self.not_found_ttl <= 0:
            return
        now = self._clock()
        self._not_found.pop(key, None)
        self._not_found[key] = now + self.not_found_ttl
        # Drop what has expired, then the oldest past the bound: a flood of unknown ids (each
        # needs a validly signed token) cannot grow this without limit.
        while self._not_found:
            oldest, expires = next(iter(self._not_found.items()))
            if expires > now and len(self._not_found) <= NOT_FOUND_CACHE_SIZE:
                break
            del self._not_found[oldest]


class _Flight:
    """One just-in-time fetch in progress, and its outcome for the requests waiting on it."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.waiters = 0
        self.fetched = False
        self.error: Exception | None = None


def _params(plan: _ReadPlan, user_id: str, session_id: str | None) -> Any:
    if not plan.positional:
        if plan.with_session:
            return {"user_id": user_id, "session_id": session_id}
        return {"user_id": user_id}
    if not plan.with_session:
        return (user_id,)
    return (session_id, user_id) if plan.session_first else (user_id, session_id)


@dataclass(frozen=True, eq=False)
class BearerAuth:
    """What the dependencies of one `AuthKit` share: its token verifier and its user store.

    One object per `AuthKit`: a request's verified claims are remembered under it, so several
    dependencies of the same instance verify the token once, and those of another instance (a
    second `AuthKit` in the same app) do not reuse them.
    """

    verifier: Callable[[], TokenVerifier]
    """Returns the token verifier (built on first use: it needs the client id)."""
    users: UserStore
    organizations: OrganizationStore | None = None
    """Reads and fetches organizations and memberships (``current_organization``...)."""


class _Dependency(AccessTokenBearer):
    """Base of the dependencies bound to one `AuthKit`."""

    def __init__(self, auth: BearerAuth) -> None:
        super().__init__()
        self._auth = auth

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class ClaimsDependency(_Dependency):
    """``authkit.claims``: the verified `AccessTokenClaims`, with no database access."""

    async def __call__(self, connection: HTTPConnection) -> AccessTokenClaims:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        return claims


class CurrentUserDependency(_Dependency):
    """``authkit.current_user``: the synced `WorkOSUser` of the caller, or 401.

    With ``reject_revoked_sessions`` (the default), a token whose ``sid`` names a session
    mirrored as revoked is refused with 401 too, "The session was revoked".
    """

    responses = RESPONSES_401_503

    async def __call__(self, connection: HTTPConnection) -> WorkOSUser:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        return await _load_user(self._auth, connection, claims)


class OptionalUserDependency(_Dependency):
    """``authkit.optional_user``: like ``current_user``, but ``None`` without credentials.

    A token that is present but invalid is still refused with 401: a broken token is a client
    bug to surface, not an anonymous visit.
    """

    async def __call__(self, connection: HTTPConnection) -> WorkOSUser | None:
        claims = await verified_claims(self._auth, connection, required=False)
        if claims is None:
            return None
        return await _load_user(self._auth, connection, claims)


async def _load_user(
    auth: BearerAuth, connection: HTTPConnection, claims: AccessTokenClaims
) -> WorkOSUser:
    # Several dependencies of one instance in one request (current_user and
    # current_membership, say) read the user once.
    cached = connection.scope.get(_USER_KEY)
    if cached is not None and cached[0] is auth:
        found: WorkOSUser = cached[1]
        return found
    try:
        user = await auth.users.load(claims.sub, claims.sid)
        connection.scope[_USER_KEY] = (auth, user)
        return user
    except UserNotFoundError as exc:
        logger.info("access token refused for user %s: %s", claims.sub, exc)
        raise _refuse(connection, str(exc)) from None
    except DatabaseUnavailableError as exc:
        logger.error("current_user: %s", exc)
        raise _unavailable(connection, "The database is unavailable; retry later") from None
    except (WorkOSAPIError, TimeoutError) as exc:
        logger.error("current_user: could not fetch user %s from WorkOS: %r", claims.sub, exc)
        raise _unavailable(connection, "WorkOS could not be reached; retry later") from None
    except HandlerError as exc:
        logger.error("current_user: %s", exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "A user.created handler failed"
        ) from None


class _Requirement(_Dependency):
    """A dependency that verifies the token, then answers 403 unless the claims pass `_refusal`.

    Each subclass says only what it checks; the verification and the refusal live here once.
    """

    responses = RESPONSES_401_403_503

    async def __call__(self, connection: HTTPConnection) -> AccessTokenClaims:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        await _check_session(self._auth, connection, claims)
        refusal = self._refusal(claims)
        if refusal is not None:
            description, scope = refusal
            raise _forbid(connection, description, scope)
        return claims

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        """Why ``claims`` fall short, as (description, missing scope), or ``None`` if they pass."""
        raise NotImplementedError


class RequirePermissions(_Requirement):
    """Refuse with 403 unless the token grants every one of ``permissions``."""

    def __init__(self, auth: BearerAuth, permissions: tuple[str, ...]) -> None:
        super().__init__(auth)
        self.permissions = permissions

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        missing = [p for p in self.permissions if p not in claims.permissions]
        if missing:
            return f"Missing permission: {', '.join(missing)}", " ".join(missing)
        return None


class RequireRoles(_Requirement):
    """Refuse with 403 unless the token carries one of ``roles`` (in ``role`` or ``roles``)."""

    def __init__(self, auth: BearerAuth, roles: tuple[str, ...]) -> None:
        super().__init__(auth)
        self.roles = roles

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        held = {*claims.roles, *([claims.role] if claims.role else [])}
        if not held.intersection(self.roles):
            return f"One of these roles is required: {', '.join(self.roles)}", ""
        return None


class RequireOrganization(_Requirement):
    """Refuse with 403 unless the session is scoped to an organization (a given one, if set)."""

    def __init__(self, auth: BearerAuth, organization_id: str | None) -> None:
        super().__init__(auth)
        self.organization_id = organization_id

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        if claims.org_id is None:
            return "The session is not scoped to an organization", ""
        if self.organization_id is not None and claims.org_id != self.organization_id:
            return "The session is scoped to another organization", ""
        return None


async def _check_session(
    auth: BearerAuth, connection: HTTPConnection, claims: AccessTokenClaims
) -> None:
    """The session check for dependencies that do not read the user (``require_*``)."""
    users = auth.users
    if claims.sid is None or not users.reject_revoked_sessions:
        return
    cached = connection.scope.get(_USER_KEY)
    if cached is not None and cached[0] is auth:
        return  # current_user ran in this request and checked the session with the user
    try:
        revoked = await users.session_revoked(claims.sid)
    except DatabaseUnavailableError as exc:
        logger.error("session check: %s", exc)
        raise _unavailable(connection, "The database is unavailable; retry later") from None
    if revoked:
        logger.info("access token refused for user %s: its session was revoked", claims.sub)
        raise _refuse(connection, str(SessionRevokedError()))


class OrganizationStore:
    """Reads the caller's `WorkOSOrganization` and `WorkOSOrganizationMembership`, and fetches
    unsynced ones just in time, through the pipeline, with the users' single flight and 404
    memory (`JustInTime`).

    These reads are off the hot path of ``current_user`` (only routes that ask for an
    organization pay them); each runs one Core statement in a worker thread, on the engine's
    pool.

    Args:
        engine: Returns the engine to read from.
        pipeline: Applies what is fetched just in time, by the webhook rules.
        workos_api: Returns the WorkOS REST client, or ``None`` without an API key.
        clock: Returns Unix seconds, for ``not_found_ttl``.
        not_found_ttl: Seconds a 404 (or an empty membership list) is remembered.
    """

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        pipeline: EventPipeline,
        workos_api: Callable[[], WorkOSClient | None],
        clock: Clock,
        not_found_ttl: float = 5.0,
    ) -> None:
        self._engine = engine
        self._pipeline = pipeline
        self._workos_api = workos_api
        self._organizations: JustInTime[str] = JustInTime(clock, not_found_ttl)
        self._memberships: JustInTime[tuple[str, str]] = JustInTime(clock, not_found_ttl)

    def forget(self) -> None:
        """Forget the remembered 404s of organizations and memberships (see `AuthKit.override`)."""
        self._organizations.forget()
        self._memberships.forget()

    def mirrors(self, kind: str) -> bool:
        """Whether ``kind``'s table is written by this app's pipeline."""
        return kind in self._pipeline.mirrored

    def fetch_waiters(self, kind: str, key: str | tuple[str, str]) -> int:
        """Requests waiting on the fetch in progress of an organization id or a (user id,
        organization id) membership, besides its leader (diagnostics, tests)."""
        if kind == ORGANIZATION.name:
            assert isinstance(key, str)
            return self._organizations.waiters(key)
        assert isinstance(key, tuple)
        return self._memberships.waiters(key)

    # -- reads (blocking: run in a worker thread) --

    def read_organization(self, organization_id: str) -> WorkOSOrganization | None:
        """The mirrored organization, or ``None``."""
        with unavailable_as_error(), Session(self._engine()) as session:
            found = session.get(WorkOSOrganization, organization_id)
        return found

    def read_membership(
        self, user_id: str, organization_id: str
    ) -> WorkOSOrganizationMembership | None:
        """The mirrored membership of ``user_id`` in ``organization_id``, or ``None``."""
        with unavailable_as_error(), Session(self._engine()) as session:
            return get_membership(session, user_id, organization_id)

    def _tombstoned(self, kind: MirrorKind, object_id: str) -> bool:
        with unavailable_as_error(), Session(self._engine()) as session:
            return is_tombstoned(session, kind, object_id)

    # -- the dependencies' loads --

    async def organization(self, organization_id: str) -> WorkOSOrganization:
        """The synced organization, fetched just in time when missing.

        Raises `AccessDeniedError` (deleted, unknown to WorkOS, unsynced without an API key),
        `DatabaseUnavailableError`, `WorkOSAPIError` or `TimeoutError` (WorkOS unreachable).
        """
        found = await anyio.to_thread.run_sync(self.read_organization, organization_id)
        if found is not None:
            return found

        async def reread() -> WorkOSOrganization:
            row = await anyio.to_thread.run_sync(self.read_organization, organization_id)
            if row is None:  # a tombstone won the race
                raise AccessDeniedError("The organization was deleted")
            return row

        async def fetch() -> None:
            if await anyio.to_thread.run_sync(self._tombstoned, ORGANIZATION, organization_id):
                raise AccessDeniedError("The organization was deleted")
            workos_api = self._workos_api()
            if workos_api is None:
                raise AccessDeniedError(
                    "The organization is not synced yet, and no WorkOS API key is set to fetch it"
                )
            with anyio.fail_after(JIT_TIMEOUT_SECONDS):
                snapshot = await workos_api.get_organization(organization_id)
            if snapshot is None or snapshot.id != organization_id:
                if snapshot is None:
                    self._organizations.remember_not_found(organization_id)
                raise AccessDeniedError("The organization does not exist")
            await self._apply(ORGANIZATION.name, snapshot)
            logger.info("organization %s fetched just in time", organization_id)

        return await self._organizations.run(
            organization_id,
            fetch=fetch,
            reread=reread,
            not_found=lambda: AccessDeniedError("The organization does not exist"),
        )

    async def membership(self, user_id: str, organization_id: str) -> WorkOSOrganizationMembership:
        """The synced membership, whatever its status, fetched just in time when missing.

        Raises as `organization` does; `AccessDeniedError` also when the user is not a member.
        """
        found = await anyio.to_thread.run_sync(self.read_membership, user_id, organization_id)
        if found is not None:
            return found

        async def reread() -> WorkOSOrganizationMembership:
            row = await anyio.to_thread.run_sync(self.read_membership, user_id, organization_id)
            if row is None:  # its tombstone kept the fetched membership out
                raise AccessDeniedError("The membership was deleted")
            return row

        async def fetch() -> None:
            workos_api = self._workos_api()
            if workos_api is None:
                raise AccessDeniedError(
                    "The membership is not synced yet, and no WorkOS API key is set to fetch it"
                )
            # Every status: an inactive or pending membership is mirrored (and refused) too.
            with anyio.fail_after(JIT_TIMEOUT_SECONDS):
                page = await workos_api.list_organization_memberships(
                    user_id=user_id, organization_id=organization_id
                )
            matches = [
                item
                for item in page.data
                if item.user_id == user_id and item.organization_id == organization_id
            ]
            if not matches:
                self._memberships.remember_not_found((user_id, organization_id))
                raise AccessDeniedError("The user is not a member of the organization")
            newest = max(matches, key=lambda item: item.updated_at or _EARLIEST)
            if await anyio.to_thread.run_sync(self._tombstoned, MEMBERSHIP, newest.id):
                raise AccessDeniedError("The membership was deleted")
            await self._apply(MEMBERSHIP.name, newest)
            logger.info("membership %s fetched just in time", newest.id)

        return await self._memberships.run(
            (user_id, organization_id),
            fetch=fetch,
            reread=reread,
            not_found=lambda: AccessDeniedError("The user is not a member of the organization"),
        )

    async def _apply(self, kind: str, snapshot: Any) -> None:
        pipeline = self._pipeline
        await anyio.to_thread.run_sync(
            lambda: pipeline.apply_snapshot(kind, snapshot, source="jit")
        )


class _OrganizationDependency(_Dependency):
    """What ``current_organization`` and ``current_membership`` share: the caller's user (the
    session check included), then the token's ``org_id``, or 403."""

    responses = RESPONSES_401_403_503
    kind: str = ORGANIZATION.name

    async def _caller(self, connection: HTTPConnection) -> tuple[AccessTokenClaims, str]:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        await _load_user(self._auth, connection, claims)
        org_id = claims.org_id
        if org_id is None:
            raise _forbid(
                connection,
                "The access token names no organization (no org_id claim): sign in to an "
                "organization, or switch to one, to get a token scoped to it",
            )
        if not is_plausible_id(org_id):
            raise _refuse(connection, "The token's org_id is not an organization id")
        store = self._auth.organizations
        if store is None or not store.mirrors(self.kind):
            logger.error(
                "%s needs the %s kind mirrored: add %r to AuthKit(mirror=...)",
                type(self).__name__,
                self.kind,
                self.kind,
            )
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                f"{self.kind} objects are not mirrored by this app",
            )
        return claims, org_id

    async def _load(self, connection: HTTPConnection, load: Awaitable[V], what: str) -> V:
        try:
            return await load
        except AccessDeniedError as exc:
            logger.info("access refused: %s", exc)
            raise _forbid(connection, str(exc)) from None
        except DatabaseUnavailableError as exc:
            logger.error("%s: %s", what, exc)
            raise _unavailable(connection, "The database is unavailable; retry later") from None
        except (WorkOSAPIError, TimeoutError) as exc:
            logger.error("%s: could not fetch from WorkOS: %r", what, exc)
            raise _unavailable(connection, "WorkOS could not be reached; retry later") from None
        except HandlerError as exc:
            logger.error("%s: %s", what, exc)
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR, f"A handler of {self.kind}.created failed"
            ) from None


class CurrentOrganizationDependency(_OrganizationDependency):
    """``authkit.current_organization``: the `WorkOSOrganization` the caller's token is scoped
    to (its ``org_id``).

    401 as ``current_user``; 403 ``insufficient_scope`` when the token names no organization,
    or the organization was deleted, does not exist, or is not synced and no API key is set to
    fetch it; 503 when the database or WorkOS cannot be reached.
    """

    async def __call__(self, connection: HTTPConnection) -> WorkOSOrganization:
        _claims, org_id = await self._caller(connection)
        store = self._auth.organizations
        assert store is not None
        return await self._load(connection, store.organization(org_id), "current_organization")


class CurrentMembershipDependency(_OrganizationDependency):
    """``authkit.current_membership``: the caller's *active* `WorkOSOrganizationMembership` in
    the organization the token is scoped to (its ``sub`` and ``org_id``).

    Answers as ``current_organization``, and 403 when the membership is not ``active``
    (``inactive`` or ``pending``), was deleted, or the user is not a member.
    """

    kind = MEMBERSHIP.name

    async def __call__(self, connection: HTTPConnection) -> WorkOSOrganizationMembership:
        claims, org_id = await self._caller(connection)
        store = self._auth.organizations
        assert store is not None
        membership = await self._load(
            connection, store.membership(claims.sub, org_id), "current_membership"
        )
        if membership.status != "active":
            description = f"The membership is {membership.status}, not active"
            logger.info("access refused for user %s: %s", claims.sub, description)
            raise _forbid(connection, description)
        return membership
