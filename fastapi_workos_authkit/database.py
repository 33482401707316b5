"""Engine creation and the few dialect differences the sync has to care about."""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel, create_engine

from .tables import TABLES


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
    not a burst of errors.
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


def create_tables(engine: Engine) -> None:
    """Create the package's tables if they are missing (never alters existing ones)."""
    SQLModel.metadata.create_all(engine, tables=list(TABLES))


def lock_subject(session: Session, subject_id: str) -> None:
    """Serialise work on one subject (a user id) across instances, until the transaction ends.

    PostgreSQL takes a transaction-scoped advisory lock. SQLite needs nothing: the ledger insert
    that opens every pipeline transaction already holds the database-wide write lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(subject_id.encode("utf-8"))
        # Advisory keys are signed 64-bit; namespace ours in the high half so apps can use theirs.
        session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": 0x574B4F53, "key": key - 2**31},
        )


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (answer 503), not a bug (500)."""
    if isinstance(exc, OperationalError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
