"""Recovery for every mirrored kind: the organizations and memberships REST calls and
backfills, `sync_events` pulling (and, after an upgrade, catching up) the new event types,
pruning sessions and every kind's tombstones, and `status` counts per kind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import AuthKit, ConfigurationError, WorkOSEventRecord
from fastapi_workos_authkit._recovery import (
    EVENTS_CATCH_UP_CURSOR,
    EVENTS_CATCH_UP_POSITION,
    EVENTS_CATCH_UP_TYPES,
    EVENTS_CURSOR,
    EVENTS_POSITION,
    EVENTS_TYPES,
    MEMBERSHIPS_CURSOR,
    ORGANIZATIONS_CURSOR,
    EventTypesChangedError,
)
from fastapi_workos_authkit._recovery.lease import Lease
from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSAPIError, WorkOSClient
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit._sync.events import parse_event
from fastapi_workos_authkit._sync.tables import (
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSTombstone,
    WorkOSUserTombstone,
)
from fastapi_workos_authkit.cli import ExitCode
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS, FakeWorkOSServer
from tests.conftest import WEBHOOK_SECRET
from tests.org_directory import MEMBERSHIPS, OrgDirectory
from tests.test_cli import app_dir as app_dir
from tests.test_cli import cli_env, run_cli
from tests.test_reconcile import BASE_URL, Sleeps, state
from tests.test_reconcile_recovery import write_state as write_state_row

pytestmark = pytest.mark.anyio

ALL_STATUSES = "active,inactive,pending"


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key="sk_test_key")


@pytest.fixture
def directory(fake: FakeWorkOS) -> OrgDirectory:
    return OrgDirectory(fake)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now.timestamp()


def make_kit(engine: Engine, directory: OrgDirectory, **options: Any) -> AuthKit:
    kit = AuthKit(
        api_key="sk_test_key",
        webhook_secret=WEBHOOK_SECRET,
        api_base_url=BASE_URL,
        engine=engine,
        http_transport=directory.transport(),
        **options,
    )
    kit.workos_api = WorkOSClient(
        base_url=BASE_URL,
        api_key="sk_test_key",
        transport=directory.transport(),
        retry=RetryPolicy(attempts=2),
        sleep=Sleeps(),
    )
    return kit


@pytest.fixture
async def kit(engine: Engine, directory: OrgDirectory) -> AsyncIterator[AuthKit]:
    create_tables(engine)
    kit = make_kit(engine, directory)
    yield kit
    await kit.shutdown()


def client(directory: OrgDirectory) -> WorkOSClient:
    return WorkOSClient(
        base_url=BASE_URL, api_key="sk_test_key", transport=directory.transport(), sleep=Sleeps()
    )


def organizations(engine: Engine) -> dict[str, str | None]:
    with Session(engine) as session:
        return {o.id: o.name for o in session.exec(select(WorkOSOrganization)).all()}


def memberships(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.exec(select(WorkOSOrganizationMembership)).all()
        return {m.id: m.status for m in rows}


# -- the REST client -----------------------------------------------------------------------


async def test_organizations_and_memberships_endpoints(directory: OrgDirectory) -> None:
    acme = directory.create_organization(name="Acme")
    pending = directory.create_membership("user_01", acme["id"], status="pending")
    async with client(directory) as api:
        page = await api.list_organizations()
        assert [o.id for o in page.data] == [acme["id"]]
        assert (await api.get_organization(acme["id"])).name == "Acme"  # type: ignore[union-attr]
        assert await api.get_organization("org_missing") is None
        listed = await api.list_organization_memberships(organization_id=acme["id"])
        assert [(m.id, m.status) for m in listed.data] == [(pending["id"], "pending")]
        by_user = await api.list_organization_memberships(user_id="user_01", statuses=("active",))
        assert by_user.data == []
        one = await api.get_organization_membership(pending["id"])
        assert one is not None
        assert one.organization_id == acme["id"]
        assert await api.get_organization_membership("om_missing") is None
        with pytest.raises(ValueError, match="organization_id or user_id"):
            await api.list_organization_memberships()
        before = len(directory.requests)
        for call in (
            api.get_organization("../users"),
            api.get_organization_membership("om 1"),
            api.list_organization_memberships(organization_id="org/x"),
            api.list_organization_memberships(user_id="user_1&limit=1"),
        ):
            with pytest.raises(WorkOSAPIError, match="implausible"):
                await call
        assert len(directory.requests) == before  # nothing sent
    queries = [query for path, query, _ in directory.requests if path == MEMBERSHIPS]
    assert queries[0]["statuses"] == ALL_STATUSES
    assert queries[1] == {
        "limit": "100",
        "order": "asc",
        "user_id": "user_01",
        "statuses": "active",
    }


async def test_a_2xx_that_is_no_organization_names_the_problem_not_the_body(
    directory: OrgDirectory,
) -> None:
    directory.organizations.append({"object": "organization", "id": "org_1", "name": "Secret Co"})
    directory.memberships.append(
        {"object": "organization_membership", "id": "om_1", "user_id": 7, "status": "active"}
    )
    async with client(directory) as api:
        with pytest.raises(WorkOSAPIError, match="updated_at") as missing:
            await api.list_organizations()
        assert "Secret Co" not in str(missing.value)
        with pytest.raises(WorkOSAPIError, match="not a membership object") as wrong:
            await api.get_organization_membership("om_1")
        assert "user_id" in str(wrong.value)


# -- backfills -----------------------------------------------------------------------------


async def test_backfill_organizations_pages_runs_handlers_and_resumes_after_a_failure(
    kit: AuthKit, directory: OrgDirectory, engine: Engine
) -> None:
    ids = [directory.create_organization(name=f"Org {n}")["id"] for n in range(250)]
    created: list[str] = []
    kit.add_handler("organization.created", lambda s, e: created.append(e.data.id))
    # Page 2 is refused (a 400 is not retried); page 1 was fetched first.
    directory.fail("/organizations", 400, skip=1)
    with pytest.raises(WorkOSAPIError, match="400"):
        await kit.backfill_organizations()
    assert sorted(organizations(engine)) == sorted(ids[:100])
    assert state(engine, ORGANIZATIONS_CURSOR) == ids[99]
    assert created == ids[:100]

    progress: list[int] = []
    result = await kit.backfill_organizations(progress=lambda p: progress.append(p.done))
    assert (result.resumed_from, result.pages, result.inserted, result.completed) == (
        ids[99],
        2,
        150,
        True,
    )
    assert progress == [100, 150]
    assert len(organizations(engine)) == 250
    assert created == ids
    assert state(engine, ORGANIZATIONS_CURSOR) is None

    directory.organizations[0]["name"] = "Renamed"
    directory.organizations[0]["updated_at"] = factories.iso(datetime.now(UTC) + timedelta(1))
    quiet = await kit.backfill_organizations(run_handlers=False)
    assert (quiet.updated, quiet.unchanged, len(created)) == (1, 249, 250)
    assert organizations(engine)[ids[0]] == "Renamed"


async def test_backfill_memberships_lists_every_status_per_organization_and_resumes(
    kit: AuthKit, directory: OrgDirectory, engine: Engine
) -> None:
    big = directory.create_organization(name="Big")["id"]
    empty = directory.create_organization(name="Empty")["id"]
    small = directory.create_organization(name="Small")["id"]
    statuses = ("active", "inactive", "pending")
    in_big = [
        directory.create_membership(f"user_{n}", big, status=statuses[n % 3])["id"]
        for n in range(150)
    ]
    in_small = [
        directory.create_membership("user_1", small, status=status)["id"] for status in statuses
    ]
    # The big organization's second page is refused.
    directory.fail(MEMBERSHIPS, 400, skip=1)
    with pytest.raises(WorkOSAPIError, match="400"):
        await kit.backfill_memberships()
    assert sorted(memberships(engine)) == sorted(in_big[:100])
    assert state(engine, MEMBERSHIPS_CURSOR) == f"{big}/{in_big[99]}"

    del directory.requests[:]
    result = await kit.backfill_memberships(run_handlers=False)
    assert result.resumed_from == f"{big}/{in_big[99]}"
    assert (result.inserted, result.completed) == (53, True)
    stored = memberships(engine)
    assert sorted(stored) == sorted(in_big + in_small)
    assert sorted(stored[m] for m in in_small) == sorted(statuses)
    listed = [(path, query) for path, query, _ in directory.requests]
    # It resumes inside the big organization, then lists the organizations after it.
    assert listed[0] == (
        MEMBERSHIPS,
        {
            "limit": "100",
            "order": "asc",
            "after": in_big[99],
            "organization_id": big,
            "statuses": ALL_STATUSES,
        },
    )
    assert listed[1][0] == "/organizations"
    assert listed[1][1]["after"] == big
    assert [q["organization_id"] for p, q in listed if p == MEMBERSHIPS][1:] == [empty, small]
    assert all(q["statuses"] == ALL_STATUSES for p, q in listed if p == MEMBERSHIPS)


async def test_a_backfill_skips_while_another_instance_holds_its_lease(
    kit: AuthKit, directory: OrgDirectory, engine: Engine
) -> None:
    directory.create_organization()
    for job in ("backfill_organizations", "backfill_memberships"):
        rival = Lease(engine, job, ttl=60)
        assert rival.acquire() is None
        result = await getattr(kit, job)()
        assert (result.ran, result.lease_holder) == (False, rival.holder)
        rival.release()
    assert organizations(engine) == {}


async def test_backfilling_a_kind_that_is_not_mirrored_is_refused(
    engine: Engine, directory: OrgDirectory
) -> None:
    create_tables(engine)
    kit = make_kit(engine, directory, mirror=frozenset({"session"}))
    for job, kind in (
        (kit.backfill_organizations, "'organization'"),
        (kit.backfill_memberships, "'organization_membership'"),
    ):
        with pytest.raises(ConfigurationError, match=rf"add {kind} to AuthKit\(mirror=...\)"):
            await job()
    assert directory.requests == []
    await kit.shutdown()


# -- sync_events ---------------------------------------------------------------------------


async def test_sync_events_pulls_the_types_of_every_mirrored_kind(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    user = fake.create_user()
    organization = factories.organization(name="Acme")
    fake.add_event("organization.created", organization)
    fake.add_event(
        "organization_membership.created",
        factories.organization_membership(user["id"], organization["id"], status="pending"),
    )
    fake.add_event("session.created", factories.session(user["id"], "session_01"))
    result = await kit.sync_events()
    assert result.processed == 4
    asked = fake.requests[-1].params("events")[0].split(",")
    assert {
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organization_membership.created",
        "organization_membership.updated",
        "organization_membership.deleted",
        "session.created",
        "session.revoked",
        "user.created",
    } <= set(asked)
    assert organizations(engine) == {organization["id"]: "Acme"}
    assert list(memberships(engine).values()) == ["pending"]
    with Session(engine) as session:
        assert session.get(WorkOSSession, "session_01") is not None


async def test_sync_events_of_an_app_that_mirrors_no_optional_kind_pulls_user_events_only(
    engine: Engine, directory: OrgDirectory, fake: FakeWorkOS
) -> None:
    create_tables(engine)
    kit = make_kit(engine, directory, mirror=frozenset())
    result = await kit.sync_events()
    assert result.event_types == ["user.created", "user.deleted", "user.updated"]
    await kit.shutdown()


# The state rows exactly as the version before organizations were mirrored wrote them: the
# user event types, the id of the last event processed and its created_at.
OLD_TYPES = "user.created,user.deleted,user.updated"


def old_cursor(engine: Engine, event: dict[str, Any]) -> None:
    stamp = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
    write_state_row(engine, EVENTS_TYPES, OLD_TYPES)
    write_state_row(engine, EVENTS_CURSOR, event["id"])
    write_state_row(engine, EVENTS_POSITION, stamp.astimezone(UTC).isoformat())


async def test_an_upgraded_deployment_catches_the_new_types_up_and_keeps_its_cursor(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    early_org = factories.organization(name="Early")
    fake.add_event("organization.created", early_org)
    old_user = fake.create_user()
    synced = fake.events[-1]  # the last event the old version processed
    old_cursor(engine, synced)
    renamed = fake.update_user(old_user["id"], first_name="Renamed")
    late_org = factories.organization(name="Late")
    fake.add_event("organization.created", late_org)
    fake.add_event(
        "organization_membership.created",
        factories.organization_membership(old_user["id"], late_org["id"]),
    )
    fake.add_event("session.created", factories.session(old_user["id"], "session_01"))
    handled: list[str] = []
    kit.add_handler("user.updated", lambda s, e: handled.append(e.event))
    kit.add_handler("user.created", lambda s, e: handled.append(e.event))

    result = await kit.sync_events()

    # Nothing refused; user events continue after the old cursor (the user.created it had
    # processed is not fetched again) and the new kinds are caught up from their own start.
    assert handled == ["user.updated"]
    assert result.catch_up_types == sorted(
        {
            "organization.created",
            "organization.updated",
            "organization.deleted",
            "organization_membership.created",
            "organization_membership.updated",
            "organization_membership.deleted",
            "session.created",
            "session.revoked",
        }
    )
    assert (result.processed, result.failed) == (5, 0)
    assert organizations(engine) == {early_org["id"]: "Early", late_org["id"]: "Late"}
    assert len(memberships(engine)) == 1
    with Session(engine) as session:
        ledger = {r.id for r in session.exec(select(WorkOSEventRecord)).all()}
    assert synced["id"] not in ledger
    # One cursor again, for every type, where the user events got to.
    assert state(engine, EVENTS_TYPES) == ",".join(result.event_types)
    assert state(engine, EVENTS_CURSOR) == fake.events[1 + 1]["id"]  # the user.updated
    assert renamed["first_name"] == "Renamed"
    for key in (EVENTS_CATCH_UP_TYPES, EVENTS_CATCH_UP_CURSOR, EVENTS_CATCH_UP_POSITION):
        assert state(engine, key) is None

    fake.update_user(old_user["id"], first_name="Again")
    fake.add_event(
        "organization.updated", {**late_org, "name": "Later", "updated_at": "2099-01-01T00:00:00Z"}
    )
    again = await kit.sync_events()
    assert again.catch_up_types == []
    assert again.processed == 2
    # The catch-up's events after the main cursor come once more, and the ledger skips them.
    assert again.duplicates == 3
    assert organizations(engine)[late_org["id"]] == "Later"


async def test_an_interrupted_catch_up_resumes_and_prune_respects_it(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    user = fake.create_user()
    old_cursor(engine, fake.events[-1])
    for n in range(3):
        fake.add_event("organization.created", factories.organization(name=f"Org {n}"))
    fake.update_user(user["id"], first_name="Later")
    # The main pass gets its page; the catch-up pass is refused.
    fake.fail_with_status(status=400, path="/events", skip=1)
    with pytest.raises(WorkOSAPIError):
        await kit.sync_events()
    assert state(engine, EVENTS_TYPES) == OLD_TYPES
    assert state(engine, EVENTS_CATCH_UP_TYPES) is not None
    position = state(engine, EVENTS_CATCH_UP_POSITION)
    assert position is not None
    pruned = await kit.prune(ledger_retention=timedelta(days=3))
    assert pruned.sync_position == position  # the catch-up's start bounds the prune

    result = await kit.sync_events()
    assert result.processed == 3
    assert len(organizations(engine)) == 3
    assert state(engine, EVENTS_CATCH_UP_TYPES) is None


async def test_an_upgrade_with_a_handler_added_meanwhile_still_refuses(
    kit: AuthKit, fake: FakeWorkOS, engine: Engine
) -> None:
    fake.create_user()
    old_cursor(engine, fake.events[-1])
    kit.add_handler("role.created", lambda s, e: None)
    with pytest.raises(EventTypesChangedError, match=r"new: .*role\.created"):
        await kit.sync_events()
    assert state(engine, EVENTS_CATCH_UP_TYPES) is None
    assert state(engine, EVENTS_TYPES) == OLD_TYPES


# -- prune and status ----------------------------------------------------------------------


async def test_prune_deletes_old_sessions_and_every_kinds_tombstones_within_the_bound(
    engine: Engine, directory: OrgDirectory
) -> None:
    create_tables(engine)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    clock = Clock(now)
    kit = make_kit(engine, directory, clock=clock)
    ago = lambda days: now - timedelta(days=days)  # noqa: E731

    def process(payload: dict[str, Any]) -> None:
        kit.pipeline.process(parse_event(payload), payload, source="webhook")

    for days in (40, 1):
        # A tombstone is stamped with its delete event's created_at.
        for event_type, data in (
            ("user.deleted", {"id": f"user_{days}"}),
            ("organization.deleted", {"id": f"org_{days}"}),
            ("organization_membership.deleted", {"id": f"om_{days}"}),
        ):
            process(factories.event(event_type, data, created_at=ago(days)))
    process(factories.session_revoked("user_1", session_id="session_old", created_at=ago(10)))
    process(factories.session_revoked("user_1", session_id="session_new", created_at=ago(2)))
    process(
        factories.session_created(
            "user_1", session_id="session_lapsed", created_at=ago(20), expires_at=ago(13)
        )
    )
    process(factories.session_created("user_1", session_id="session_live", created_at=ago(1)))

    with pytest.raises(ValueError, match="session_retention must be at least 3 days"):
        await kit.prune(session_retention=timedelta(days=2))

    # The Events API cursor is 15 days back: nothing from after it may go.
    write_state_row(engine, EVENTS_POSITION, ago(15).isoformat())
    bounded = await kit.prune()
    assert bounded.sessions_deleted == 0  # session_old ended after the sync position
    assert bounded.tombstones_by_kind == {
        "user": 1,
        "organization": 1,
        "organization_membership": 1,
    }
    assert bounded.tombstones_deleted == 3

    write_state_row(engine, EVENTS_POSITION, now.isoformat())
    result = await kit.prune()
    assert (result.sessions_deleted, result.tombstones_deleted) == (2, 0)
    assert result.sessions_before == ago(7).isoformat()
    with Session(engine) as session:
        left = sorted(s.id for s in session.exec(select(WorkOSSession)).all())
        assert left == ["session_live", "session_new"]
        assert len(session.exec(select(WorkOSTombstone)).all()) == 2
        assert len(session.exec(select(WorkOSUserTombstone)).all()) == 1

    status = await kit.sync_status()
    assert {name: (c.rows, c.tombstones) for name, c in status.kinds.items()} == {
        "user": (0, 1),
        "organization": (0, 1),
        "organization_membership": (0, 1),
        "session": (2, 0),
    }
    assert (status.users, status.tombstones) == (0, 1)
    await kit.shutdown()


# -- the command line ----------------------------------------------------------------------


def test_cli_backfills_organizations_and_memberships(
    fake: FakeWorkOS, app_dir: Any, database_url: str, engine: Engine
) -> None:
    directory = OrgDirectory(fake)
    acme = directory.create_organization(name="Acme")
    for status in ("active", "inactive", "pending"):
        directory.create_membership(factories.new_id("user"), acme["id"], status=status)
    with FakeWorkOSServer(directory) as server:  # type: ignore[arg-type]
        env = cli_env(server, database_url, WORKOS_API_KEY="sk_test_key")
        orgs = run_cli(app_dir, "--app", "cliapp:authkit", "backfill-organizations", env=env)
        assert orgs.returncode == 0, orgs.stderr
        assert orgs.stdout.startswith(
            "backfill-organizations: 1 organizations in 1 pages: 1 inserted"
        )
        members = run_cli(
            app_dir, "--app", "cliapp:authkit", "--json", "backfill-memberships", env=env
        )
        assert members.returncode == 0, members.stderr
        summary = json.loads(members.stdout)
        assert (summary["inserted"], summary["completed"]) == (3, True)
        bare = run_cli(app_dir, "backfill-memberships", env=env)
        assert bare.returncode == ExitCode.USAGE
        assert "backfill-memberships needs --app" in bare.stderr
    assert sorted(memberships(engine).values()) == ["active", "inactive", "pending"]


def test_cli_prune_sessions_days_and_status_per_kind(
    app_dir: Any,
    database_url: str,
    engine: Engine,
) -> None:
    create_tables(engine)
    env = {"AUTHKIT_DATABASE_URL": database_url}
    refused = run_cli(app_dir, "prune", "--sessions-days", "1", env=env)
    assert refused.returncode == ExitCode.USAGE
    assert "session_retention must be at least 3 days" in refused.stderr
    pruned = run_cli(app_dir, "prune", "--sessions-days", "10", env=env)
    assert pruned.returncode == ExitCode.OK, pruned.stderr
    assert "0 sessions ended or expired before" in pruned.stdout
    status = run_cli(app_dir, "--json", "status", env=env)
    kinds = json.loads(status.stdout)["kinds"]
    assert kinds["session"] == {"rows": 0, "tombstones": 0}
    assert set(kinds) == {"user", "organization", "organization_membership", "session"}
    text = run_cli(app_dir, "status", env=env)
    assert "  organization_membership: 0 rows, 0 tombstones" in text.stdout
