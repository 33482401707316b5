"""One run at a time across instances (the lease), and the background poller's life cycle."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import AuthKit, ConfigurationError, Event, WorkOSLease, WorkOSUser
from fastapi_workos_authkit._recovery.lease import Lease, LeaseLostError
from fastapi_workos_authkit._sync.database import create_tables, make_engine
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS
from tests.test_reconcile import Sleeps, db_users, fake_users, make_kit

pytestmark = pytest.mark.anyio


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (the things awaited live in threads and other tasks)."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - a thread or a poller flips it, not an Event
            await anyio.sleep(0.01)


def test_a_crashed_holders_lease_expires(engine: Engine) -> None:
    create_tables(engine)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    clock = {"now": t0}

    def now() -> datetime:
        return clock["now"]

    first = Lease(engine, "sync_events", ttl=60, now=now)
    second = Lease(engine, "sync_events", ttl=60, now=now)
    assert first.acquire() is None
    assert second.acquire() == first.holder
    assert Lease(engine, "backfill_users", now=now).acquire() is None  # another job, another lease

    clock["now"] = t0 + timedelta(seconds=30)
    first.renew()  # past a third of the ttl, so this pushes the expiry to +90
    clock["now"] = t0 + timedelta(seconds=89)
    assert second.acquire() == first.holder  # renewed at +30, so it holds until +90

    clock["now"] = t0 + timedelta(seconds=91)  # first "crashed": it never renewed again
    assert second.acquire() is None
    with pytest.raises(LeaseLostError, match="Lost the 'sync_events' lease"):
        first.renew(force=True)
    first.release()  # not ours any more: a no-op
    with Session(engine) as session:
        lease = session.get(WorkOSLease, "sync_events")
        assert lease is not None
        assert lease.holder == second.holder
    second.release()
    with Session(engine) as session:
        assert session.get(WorkOSLease, "sync_events") is None


def test_lease_needs_a_positive_ttl(engine: Engine) -> None:
    with pytest.raises(ValueError, match="positive ttl"):
        Lease(engine, "x", ttl=0)


@pytest.mark.postgres_only
async def test_two_instances_sync_at_once_and_only_one_proceeds(
    database_url: str, engine: Engine
) -> None:
    create_tables(engine)
    fake = FakeWorkOS()
    for _ in range(3):
        fake.create_user()
    entered = threading.Event()
    release = threading.Event()
    first = make_kit(engine, fake, Sleeps())

    @first.on("user.created")
    def slow(session: Session, event: Event[Any]) -> None:
        entered.set()
        release.wait(timeout=30)

    other_engine = make_engine(database_url)
    second = make_kit(other_engine, fake, Sleeps())
    results: dict[str, Any] = {}

    async def run_first() -> None:
        results["first"] = await first.sync_events()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run_first)
            await wait_until(entered.is_set)
            # The first instance is mid-run, holding the lease: the second does nothing.
            results["second"] = await second.sync_events()
            release.set()
    finally:
        release.set()
        await first.shutdown()
        await second.shutdown()
        other_engine.dispose()
    assert results["second"].ran is False
    assert results["second"].lease_holder
    assert results["second"].fetched == 0
    assert results["first"].ran is True
    assert results["first"].processed == 3
    assert db_users(engine) == fake_users(fake)


async def test_poller_runs_from_the_lifespan_and_stops_cleanly(engine: Engine) -> None:
    fake = FakeWorkOS()
    fake.create_user()
    kit = make_kit(engine, fake, Sleeps(), events_poll_interval=0.01)
    async with kit.lifespan():
        poller = kit.events_poller
        assert poller is not None
        assert poller.running
        await wait_until(lambda: poller.runs >= 1)
        fake.create_user()
        await wait_until(lambda: len(db_users(engine)) == 2)
    assert kit.events_poller is None
    assert not poller.running
    assert poller.failures == 0
    assert db_users(engine) == fake_users(fake)
    with Session(engine) as session:
        assert session.exec(select(WorkOSLease)).all() == []  # given back on the way out


async def test_poller_survives_failing_runs(engine: Engine) -> None:
    fake = FakeWorkOS(api_key="sk_other_key")  # every call is refused with 401
    kit = make_kit(engine, fake, Sleeps(), events_poll_interval=0.01)
    async with kit.lifespan():
        poller = kit.events_poller
        assert poller is not None
        await wait_until(lambda: poller.failures >= 2)
        assert poller.running
    with Session(engine) as session:
        assert session.exec(select(WorkOSUser)).all() == []


async def test_poller_is_stopped_mid_run_without_losing_the_lease(engine: Engine) -> None:
    fake = FakeWorkOS()
    fake.create_user()
    entered = threading.Event()
    release = threading.Event()
    kit = make_kit(engine, fake, Sleeps(), events_poll_interval=30)

    @kit.on("user.created")
    def slow(session: Session, event: Event[Any]) -> None:
        entered.set()
        release.wait(timeout=30)

    async with kit.lifespan():
        await wait_until(entered.is_set)
        # Shutdown cancels the run; the worker thread finishes its event first.
        threading.Timer(0.05, release.set).start()
    with Session(engine) as session:
        assert session.exec(select(WorkOSLease)).all() == []
    assert db_users(engine) == fake_users(fake)


def test_poller_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="events_poll_interval"):
        AuthKit(events_poll_interval=0)
    with pytest.raises(ConfigurationError, match="aware"):
        AuthKit(events_range_start=datetime(2026, 1, 1))


async def test_poller_needs_an_api_key(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKOS_API_KEY", raising=False)
    kit = AuthKit(engine=engine, events_poll_interval=5)
    with pytest.raises(ConfigurationError, match="WORKOS_API_KEY"):
        await kit.startup()
    await kit.shutdown()
