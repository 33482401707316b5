"""Engine creation and the few dialect differences the sync has to care about."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel, create_engine

from .._exceptions import DatabaseUnavailableError
from .tables import TABLES

logger = logging.getLogger("fastapi_workos_authkit")

T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Point bare ``postgresql://`` / ``postgres://`` URLs at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with settings the sync relies on.

    SQLite gets WAL (readers never wait for the webhook writer) and a busy timeout (writers queue
    instead of failing); PostgreSQL gets ``pool_pre_ping`` so a restarted server costs one retry,
    not a burst of errors. ``pool_size`` / ``max_overflow`` in ``kwargs`` size the pool; the
    process's connection budget is theirs (see the deployment guide).
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def begin_immediate(_session: Any, _transaction: Any, connection: Connection) -> None:
    """Start SQLite transactions with ``BEGIN IMMEDIATE`` (a Session ``after_begin`` hook).

    sqlite3 only sends ``BEGIN`` before the first write, so reads that decide a write would run
    outside any transaction: a concurrent delete could slip between a snapshot's check and its
    insert. ``BEGIN IMMEDIATE`` takes the write lock first; other writers wait on busy_timeout.
    PostgreSQL needs nothing here: its advisory locks serialise each user.
    """
    if connection.dialect.name == "sqlite" and not connection.in_nested_transaction():
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def refresh_statistics(engine: Engine, table: Table) -> None:
    """Run ``ANALYZE`` on ``table`` (PostgreSQL only; a no-op elsewhere or without privileges).

    A bulk load into a fresh table outruns autovacuum: the planner still believes the table is
    tiny and turns primary-key lookups into sequential scans, so every page costs more than the
    last. A backfill calls this as the table grows.
    """
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'ANALYZE "{table.name}"')
    except SQLAlchemyError as exc:
        logger.debug("could not ANALYZE %s: %s", table.name, type(exc).__name__)


def create_tables(engine: Engine) -> None:
    """Create the package's tables if they are missing (never alters existing ones)."""
    SQLModel.metadata.create_all(engine, tables=list(TABLES))


ADVISORY_NAMESPACE = 0x574B4F53  # "WKOS": apps keep every other namespace for their own locks
_HELD = "fastapi_workos_authkit.advisory_locks"
"""``session.info`` key: (the transaction, the advisory keys it holds)."""


def advisory_key(subject: str) -> int:
    """The second half of a subject's advisory lock key (the first is `ADVISORY_NAMESPACE`):
    a signed 32-bit hash of the subject."""
    return zlib.crc32(subject.encode("utf-8")) - 2**31


def note_locked(session: Session, keys: Iterable[int]) -> None:
    """Record that the session's transaction took the advisory locks ``keys`` itself (in a
    statement of its own making), so `lock_subjects` does not ask for them again."""
    transaction = session.get_transaction()
    held: tuple[object, set[int]] | None = session.info.get(_HELD)
    if held is None or held[0] is not transaction:
        held = (transaction, set())
        session.info[_HELD] = held
    held[1].update(keys)


def lock_subjects(session: Session, subject_ids: Iterable[str]) -> None:
    """Serialise work on some subjects (user ids) across instances, until the transaction ends.

    PostgreSQL takes transaction-scoped advisory locks, in one round trip and in sorted key order
    so two lockers of overlapping sets cannot deadlock; keys the transaction already holds
    (`note_locked`) cost nothing. SQLite needs nothing: sync transactions begin with
    ``BEGIN IMMEDIATE`` (`begin_immediate`), which holds the database-wide write lock.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    # Advisory keys are two signed 32-bit ints: our namespace, then a hash of the id.
    keys = sorted({advisory_key(subject) for subject in subject_ids})
    held = session.info.get(_HELD)
    if held is not None and held[0] is session.get_transaction():
        keys = [key for key in keys if key not in held[1]]
    # On the connection: a Core statement needs none of the ORM's execute machinery.
    if len(keys) == 1:
        connection.execute(_LOCK_ONE, {"namespace": ADVISORY_NAMESPACE, "key": keys[0]})
    elif keys:
        connection.execute(_LOCK_MANY, {"namespace": ADVISORY_NAMESPACE, "keys": keys})


_LOCK_ONE = text("SELECT pg_advisory_xact_lock(:namespace, :key)")
_LOCK_MANY = text(
    "SELECT pg_advisory_xact_lock(:namespace, k) "
    "FROM unnest(CAST(:keys AS integer[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
)


def dialect_insert(session: Session, table: Table) -> Any:
    """An INSERT for ``table`` that supports ``on_conflict_do_*`` on the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"Unsupported database {dialect!r}: use SQLite or PostgreSQL")


@contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Turn "cannot reach the database" into `DatabaseUnavailableError` (routes answer 503).

    The message keeps only the driver's first line: SQLAlchemy's full text holds the SQL and its
    parameters, which may carry personal data.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        if not is_unavailable(exc):
            raise
        if isinstance(exc, PoolTimeoutError):
            # SQLAlchemy's own message names the sizes ("QueuePool limit of size 5 overflow 10
            # reached, connection timed out, timeout 30.00"): say what to change beside it.
            reason = str(exc).strip().splitlines()[0].split(" (Background on this error")[0]
            logger.error(
                "the database connection pool is exhausted (%s): raise pool_size/max_overflow "
                "(AuthKit options, or your engine's) and PostgreSQL's max_connections with "
                "them (see the deployment guide's connection budget), or shorten handlers",
                reason,
            )
        else:
            reason = driver_message(exc) or type(exc).__name__
            if _TOO_MANY_CLIENTS in reason or _SLOTS_RESERVED in reason:
                logger.error(
                    "PostgreSQL refused a connection: max_connections is reached (%s). The "
                    "processes' connection budgets add up to more than the server allows: see "
                    "the deployment guide's connection budget",
                    reason,
                )
        raise DatabaseUnavailableError(f"The database is unavailable: {reason}") from exc


# PostgreSQL's messages when max_connections (or the non-superuser share of it) is used up.
_TOO_MANY_CLIENTS = "too many clients already"
_SLOTS_RESERVED = "remaining connection slots are reserved"


def driver_message(exc: BaseException) -> str:
    """The first line of what the database driver said about ``exc`` ("" if it said nothing).

    For a SQLAlchemy error that is the driver's own message (``exc.orig``), never SQLAlchemy's
    full text, which adds the SQL and its parameters (emails, names). Other exceptions give the
    first line of their own message.
    """
    source: object = getattr(exc, "orig", None) if isinstance(exc, SQLAlchemyError) else exc
    lines = str(source if source is not None else "").strip().splitlines()
    return lines[0] if lines else ""


def guarded(work: Callable[[], T]) -> T:
    """Run ``work`` under `unavailable_as_error` (for jobs that open their own sessions)."""
    with unavailable_as_error():
        return work()


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (answer 503), not a bug (500)."""
    if isinstance(exc, OperationalError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
