"""Tables are visible to Alembic, the lifespan creates them (unless told not to), and logs never
carry secrets nor have their level set by the package."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import pytest
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session as SASession
from sqlmodel import Session, SQLModel

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit._exceptions import DatabaseUnavailableError
from fastapi_workos_authkit._sync.database import (
    begin_immediate,
    create_tables,
    driver_message,
    unavailable_as_error,
)
from fastapi_workos_authkit._sync.pipeline import SyncSession
from fastapi_workos_authkit._sync.tables import TABLES, WorkOSUser
from fastapi_workos_authkit.testing import factories, signed_delivery
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio

PACKAGE_TABLES = {
    "workos_users",
    "workos_events",
    "workos_user_tombstones",
    "workos_sync_state",
    "workos_leases",
}


def test_tables_are_on_sqlmodel_metadata_for_alembic() -> None:
    assert set(SQLModel.metadata.tables) >= PACKAGE_TABLES
    assert all(name.startswith("workos_") for name in PACKAGE_TABLES)
    assert SQLModel.metadata.tables["workos_users"].c["metadata"] is not None


async def test_lifespan_creates_missing_tables_and_is_idempotent(
    authkit: AuthKit, engine: Engine
) -> None:
    assert not PACKAGE_TABLES & set(inspect(engine).get_table_names())
    await authkit.startup()
    await authkit.startup()
    assert set(inspect(engine).get_table_names()) >= PACKAGE_TABLES


async def test_nothing_secret_or_personal_is_logged_at_info(
    client: httpx.AsyncClient, authkit: AuthKit, caplog: pytest.LogCaptureFixture
) -> None:
    @authkit.on("user.updated")
    def boom(session: object, event: object) -> None:
        raise RuntimeError("boom")

    created = factories.user_created("user_log", email="private@example.com")
    updated = factories.user_updated(
        "user_log", email="private@example.com", updated_at=factories.at(60)
    )
    forged, headers = signed_delivery(created, "whsec_wrong")
    with caplog.at_level(logging.DEBUG, logger="fastapi_workos_authkit"):
        await deliver(client, created)
        await deliver(client, updated)
        await client.post("/workos/webhook", content=forged, headers=headers)
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert {r.levelname for r in loud} == {"ERROR", "WARNING"}  # the failure and the forgery
    text = "\n".join(r.getMessage() for r in loud)
    for needle in (
        "private@example.com",
        WEBHOOK_SECRET,
        "whsec_wrong",
        headers["WorkOS-Signature"],
    ):
        assert needle not in text
    assert created["id"] not in text
    assert updated["id"] in text  # the failure names its event, so it can be found in the ledger


async def test_the_package_never_sets_its_loggers_level(engine: Engine) -> None:
    """A library leaves levels to the app (``logging.getLogger(...).setLevel``): no option sets
    it, and neither construction nor start-up touches it."""
    logger = logging.getLogger("fastapi_workos_authkit")
    previous = logger.level
    with pytest.raises(TypeError, match="log_level"):
        AuthKit(log_level="DEBUG")  # type: ignore[call-arg]
    authkit = AuthKit(engine=engine, webhook_secret=WEBHOOK_SECRET)
    async with app_client(authkit):
        assert logger.level == previous
    assert logger.level == previous


async def test_create_tables_false_creates_nothing_at_start_up(engine: Engine) -> None:
    """For apps whose migrations (Alembic) own the schema: start-up leaves the database alone."""
    authkit = AuthKit(engine=engine, webhook_secret=WEBHOOK_SECRET, create_tables=False)
    async with app_client(authkit):
        assert not PACKAGE_TABLES & set(inspect(engine).get_table_names())
    assert inspect(engine).get_table_names() == []


async def test_create_tables_false_works_once_migrations_made_the_tables(engine: Engine) -> None:
    # What `alembic upgrade head` leaves behind: the tables, made from the same metadata.
    SQLModel.metadata.create_all(engine, tables=list(TABLES))
    authkit = AuthKit(engine=engine, webhook_secret=WEBHOOK_SECRET, create_tables=False)
    async with app_client(authkit) as client:
        response = await deliver(client, factories.user_created("user_migrated"))
    assert response.status_code == 200
    assert response.json()["status"] == "applied"
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_migrated") is not None


def test_no_session_listener_is_registered_globally() -> None:
    """The write-lock listener sits on the package's own `SyncSession` class, which only the
    sync instantiates, never on SQLAlchemy's or SQLModel's `Session`: the app's sessions are
    untouched (registering it per instance cost about 66 µs per event on the hot path)."""
    assert not event.contains(Session, "after_begin", begin_immediate)
    assert not event.contains(SASession, "after_begin", begin_immediate)
    assert event.contains(SyncSession, "after_begin", begin_immediate)


def test_sqlite_sync_transactions_hold_the_write_lock_from_their_first_read(
    authkit: AuthKit, engine: Engine
) -> None:
    """The user-table rules read, then write: on SQLite the read must already hold the lock,
    or a concurrent delete could slip in between (a deleted user would come back)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL serialises users with advisory locks")
    create_tables(engine)
    with SyncSession(engine) as sync:
        sync.execute(text("SELECT count(*) FROM workos_users"))  # a read, nothing written yet
        other = sqlite3.connect(engine.url.database or "", timeout=0.05)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute(
                    "INSERT INTO workos_user_tombstones (user_id, deleted_at) "
                    "VALUES ('user_x', '2026-01-01 00:00:00')"
                )
        finally:
            other.close()
        sync.rollback()


def test_driver_message_keeps_the_drivers_first_line_without_sql_or_parameters(
    engine: Engine,
) -> None:
    with pytest.raises(SQLAlchemyError) as caught, engine.connect() as connection:
        connection.execute(
            text("SELECT email FROM no_such_table WHERE email = :email"),
            {"email": "private@example.com"},
        )
    assert "private@example.com" in str(caught.value)  # SQLAlchemy's own text carries it
    message = driver_message(caught.value)
    assert "no_such_table" in message
    assert "private@example.com" not in message
    assert "\n" not in message
    # A driver that says nothing gives "" (callers fall back to the type's name), not a crash.
    silent = OperationalError("SELECT 1", {}, Exception(""))
    assert driver_message(silent) == ""
    unavailable = pytest.raises(DatabaseUnavailableError, match=r"unavailable: OperationalError$")
    with unavailable, unavailable_as_error():
        raise silent
