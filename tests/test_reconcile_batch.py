"""The backfill's page-at-a-time `apply_users` follows exactly the rules of `apply_user`."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from fastapi_workos_authkit import Effect, User, WorkOSUser, WorkOSUserTombstone
from fastapi_workos_authkit._sync.database import create_tables, lock_subjects, make_engine
from fastapi_workos_authkit._sync.user_table import apply_user, apply_users
from fastapi_workos_authkit.testing import factories


def _seed(engine: Engine, stored: list[dict[str, Any]], tombstoned: list[str]) -> None:
    with Session(engine) as session:
        session.execute(delete(WorkOSUser))
        session.execute(delete(WorkOSUserTombstone))
        for payload in stored:
            user = User.model_validate(payload)
            apply_user(session, user)
        for user_id in tombstoned:
            session.add(WorkOSUserTombstone(user_id=user_id, deleted_at=factories.at(0)))
        session.commit()


def _table(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with Session(engine) as session:
        return {
            u.id: (u.email, u.first_name, u.updated_at, u.user_metadata)
            for u in session.exec(select(WorkOSUser)).all()
        }


def test_batch_and_one_by_one_agree(engine: Engine) -> None:
    create_tables(engine)
    rng = random.Random(5)
    for _round in range(5):
        stored: list[dict[str, Any]] = []
        tombstoned: list[str] = []
        page: list[dict[str, Any]] = []
        for index in range(60):
            user_id = f"user_{_round:02d}{index:024d}"
            snapshot = factories.user(
                user_id,
                first_name=f"Page{index}",
                updated_at=factories.at(100),
                metadata={"i": "1"},
            )
            page.append(snapshot)
            state = rng.choice(["absent", "older", "equal", "newer", "tombstoned"])
            if state == "tombstoned":
                tombstoned.append(user_id)
            elif state != "absent":
                offset = {"older": -10, "equal": 0, "newer": 10}[state]
                stored.append(
                    factories.user(
                        user_id,
                        first_name="Stored",
                        updated_at=factories.at(100) + timedelta(seconds=offset),
                    )
                )
        users = [User.model_validate(p) for p in page]

        _seed(engine, stored, tombstoned)
        with Session(engine) as session:
            one_by_one = [apply_user(session, user) for user in users]
            session.commit()
        expected = _table(engine)

        _seed(engine, stored, tombstoned)
        with Session(engine) as session:
            batched = apply_users(session, users)
            session.commit()
        assert batched == one_by_one
        assert _table(engine) == expected
        assert {Effect.INSERTED, Effect.UPDATED, Effect.UNCHANGED} <= set(batched)


def test_a_repeated_user_in_a_page_counts_once(engine: Engine) -> None:
    create_tables(engine)
    old = User.model_validate(factories.user("user_01DUP", updated_at=factories.at(1)))
    new = User.model_validate(
        factories.user("user_01DUP", first_name="Newer", updated_at=factories.at(2))
    )
    with Session(engine) as session:
        assert apply_users(session, [old, new]) == [Effect.UNCHANGED, Effect.INSERTED]
        session.commit()
    assert _table(engine)["user_01DUP"][1] == "Newer"


@pytest.mark.postgres_only
def test_page_locks_are_the_webhook_path_locks(database_url: str, engine: Engine) -> None:
    """A webhook holding a user's lock makes the backfill page wait for it, not race it."""
    create_tables(engine)
    other = make_engine(database_url)
    user = User.model_validate(factories.user("user_01LOCKED"))
    try:
        with Session(engine) as webhook, Session(other) as backfill:
            lock_subjects(webhook, [user.id])
            backfill.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                apply_users(backfill, [user])
            backfill.rollback()
            webhook.rollback()
            assert apply_users(backfill, [user]) == [Effect.INSERTED]
            backfill.commit()
    finally:
        other.dispose()
