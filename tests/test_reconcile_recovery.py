"""Recovery edge cases: event types that change under a cursor, a lease that must outlive WorkOS
retries, pruning bounded by the sync's progress, and malformed answers from the Events API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import AuthKit, Event, InvalidEventError, WorkOSEventRecord
from fastapi_workos_authkit._clock import utcnow
from fastapi_workos_authkit._recovery import (
    EVENTS_CURSOR,
    EVENTS_TYPES,
    EventsCursorExpiredError,
    EventTypesChangedError,
    Progress,
)
from fastapi_workos_authkit._recovery.lease import Lease, LeaseLostError
from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSClient
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit._sync.tables import WorkOSSyncState
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS
from tests.conftest import deliver
from tests.test_reconcile import (
    BASE_URL,
    Sleeps,
    db_users,
    fake_users,
    ledger,
    make_kit,
    state,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key="sk_test_key")


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def kit(engine: Engine, fake: FakeWorkOS, sleeps: Sleeps) -> AsyncIterator[AuthKit]:
    create_tables(engine)
    kit = make_kit(engine, fake, sleeps)
    yield kit
    await kit.shutdown()


class Clock:
    """A settable clock shared by the kit (lease, prune) and a sleep that advances it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now.timestamp()

    def at(self) -> datetime:
        return self.now


def write_state(engine: Engine, key: str, value: str) -> None:
    """What another instance's run leaves in the database."""
    with Session(engine) as session:
        row = session.get(WorkOSSyncState, key) or WorkOSSyncState(key=key, updated_at=utcnow())
        row.value = value
        session.add(row)
        session.commit()


# -- 4. the event types are saved with the cursor ------------------------------------------


