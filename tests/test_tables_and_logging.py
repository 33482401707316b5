"""Tables are visible to Alembic, the lifespan creates them, and logs never carry secrets."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import pytest
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.database import create_tables
from fastapi_workos_authkit.pipeline import SyncSession
from fastapi_workos_authkit.testing import factories, signed_delivery
from tests.conftest import WEBHOOK_SECRET, deliver

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


def test_log_level_option_sets_the_package_logger() -> None:
    logger = logging.getLogger("fastapi_workos_authkit")
    previous = logger.level
    try:
        AuthKit(log_level="debug")
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(previous)


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
