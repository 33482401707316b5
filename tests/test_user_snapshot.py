"""EventPipeline.apply_user_snapshot: a REST user applied like an event, handlers included."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Effect, Event, HandlerError, User, WorkOSUser
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit.testing import factories


@pytest.fixture(autouse=True)
def _tables(authkit: AuthKit) -> None:
    create_tables(authkit.engine)


def snapshot(user_id: str, seconds: float, **fields: Any) -> User:
    return User.model_validate(factories.user(user_id, updated_at=factories.at(seconds), **fields))


def test_snapshot_runs_the_handlers_of_the_effective_change(authkit: AuthKit) -> None:
    seen: list[tuple[str, str]] = []
    for event_type in ("user.created", "user.updated", "user.deleted"):

        @authkit.on(event_type)
        def record(session: Session, event: Event[User]) -> None:
            seen.append((event.event, event.id))

    assert authkit.pipeline.apply_user_snapshot(snapshot("user_01S", 0), source="jit") == (
        Effect.INSERTED
    )
    assert authkit.pipeline.apply_user_snapshot(snapshot("user_01S", 0)) == Effect.UNCHANGED
    assert authkit.pipeline.apply_user_snapshot(
        snapshot("user_01S", 60, email="n@example.com")
    ) == (Effect.UPDATED)
    assert authkit.pipeline.apply_user_snapshot(snapshot("user_01S", 30)) == Effect.UNCHANGED
    stamp0 = int(factories.at(0).timestamp() * 1000)
    stamp60 = int(factories.at(60).timestamp() * 1000)
    assert seen == [
        ("user.created", f"jit_user_01S_{stamp0}"),
        ("user.updated", f"snapshot_user_01S_{stamp60}"),
    ]
    with Session(authkit.engine) as session:
        row = session.get(WorkOSUser, "user_01S")
        assert row is not None
        assert row.email == "n@example.com"


def test_snapshot_respects_tombstones(authkit: AuthKit) -> None:
    from fastapi_workos_authkit._sync.user_table import apply_user_deletion

    with Session(authkit.engine) as session:
        apply_user_deletion(session, "user_01T", deleted_at=factories.at(0))
        session.commit()
    assert authkit.pipeline.apply_user_snapshot(snapshot("user_01T", 999)) == Effect.UNCHANGED
    with Session(authkit.engine) as session:
        assert session.get(WorkOSUser, "user_01T") is None


def test_a_failing_handler_rolls_the_snapshot_back(authkit: AuthKit) -> None:
    @authkit.on("user.created")
    def broken(session: Session, event: Event[User]) -> None:
        raise ValueError("nope")

    with pytest.raises(HandlerError):
        authkit.pipeline.apply_user_snapshot(snapshot("user_01F", 0))
    with Session(authkit.engine) as session:
        assert session.get(WorkOSUser, "user_01F") is None


def test_a_page_of_snapshots_commits_with_what_before_commit_writes(authkit: AuthKit) -> None:
    """What a backfill relies on: its cursor row and the page commit together, or not at all."""
    from fastapi_workos_authkit._recovery.recovery import write_state
    from fastapi_workos_authkit._sync.tables import WorkOSSyncState

    seen: list[str] = []

    @authkit.on("user.created")
    def record(session: Session, event: Event[User]) -> None:
        seen.append(event.id)

    class Refused(Exception):
        pass

    def refuse(session: Session) -> None:
        write_state(session, "page.cursor", "user_01B")
        raise Refused("the lease is gone")

    page = [snapshot("user_01A", 0), snapshot("user_01B", 0)]
    with pytest.raises(Refused):
        authkit.pipeline.apply_snapshots(page, source="backfill", before_commit=refuse)
    with Session(authkit.engine) as session:
        assert session.get(WorkOSUser, "user_01A") is None  # the page was rolled back
        assert session.get(WorkOSSyncState, "page.cursor") is None

    assert len(seen) == 2  # the handlers ran in the transaction that was then rolled back
    effects = authkit.pipeline.apply_snapshots(
        page,
        source="backfill",
        run_handlers=False,
        before_commit=lambda session: write_state(session, "page.cursor", "user_01B"),
    )
    assert effects == [Effect.INSERTED, Effect.INSERTED]
    assert len(seen) == 2  # run_handlers=False: no handler ran this time
    with Session(authkit.engine) as session:
        assert session.get(WorkOSUser, "user_01B") is not None
        cursor = session.get(WorkOSSyncState, "page.cursor")
        assert cursor is not None
        assert cursor.value == "user_01B"