async def test_an_authkit_without_the_apps_handlers_refuses_to_move_the_cursor(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    # A users-only app: session.* is pulled only because a handler asks for it.
    app_kit = make_kit(engine, fake, sleeps, mirror=frozenset())
    sessions: list[str] = []
    app_kit.add_handler("session.created", lambda s, e: sessions.append(e.id))
    user = fake.create_user()
    await app_kit.sync_events()
    assert state(engine, EVENTS_TYPES) == ("session.created,user.created,user.deleted,user.updated")
    cursor = state(engine, EVENTS_CURSOR)

    login = fake.add_event("session.created", factories.session_created(user["id"])["data"])
    fake.update_user(user["id"], first_name="Later")
    # `fastapi-workos-authkit sync-events` without --app, on a users-only configuration
    bare = make_kit(engine, fake, Sleeps(), mirror=frozenset())
    with pytest.raises(EventTypesChangedError, match=r"no longer asked for: session\.created"):
        await bare.sync_events()
    # Nothing moved: the session event is not stepped over, the update not taken without the
    # app's handlers.
    assert state(engine, EVENTS_CURSOR) == cursor
    assert login["id"] not in ledger(engine)

    result = await app_kit.sync_events()
    assert (result.processed, sessions) == (2, [login["id"]])
    assert db_users(engine) == fake_users(fake)
    await app_kit.shutdown()
    await bare.shutdown()


async def test_a_handler_added_later_catches_up_by_restarting_the_cursor(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    # A users-only app: organization.* is pulled only once a handler asks for it.
    before = make_kit(engine, fake, sleeps, mirror=frozenset())
    user = fake.create_user()
    early_org = fake.add_event("organization.created", factories.organization_created()["data"])
    fake.update_user(user["id"], first_name="Second")
    first = await before.sync_events()
    assert first.fetched == 2  # nobody asked for organizations yet

    after = make_kit(engine, fake, sleeps, mirror=frozenset())
    orgs: list[str] = []
    after.add_handler("organization.created", lambda s, e: orgs.append(e.id))
    with pytest.raises(EventTypesChangedError, match=r"new: organization\.created") as caught:
        await after.sync_events()
    assert "--from" in str(caught.value)
    assert "--app" in str(caught.value)

    caught_up = await after.sync_events(restart_from=timedelta(days=1))
    # The old events come back; the ledger skips the user events already processed.
    assert (caught_up.processed, caught_up.duplicates) == (1, 2)
    assert orgs == [early_org["id"]]
    assert state(engine, EVENTS_TYPES) == (
        "organization.created,user.created,user.deleted,user.updated"
    )
    assert (await after.sync_events()).fetched == 0  # and it carries on from the new cursor
    await before.shutdown()
    await after.shutdown()


async def test_restart_from_needs_an_aware_datetime(kit: AuthKit) -> None:
    with pytest.raises(ValueError, match="aware"):
        await kit.sync_events(restart_from=datetime(2026, 1, 1))  # naive, on purpose


# -- 5. the lease outlives WorkOS retries, and a lost lease never moves the cursor ----------


@pytest.mark.parametrize("job", ["sync_events", "backfill_users"])
async def test_long_retry_waits_keep_the_lease(engine: Engine, fake: FakeWorkOS, job: str) -> None:
    create_tables(engine)
    clock = Clock(datetime(2026, 6, 1, tzinfo=UTC))
    rival = Lease(engine, job, ttl=60, now=clock.at)
    rival_results: list[str | None] = []

    async def sleep(delay: float) -> None:
        # Another instance tries to take over at every moment the run is waiting.
        clock.now += timedelta(seconds=delay)
        rival_results.append(rival.acquire())

    kit = make_kit(engine, fake, Sleeps(), clock=clock)
    await kit.workos_api.aclose()
    kit.workos_api = WorkOSClient(
        base_url=BASE_URL,
        api_key="sk_test_key",
        transport=fake.transport(),
        retry=RetryPolicy(attempts=6),
        sleep=sleep,
    )
    fake.create_user()
    path = "/events" if job == "sync_events" else "/user_management/users"
    fake.fail_with_429(4, retry_after=100, path=path)  # 400 s of waiting, a 60 s lease
    await getattr(kit, job)()
    await kit.shutdown()

    assert len(rival_results) == 20  # each 100 s wait cut into slices of 20 s (ttl / 3)
    assert all(result is not None for result in rival_results)  # never free for the rival
    assert db_users(engine) == fake_users(fake)


async def test_a_run_that_lost_its_lease_does_not_move_the_cursor_back(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    clock = Clock(datetime(2026, 6, 1, tzinfo=UTC))
    kit = make_kit(engine, fake, sleeps, clock=clock)
    for _ in range(150):
        fake.create_user()
    events = fake.events
    rival = Lease(engine, "sync_events", ttl=60, now=clock.at)

    def stall_then_lose_the_lease(progress: Progress) -> None:
        if progress.done == 100:
            # The run stalls past its lease; another instance takes over and gets further.
            clock.now += timedelta(seconds=120)
            assert rival.acquire() is None
            write_state(engine, EVENTS_CURSOR, events[-1]["id"])

    with pytest.raises(LeaseLostError):
        await kit.sync_events(progress=stall_then_lose_the_lease)
    await kit.shutdown()
    assert state(engine, EVENTS_CURSOR) == events[-1]["id"]  # the rival's, not moved back
    assert len(ledger(engine)) == 100  # the stale run stopped before the second page


@pytest.mark.postgres_only
async def test_the_cursor_write_checks_the_lease_in_its_transaction(
    engine: Engine, fake: FakeWorkOS, sleeps: Sleeps
) -> None:
    create_tables(engine)
    clock = Clock(datetime(2026, 6, 1, tzinfo=UTC))
    kit = make_kit(engine, fake, sleeps, clock=clock)
    for _ in range(3):
        fake.create_user()
    events = fake.events
    rival = Lease(engine, "sync_events", ttl=60, now=clock.at)

    @kit.on("user.created")
    def slow(session: Session, event: Event[Any]) -> None:
        if event.id == events[1]["id"]:
            # Mid-event, after the page's renewal: the lease lapses and the rival moves on.
            clock.now += timedelta(seconds=120)
            assert rival.acquire() is None
            write_state(engine, EVENTS_CURSOR, events[2]["id"])

    with pytest.raises(LeaseLostError):
        await kit.sync_events()
    await kit.shutdown()
    assert state(engine, EVENTS_CURSOR) == events[2]["id"]


# -- 6. pruning waits for the sync ---------------------------------------------------------


async def test_prune_keeps_what_a_lagging_sync_will_still_replay(
    engine: Engine, sleeps: Sleeps
) -> None:
    create_tables(engine)
    base = datetime.now(UTC)
    workos_time = {"now": base - timedelta(hours=2)}
    fake = FakeWorkOS(now=lambda: workos_time["now"])
    clock = Clock(base)
    kit = make_kit(engine, fake, sleeps, clock=clock)

    created: list[str] = []
    kit.add_handler("user.created", lambda s, e: created.append(e.data.id))
    kept = fake.create_user()
    await kit.sync_events()  # the cursor is on an event two hours old, then the sync stops
    workos_time["now"] = base - timedelta(hours=1)
    doomed = fake.create_user()
    fake.delete_user(doomed["id"])
    app = FastAPI()
    app.include_router(kit.router())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        # The endpoint missed the user.created; the user.deleted came, and left a tombstone.
        assert (await deliver(client, fake.events[-1])).status_code == 200

    clock.now = base + timedelta(days=5)  # five days on, the sync has not run since
    pruned = await kit.prune(tombstone_retention=timedelta(days=3))
    assert pruned.tombstones_deleted == 0
    assert (
        pruned.sync_position
        == (base - timedelta(hours=2))
        .replace(microsecond=(base.microsecond // 1000) * 1000)
        .isoformat()
    )

    await kit.sync_events()  # replays the doomed user's user.created: it must stay deleted
    assert list(db_users(engine)) == [kept["id"]]
    assert created == [kept["id"]]

    workos_time["now"] = base
    fake.create_user()
    await kit.sync_events()
    caught_up = await kit.prune(tombstone_retention=timedelta(days=3))
    assert caught_up.tombstones_deleted == 1  # once the sync is past it, the tombstone goes
    await kit.shutdown()


# -- 9. what the Events API sends ----------------------------------------------------------


async def use_canned_events(kit: AuthKit, pages: dict[str | None, dict[str, Any]]) -> None:
    """Point ``kit`` at a WorkOS answering ``GET /events`` from ``pages``."""
    await kit.workos_api.aclose()
    kit.workos_api = WorkOSClient(
        base_url=BASE_URL,
        api_key="sk_test_key",
        transport=httpx.MockTransport(canned_events(pages)),
    )


def canned_events(
    pages: dict[str | None, dict[str, Any]],
) -> Callable[[httpx.Request], httpx.Response]:
    """A WorkOS answering ``GET /events`` from canned pages, keyed by the ``after`` asked."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("after")])

    return answer


def api_event(event_id: str | None, user_id: str) -> dict[str, Any]:
    event = factories.user_created(user_id)
    if event_id is None:
        del event["id"]
    else:
        event["id"] = event_id
    return event


async def test_pages_end_when_workos_leaves_out_after_not_when_one_is_short(
    kit: AuthKit, engine: Engine
) -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {"data": [api_event("event_01", "user_01"), api_event("event_02", "user_02")]},
        "event_02": {"data": [api_event("event_03", "user_03")]},
    }
    pages[None]["list_metadata"] = {"after": "event_02"}  # a short page, and more to come
    pages["event_02"]["list_metadata"] = {"after": None}
    await use_canned_events(kit, pages)
    result = await kit.sync_events()
    assert (result.fetched, result.cursor) == (3, "event_03")
    assert sorted(db_users(engine)) == ["user_01", "user_02", "user_03"]


async def test_an_event_without_an_id_stops_the_sync_with_a_clear_error(
    kit: AuthKit, engine: Engine
) -> None:
    page = [api_event("event_01", "user_01"), api_event(None, "user_02")]
    pages: dict[str | None, dict[str, Any]] = {None: {"data": page, "list_metadata": {}}}
    await use_canned_events(kit, pages)
    with pytest.raises(InvalidEventError, match="without an id, after event_01") as caught:
        await kit.sync_events()
    assert "--from" in str(caught.value)
    assert state(engine, EVENTS_CURSOR) == "event_01"  # on the last good event
    with Session(engine) as session:
        assert [r.id for r in session.exec(select(WorkOSEventRecord)).all()] == ["event_01"]


async def test_an_expired_cursor_says_how_to_recover(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    fake.create_user()
    await kit.sync_events()
    # Months later: WorkOS no longer knows the event at the cursor (it keeps 30 days).
    write_state(engine, EVENTS_CURSOR, "event_01FORGOTTENBYWORKOS")
    with pytest.raises(EventsCursorExpiredError, match="30 days") as caught:
        await kit.sync_events()
    message = str(caught.value)
    assert "backfill-users" in message
    assert "--reset-cursor" in message
    assert state(engine, EVENTS_CURSOR) == "event_01FORGOTTENBYWORKOS"

    fake.create_user()
    recovered = await kit.sync_events(restart_from=timedelta(days=29))
    assert (recovered.processed, recovered.duplicates) == (1, 1)
    assert state(engine, EVENTS_CURSOR) == fake.events[-1]["id"]


async def test_the_fake_hands_out_deep_copies(fake: FakeWorkOS) -> None:
    created = fake.create_user(metadata={"plan": "free"})
    created["metadata"]["plan"] = "changed by the test"
    fake.users[0]["metadata"]["plan"] = "changed by the test"
    fake.events[0]["data"]["metadata"]["plan"] = "changed by the test"
    assert fake.users[0]["metadata"] == {"plan": "free"}
    assert fake.events[0]["data"]["metadata"] == {"plan": "free"}
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE_URL) as client:
        response = await client.get(
            "/events",
            params={"events": "user.created", "limit": 1},
            headers={"Authorization": "Bearer sk_test_key"},
        )
    body = json.loads(response.content)
    assert body["data"][0]["data"]["metadata"] == {"plan": "free"}
    assert body["list_metadata"]["after"] is None  # the last page says so
