"""Recovery against a stateful fake WorkOS: Events API catch-up, backfill, replay, prune."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from fastapi_workos_authkit import (
    AuthKit,
    Event,
    HandlerError,
    WorkOSEventRecord,
    WorkOSSyncState,
    WorkOSUser,
    WorkOSUserTombstone,
)
from fastapi_workos_authkit._recovery import EVENTS_CURSOR, USERS_CURSOR
from fastapi_workos_authkit._recovery.workos_api import (
    RetryPolicy,
    WorkOSAPIError,
    WorkOSAuthenticationError,
    WorkOSClient,
)
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS
from tests.conftest import WEBHOOK_SECRET, deliver

pytestmark = pytest.mark.anyio

BASE_URL = "https://api.workos.test"


class SimulatedCrash(BaseException):
    """Stands for the process dying: no ``except Exception`` catches it, nothing commits."""


class Sleeps:
    """A sleep that records instead of waiting, so retry tests take no time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key="sk_test_key")


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_kit(engine: Engine, fake: FakeWorkOS, sleeps: Sleeps, **options: Any) -> AuthKit:
    kit = AuthKit(
        api_key="sk_test_key",
        webhook_secret=WEBHOOK_SECRET,
        api_base_url=BASE_URL,
        engine=engine,
        http_transport=fake.transport(),
        **options,
    )
    kit.workos_api = WorkOSClient(
        base_url=BASE_URL,
        api_key="sk_test_key",
        transport=fake.transport(),
        retry=RetryPolicy(attempts=5),
        sleep=sleeps,
    )
    return kit


@pytest.fixture
async def kit(engine: Engine, fake: FakeWorkOS, sleeps: Sleeps) -> AsyncIterator[AuthKit]:
    create_tables(engine)
    kit = make_kit(engine, fake, sleeps)
    yield kit
    await kit.shutdown()


def db_users(engine: Engine) -> dict[str, tuple[str, datetime]]:
    with Session(engine) as session:
        return {u.id: (u.email, u.updated_at) for u in session.exec(select(WorkOSUser)).all()}


def fake_users(fake: FakeWorkOS) -> dict[str, tuple[str, datetime]]:
    return {
        u["id"]: (u["email"], datetime.fromisoformat(u["updated_at"].replace("Z", "+00:00")))
        for u in fake.users
    }


def ledger(engine: Engine) -> dict[str, tuple[str, int]]:
    with Session(engine) as session:
        rows = session.exec(select(WorkOSEventRecord)).all()
        return {r.id: (str(r.status), r.attempts) for r in rows}


def state(engine: Engine, key: str) -> str | None:
    with Session(engine) as session:
        row = session.get(WorkOSSyncState, key)
        return row.value if row else None


# -- sync_events ---------------------------------------------------------------------------


async def test_empty_first_page_then_pages_of_events(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    empty = await kit.sync_events()
    assert (empty.ran, empty.fetched, empty.cursor) == (True, 0, None)
    assert state(engine, EVENTS_CURSOR) is None
    # The first run asks from range_start; with no cursor there is nothing to send as `after`.
    assert fake.requests[-1].params("range_start")
    assert not fake.requests[-1].params("after")

    for index in range(230):
        fake.create_user(email=f"u{index}@example.com")
    result = await kit.sync_events()
    assert (result.fetched, result.processed, result.effects) == (230, 230, {"inserted": 230})
    assert db_users(engine) == fake_users(fake)
    last_event = fake.events[-1]["id"]
    assert result.cursor == state(engine, EVENTS_CURSOR) == last_event
    event_requests = [r for r in fake.requests if r.path == "/events"]
    # 100 + 100 + 30: the short page ends the run; later pages continue after the cursor.
    assert [len(r.params("after")) for r in event_requests[1:]] == [0, 1, 1]
    assert event_requests[2].params("after") == [fake.events[99]["id"]]

    again = await kit.sync_events()
    assert (again.fetched, again.started_after) == (0, last_event)


async def test_events_filter_covers_user_handled_and_additional_types(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    # Only users mirrored: the types are user.*, the handled ones and the extras.
    kit = make_kit(
        engine, fake, sleeps, additional_event_types=["organization.created"], mirror=frozenset()
    )
    seen: list[str] = []

    @kit.on("session.created")
    def on_session(session: Session, event: Event[Any]) -> None:
        seen.append(event.event)

    user = fake.create_user()
    fake.add_event("session.created", factories.session_created(user["id"])["data"])
    fake.add_event("organization.created", factories.organization_created()["data"])
    fake.add_event("dsync.group.created", {"id": "directory_group_01"})
    result = await kit.sync_events()
    await kit.shutdown()

    assert result.event_types == [
        "organization.created",
        "session.created",
        "user.created",
        "user.deleted",
        "user.updated",
    ]
    assert fake.requests[-1].params("events") == [",".join(result.event_types)]
    assert result.fetched == 3  # the dsync event was never asked for
    assert seen == ["session.created"]
    assert {t for t, _ in ledger_types(engine)} == {
        "user.created",
        "session.created",
        "organization.created",
    }


def ledger_types(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        return [(r.event_type, r.id) for r in session.exec(select(WorkOSEventRecord)).all()]


async def test_fake_accepts_repeated_events_keys(fake: FakeWorkOS) -> None:
    fake.create_user()
    fake.add_event("session.created", {"id": "session_01"})
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE_URL) as client:
        headers = {"Authorization": "Bearer sk_test_key"}
        repeated = await client.get(
            "/events?events=user.created&events=session.created&order=asc", headers=headers
        )
        joined = await client.get("/events", params={"events": "session.created"}, headers=headers)
        refused = await client.get("/events", params={"events": "user.created"})
    assert [e["event"] for e in repeated.json()["data"]] == ["user.created", "session.created"]
    assert [e["event"] for e in joined.json()["data"]] == ["session.created"]
    assert refused.status_code == 401


async def test_429_waits_for_retry_after_then_succeeds(
    kit: AuthKit, fake: FakeWorkOS, sleeps: Sleeps, engine: Engine
) -> None:
    fake.create_user()
    fake.fail_with_429(2, retry_after=7, path="/events")
    result = await kit.sync_events()
    assert sleeps.delays == [7, 7]
    assert result.processed == 1
    assert db_users(engine) == fake_users(fake)


async def test_5xx_storm_is_retried_and_a_longer_one_stops_without_moving_the_cursor(
    kit: AuthKit, fake: FakeWorkOS, sleeps: Sleeps, engine: Engine
) -> None:
    first = fake.create_user()
    fake.fail_with_status(3, status=502)
    assert (await kit.sync_events()).processed == 1
    assert len(sleeps.delays) == 3
    cursor = state(engine, EVENTS_CURSOR)

    fake.update_user(first["id"], first_name="Later")
    fake.fail_with_status(50, status=503)
    with pytest.raises(WorkOSAPIError, match="503"):
        await kit.sync_events()
    assert state(engine, EVENTS_CURSOR) == cursor
    fake.fail_with_status(0)
    fake._faults.clear()  # the outage is over
    assert (await kit.sync_events()).effects == {"updated": 1}
    assert db_users(engine) == fake_users(fake)


async def test_connection_dropped_mid_page_is_retried(
    kit: AuthKit, fake: FakeWorkOS, sleeps: Sleeps, engine: Engine
) -> None:
    for _ in range(5):
        fake.create_user()
    fake.drop_connection(2, path="/events")
    result = await kit.sync_events()
    assert (result.processed, len(sleeps.delays)) == (5, 2)
    assert db_users(engine) == fake_users(fake)


async def test_crash_mid_page_resumes_with_nothing_lost_or_doubled(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    for _ in range(150):
        fake.create_user()
    crash_at = {"count": 0, "armed": True}

    @kit.on("user.created")
    def remember(session: Session, event: Event[Any]) -> None:
        crash_at["count"] += 1
        if crash_at["armed"] and crash_at["count"] == 120:
            raise SimulatedCrash  # mid second page, inside the event's transaction
        session.add(WorkOSSyncState(key=f"seen:{event.data.id}", updated_at=datetime.now(UTC)))

    with pytest.raises(SimulatedCrash):
        await kit.sync_events()
    events = fake.events
    assert state(engine, EVENTS_CURSOR) == events[118]["id"]
    assert len(ledger(engine)) == 119

    crash_at["armed"] = False
    result = await kit.sync_events()
    assert (result.processed, result.duplicates) == (31, 0)
    assert result.started_after == events[118]["id"]
    assert db_users(engine) == fake_users(fake)
    with Session(engine) as session:
        marks = session.exec(select(WorkOSSyncState).where(WorkOSSyncState.key.startswith("seen:")))  # type: ignore[attr-defined]
        assert len(marks.all()) == 150  # each handler effect committed exactly once


async def test_event_by_webhook_and_by_sync_takes_effect_once(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    calls: list[str] = []
    kit.add_handler("user.created", lambda session, event: calls.append(event.id))
    user = fake.create_user()
    app = FastAPI(lifespan=kit.lifespan)
    app.include_router(kit.router())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await deliver(client, fake.events[0])
    assert response.json()["status"] == "applied"
    result = await kit.sync_events()
    assert (result.processed, result.duplicates) == (0, 1)
    assert calls == [fake.events[0]["id"]]
    assert list(db_users(engine)) == [user["id"]]


async def test_delete_then_create_across_both_paths(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    """A deletion by webhook is not undone by the older create the sync brings later, and a
    create by webhook is removed by the deletion the sync brings."""
    doomed = fake.create_user()
    kept_then_deleted = fake.create_user()
    fake.delete_user(doomed["id"])
    fake.delete_user(kept_then_deleted["id"])
    deleted_event = next(
        e for e in fake.events if e["event"] == "user.deleted" and e["data"]["id"] == doomed["id"]
    )
    created_event = next(
        e
        for e in fake.events
        if e["event"] == "user.created" and e["data"]["id"] == kept_then_deleted["id"]
    )
    client_app = FastAPI()
    client_app.include_router(kit.router())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client_app), base_url="http://testserver"
    ) as client:
        assert (await deliver(client, deleted_event)).status_code == 200
        assert (await deliver(client, created_event)).status_code == 200
    assert list(db_users(engine)) == [kept_then_deleted["id"]]

    result = await kit.sync_events()
    assert (result.processed, result.duplicates) == (2, 2)
    assert db_users(engine) == {} == fake_users(fake)
    with Session(engine) as session:
        tombstones = {t.user_id for t in session.exec(select(WorkOSUserTombstone)).all()}
    assert tombstones == {doomed["id"], kept_then_deleted["id"]}


async def test_a_failing_handler_is_recorded_and_replayed_after_the_fix(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    broken = {"yes": True}
    handled: list[str] = []

    @kit.on("session.created")
    def on_session(session: Session, event: Event[Any]) -> None:
        if broken["yes"]:
            raise RuntimeError("downstream is down")
        handled.append(event.id)

    user = fake.create_user()
    session_event = fake.add_event("session.created", factories.session_created(user["id"])["data"])
    later = fake.create_user()

    result = await kit.sync_events()
    # The failure does not hold later events hostage: the cursor moves on, the ledger keeps it.
    assert (result.processed, result.failed) == (2, 1)
    assert result.failed_event_ids == [session_event["id"]]
    assert later["id"] in db_users(engine)
    assert ledger(engine)[session_event["id"]] == ("failed", 1)
    status = await kit.sync_status()
    assert status.ledger == {"processed": 2, "failed": 1}
    assert status.last_failures[0].event_id == session_event["id"]
    assert "RuntimeError" in (status.last_failures[0].last_error or "")

    still_broken = await kit.replay_failed()
    assert (still_broken.replayed, still_broken.failed) == (1, 1)
    assert still_broken.events[0].attempts == 2

    broken["yes"] = False
    fixed = await kit.replay_failed()
    assert (fixed.replayed, fixed.succeeded, fixed.failed) == (1, 1, 0)
    assert fixed.events[0].status == "processed"
    assert fixed.events[0].attempts == 3
    assert handled == [session_event["id"]]
    assert (await kit.replay_failed()).replayed == 0
    assert (await kit.sync_events()).fetched == 0


async def test_invalid_event_from_the_api_is_kept_as_failed(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    bad = fake.add_event("user.created", {"object": "user", "id": "user_01BAD"})  # no email
    good = fake.create_user()
    result = await kit.sync_events()
    assert (result.failed, result.processed) == (1, 1)
    assert ledger(engine)[bad["id"]] == ("failed", 1)
    assert list(db_users(engine)) == [good["id"]]
    replay = await kit.replay_failed()
    assert (replay.failed, replay.events[0].attempts) == (1, 2)


# -- backfill_users ------------------------------------------------------------------------


async def test_backfill_over_existing_stale_newer_and_tombstoned_rows(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    created: list[str] = []
    updated: list[str] = []
    kit.add_handler("user.created", lambda s, e: created.append(e.data.id))
    kit.add_handler("user.updated", lambda s, e: updated.append(e.data.id))
    same = fake.create_user()
    stale = fake.create_user()
    newer_here = fake.create_user()
    tombstoned = fake.create_user()
    fresh = [fake.create_user()["id"] for _ in range(3)]
    fake.update_user(stale["id"], first_name="Renamed")

    app = FastAPI()
    app.include_router(kit.router())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        for payload in (
            factories.user_created(same["id"], **_fields(same)),
            factories.user_created(stale["id"], **_fields(stale)),
            factories.user_updated(
                newer_here["id"],
                **{**_fields(newer_here), "updated_at": datetime.now(UTC) + timedelta(days=1)},
            ),
            factories.user_deleted(tombstoned["id"], id_only=True),
        ):
            assert (await deliver(client, payload)).status_code == 200
    created.clear()

    progress: list[int] = []
    result = await kit.backfill_users(progress=lambda p: progress.append(p.done))
    assert (result.seen, result.inserted, result.updated, result.unchanged) == (7, 3, 1, 3)
    assert result.completed
    assert progress == [7]
    assert created == fresh
    assert updated == [stale["id"]]
    users = db_users(engine)
    assert tombstoned["id"] not in users
    assert users[stale["id"]] == fake_users(fake)[stale["id"]]
    assert users[newer_here["id"]][1] > fake_users(fake)[newer_here["id"]][1]
    assert state(engine, USERS_CURSOR) is None  # a finished run starts over next time


def _fields(user: dict[str, Any]) -> dict[str, Any]:
    def parse(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    return {
        "email": user["email"],
        "created_at": parse(user["created_at"]),
        "updated_at": parse(user["updated_at"]),
    }


async def test_backfill_crash_resumes_at_the_first_uncommitted_page(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    ids = [fake.create_user()["id"] for _ in range(250)]
    armed = {"yes": True}

    @kit.on("user.created")
    def mark(session: Session, event: Event[Any]) -> None:
        if armed["yes"] and event.data.id == ids[150]:
            raise SimulatedCrash
        session.add(WorkOSSyncState(key=f"seen:{event.data.id}", updated_at=datetime.now(UTC)))

    with pytest.raises(SimulatedCrash):
        await kit.backfill_users()
    assert state(engine, USERS_CURSOR) == ids[99]
    assert len(db_users(engine)) == 100

    armed["yes"] = False
    result = await kit.backfill_users()
    assert result.resumed_from == ids[99]
    assert (result.pages, result.inserted) == (2, 150)
    assert db_users(engine) == fake_users(fake)
    with Session(engine) as session:
        marks = session.exec(select(WorkOSSyncState).where(WorkOSSyncState.key.startswith("seen:")))  # type: ignore[attr-defined]
        assert len(marks.all()) == 250


async def test_backfill_keeps_every_page_fetched_before_a_revoked_key(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    # Page 2 is fetched while page 1 is applied; WorkOS refuses it (the key was revoked).
    ids = [fake.create_user()["id"] for _ in range(150)]
    fake.fail_with_status(status=401, path="/user_management/users", skip=1)
    with pytest.raises(WorkOSAuthenticationError, match="WORKOS_API_KEY"):
        await kit.backfill_users()
    # Page 1 was fetched before the failure: it is applied and committed with its cursor.
    assert sorted(db_users(engine)) == sorted(ids[:100])
    assert state(engine, USERS_CURSOR) == ids[99]
    result = await kit.backfill_users()
    assert (result.resumed_from, result.pages, result.inserted) == (ids[99], 1, 50)
    assert db_users(engine) == fake_users(fake)
    listings = [r for r in fake.requests if r.path == "/user_management/users"]
    assert [(r.params("after"), r.status) for r in listings] == [
        ([], 200),
        ([ids[99]], 401),
        ([ids[99]], 200),
    ]


async def test_backfill_applies_every_page_fetched_before_a_refused_third_page(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    ids = [fake.create_user()["id"] for _ in range(250)]
    # Pages 1 and 2 come back; page 3 is refused at once (a 400 is not retried).
    fake.fail_with_status(status=400, path="/user_management/users", skip=2)
    with pytest.raises(WorkOSAPIError, match="400"):
        await kit.backfill_users()
    assert sorted(db_users(engine)) == sorted(ids[:200])
    assert state(engine, USERS_CURSOR) == ids[199]
    result = await kit.backfill_users()
    assert (result.resumed_from, result.inserted) == (ids[199], 50)
    assert db_users(engine) == fake_users(fake)


async def test_backfill_handler_error_stops_and_a_rerun_resumes(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    for _ in range(120):
        fake.create_user()
    broken = {"yes": True}

    @kit.on("user.created")
    def fragile(session: Session, event: Event[Any]) -> None:
        if broken["yes"] and event.data.id == fake.users[110]["id"]:
            raise RuntimeError("boom")

    with pytest.raises(HandlerError, match=r"user\.created"):
        await kit.backfill_users()
    assert len(db_users(engine)) == 100
    broken["yes"] = False
    result = await kit.backfill_users()
    assert (result.inserted, result.resumed_from) == (20, fake.users[99]["id"])


async def test_backfill_without_handlers_and_empty_workos(kit: AuthKit, fake: FakeWorkOS) -> None:
    calls: list[str] = []
    kit.add_handler("user.created", lambda s, e: calls.append(e.id))
    empty = await kit.backfill_users()
    assert (empty.seen, empty.completed) == (0, True)
    fake.create_user()
    result = await kit.backfill_users(run_handlers=False)
    assert (result.inserted, calls) == (1, [])


async def test_fresh_database_equals_workos_after_backfill_and_sync(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    users = [fake.create_user()["id"] for _ in range(140)]
    for user_id in users[::3]:
        fake.update_user(user_id, last_name="Updated")
    for user_id in users[::7]:
        fake.delete_user(user_id)
    await kit.backfill_users()
    for user_id in users[1::5]:
        if user_id in {u["id"] for u in fake.users}:
            fake.update_user(user_id, first_name="AfterBackfill")
    fake.delete_user(users[1])
    await kit.sync_events()
    assert db_users(engine) == fake_users(fake)
    with Session(engine) as session:
        for row in session.exec(select(WorkOSUser)).all():
            assert row.first_name == next(u for u in fake.users if u["id"] == row.id)["first_name"]


# -- prune and status ----------------------------------------------------------------------


async def test_prune_bounds(engine: Engine, fake: FakeWorkOS, sleeps: Sleeps) -> None:
    create_tables(engine)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    kit = make_kit(engine, fake, sleeps, clock=now.timestamp)
    with Session(engine) as session:
        for event_id, status, age in (
            ("event_old_processed", "processed", 40),
            ("event_old_failed", "failed", 40),
            ("event_recent_processed", "processed", 10),
        ):
            session.add(
                WorkOSEventRecord(
                    id=event_id,
                    event_type="user.created",
                    source="webhook",
                    status=status,  # type: ignore[arg-type]
                    attempts=1,
                    received_at=now - timedelta(days=age),
                    payload={},
                )
            )
        for user_id, age in (("user_old", 31), ("user_new", 2)):
            session.add(WorkOSUserTombstone(user_id=user_id, deleted_at=now - timedelta(days=age)))
        session.commit()

    with pytest.raises(ValueError, match="at least 3 days"):
        await kit.prune(tombstone_retention=timedelta(days=2))
    with pytest.raises(ValueError, match="ledger_retention"):
        await kit.prune(ledger_retention=timedelta(hours=1))
    result = await kit.prune()
    assert (result.events_deleted, result.tombstones_deleted) == (1, 1)
    assert set(ledger(engine)) == {"event_old_failed", "event_recent_processed"}
    tight = await kit.prune(ledger_retention=timedelta(days=3), tombstone_retention=timedelta(3))
    assert (tight.events_deleted, tight.tombstones_deleted) == (1, 0)
    status = await kit.sync_status()
    assert status.ledger == {"processed": 0, "failed": 1}
    assert status.tombstones == 1
    await kit.shutdown()


async def test_backfill_handlers_share_the_page_transaction(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    user = fake.create_user()
    seen: list[str] = []

    @kit.on("user.created")
    def committing(session: Session, event: Event[Any]) -> None:
        seen.append(event.id)
        session.commit()  # refused: the page commits once, with the cursor

    with pytest.raises(HandlerError):
        await kit.backfill_users()
    assert db_users(engine) == {}
    assert seen[0].startswith(f"backfill_{user['id']}_")


@pytest.mark.postgres_only
async def test_database_lost_mid_backfill_stops_cleanly_and_resumes(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine, database_url: str
) -> None:
    from fastapi_workos_authkit import DatabaseUnavailableError
    from fastapi_workos_authkit._sync.database import make_engine

    ids = [fake.create_user()["id"] for _ in range(150)]
    admin = make_engine(database_url)
    armed = {"yes": True}

    @kit.on("user.created")
    def cut_the_line(session: Session, event: Event[Any]) -> None:
        if armed["yes"] and event.data.id == ids[120]:
            armed["yes"] = False
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            await kit.backfill_users()
    finally:
        admin.dispose()
    assert "INSERT" not in str(caught.value)  # no SQL, no parameters (emails) in the message
    assert "@example.com" not in str(caught.value)
    assert state(engine, USERS_CURSOR) == ids[99]
    result = await kit.backfill_users()
    assert (result.resumed_from, result.inserted) == (ids[99], 50)
    assert db_users(engine) == fake_users(fake)


async def test_first_run_starts_at_the_configured_range_start(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    start = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    kit = make_kit(engine, fake, sleeps, events_range_start=start)
    await kit.sync_events()
    await kit.shutdown()
    assert fake.requests[-1].params("range_start") == ["2026-11-01T08:30:00Z"]


async def test_fake_users_endpoints(fake: FakeWorkOS) -> None:
    first = fake.create_user(email="first@example.com")
    second = fake.create_user()
    fake.delete_user(second["id"])
    third = fake.create_user()
    async with WorkOSClient(
        base_url=BASE_URL, api_key="sk_test_key", transport=fake.transport()
    ) as client:
        found = await client.get_user(first["id"])
        assert found is not None
        assert found.email == "first@example.com"
        assert await client.get_user(second["id"]) is None  # deleted: 404
        page = await client.list_users(limit=1)
        assert ([u.id for u in page.data], page.after) == ([first["id"]], first["id"])
        rest = await client.list_users(after=page.after)
        assert ([u.id for u in rest.data], rest.after) == ([third["id"]], None)
        newest_first = await client.list_users(order="desc")
        assert [u.id for u in newest_first.data] == [third["id"], first["id"]]
        with pytest.raises(WorkOSAPIError, match="422"):
            await client.list_users(limit=101)


async def test_backfill_keeps_postgresql_statistics_current(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    """A bulk load outruns autovacuum; without fresh row counts PostgreSQL turns the page's
    primary-key lookups into sequential scans and each page costs more than the last."""
    if engine.dialect.name != "postgresql":
        pytest.skip("ANALYZE is PostgreSQL's")
    fake.seed_users(250)
    result = await kit.backfill_users(run_handlers=False)
    assert result.inserted == 250
    with engine.connect() as connection:
        analyzed = connection.execute(
            text(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                "WHERE relname = 'workos_users' AND schemaname = current_schema()"
            )
        ).scalar_one()
    assert analyzed
