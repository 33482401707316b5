"""Organizations, memberships and sessions mirrored: the cases the issue names, one by one.

Every test delivers signed webhooks to a real app over HTTP (or applies REST snapshots through
the pipeline) and reads the tables back, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import (
    AuthKit,
    AuthSession,
    ConfigurationError,
    Effect,
    Event,
    InvalidEventError,
    Organization,
    OrganizationMembership,
    WorkOSEventRecord,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSTombstone,
    WorkOSUser,
    WorkOSUserTombstone,
)
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit._sync.mirror import (
    KindCount,
    apply_deletion,
    apply_snapshots,
    count_rows,
    get_membership,
    is_tombstoned,
    kind_named,
    prune_ended_sessions,
    prune_tombstones,
    session_status,
)
from fastapi_workos_authkit._sync.pipeline import SyncSession
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio


def record_handlers(authkit: AuthKit, *types: str) -> list[tuple[str, str]]:
    """Register a handler on each type that records ``(handler type, data id)``."""
    calls: list[tuple[str, str]] = []
    for handler_type in types:

        def handler(session: Session, event: Event[Any], handler_type: str = handler_type) -> None:
            calls.append((handler_type, event.data.id))

        authkit.on(handler_type)(handler)
    return calls


ORG_TYPES = ("organization.created", "organization.updated", "organization.deleted")
MEMBERSHIP_TYPES = (
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
)


async def test_an_organization_is_mirrored_as_sent(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    created = factories.organization_created(
        "Acme",
        organization_id="org_01ACME",
        domains=["acme.test"],
        external_id="ext-1",
        metadata={"tier": "gold"},
        created_at=at(0),
        allow_profiles_outside_organization=False,  # a field the table does not know
    )
    assert (await deliver(client, created)).status_code == 200
    with Session(engine) as session:
        row = session.get(WorkOSOrganization, "org_01ACME")
        assert row is not None
        assert (row.name, row.external_id, row.organization_metadata) == (
            "Acme",
            "ext-1",
            {"tier": "gold"},
        )
        assert row.domains == created["data"]["domains"]
        assert row.updated_at == at(0)


async def test_a_membership_before_its_user_and_organization_is_stored(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    calls = record_handlers(authkit, *MEMBERSHIP_TYPES)
    membership = factories.organization_membership_created(
        "user_01LATER",
        "org_01LATER",
        membership_id="om_01EARLY",
        role="admin",
        roles=["admin", "billing"],
        created_at=at(0),
    )
    assert (await deliver(client, membership)).status_code == 200
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_01LATER") is None
        assert session.get(WorkOSOrganization, "org_01LATER") is None
        row = get_membership(session, "user_01LATER", "org_01LATER")
        assert row is not None
        assert (row.id, row.status, row.role, row.roles) == (
            "om_01EARLY",
            "active",
            "admin",
            ["admin", "billing"],
        )
        assert get_membership(session, "user_01LATER", "org_01OTHER") is None
    assert calls == [("organization_membership.created", "om_01EARLY")]
    # The user and the organization arrive afterwards: nothing about the membership changes.
    assert (await deliver(client, factories.user_created("user_01LATER"))).status_code == 200
    org = factories.organization_created("Later", organization_id="org_01LATER")
    assert (await deliver(client, org)).status_code == 200
    with Session(engine) as session:
        assert session.get(WorkOSOrganizationMembership, "om_01EARLY") is not None


async def test_an_update_before_its_create_inserts_and_runs_created_handlers(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    calls = record_handlers(authkit, *MEMBERSHIP_TYPES)
    update = factories.organization_membership_updated(
        "om_01U", "user_01U", "org_01U", status="inactive", created_at=at(0), updated_at=at(5)
    )
    create = factories.organization_membership_created(
        "user_01U", "org_01U", membership_id="om_01U", created_at=at(0)
    )
    assert (await deliver(client, update)).status_code == 200
    assert (await deliver(client, create)).status_code == 200  # older: a no-op
    with Session(engine) as session:
        row = session.get(WorkOSOrganizationMembership, "om_01U")
        assert row is not None
        assert row.status == "inactive"
    assert calls == [("organization_membership.created", "om_01U")]


@pytest.mark.parametrize("kind", ["organization", "organization_membership"])
async def test_a_tombstone_blocks_a_late_create_or_update(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient, kind: str
) -> None:
    calls = record_handlers(authkit, *ORG_TYPES, *MEMBERSHIP_TYPES)
    if kind == "organization":
        create = factories.organization_created("Gone", organization_id="org_01GONE")
        update = factories.organization_updated("org_01GONE", name="Back?", updated_at=at(10**6))
        delete = factories.organization_deleted("org_01GONE", id_only=True)
        object_id, table = "org_01GONE", WorkOSOrganization
    else:
        create = factories.organization_membership_created(
            "user_01G", "org_01G", membership_id="om_01GONE"
        )
        update = factories.organization_membership_updated(
            "om_01GONE", "user_01G", "org_01G", updated_at=at(10**6)
        )
        delete = factories.organization_membership_deleted("om_01GONE", "user_01G", "org_01G")
        object_id, table = "om_01GONE", WorkOSOrganizationMembership
    # The delete first (never seen): a tombstone all the same, and no handler.
    for event in (delete, create, update):
        assert (await deliver(client, event)).status_code == 200
    with Session(engine) as session:
        assert session.get(table, object_id) is None
        assert is_tombstoned(session, kind_named(kind), object_id)
        tombstone = session.get(WorkOSTombstone, (kind, object_id))
        assert tombstone is not None
        assert tombstone.event_id == delete["id"]
        # Tombstones are per kind: the same id of another kind is not deleted.
        other = "organization_membership" if kind == "organization" else "organization"
        assert not is_tombstoned(session, kind_named(other), object_id)
        ledger = session.exec(select(WorkOSEventRecord)).all()
        assert {record.status for record in ledger} == {"processed"}
    assert calls == []


async def test_a_delete_of_a_stored_organization_runs_deleted_handlers_once(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    calls = record_handlers(authkit, *ORG_TYPES)
    create = factories.organization_created("Acme", organization_id="org_01DEL")
    delete = factories.organization_deleted("org_01DEL")
    for event in (create, delete, delete, create):
        assert (await deliver(client, event)).status_code == 200
    assert calls == [("organization.created", "org_01DEL"), ("organization.deleted", "org_01DEL")]


async def test_a_session_revoked_before_its_create_stays_revoked(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    calls = record_handlers(authkit, "session.created", "session.revoked")
    revoked = factories.session_revoked(
        "user_01S", session_id="session_01R", created_at=at(0), updated_at=at(60)
    )
    created = factories.session_created(
        "user_01S", session_id="session_01R", organization_id="org_01S", created_at=at(0)
    )
    assert (await deliver(client, revoked)).status_code == 200
    assert (await deliver(client, created)).status_code == 200
    with Session(engine) as session:
        row = session.get(WorkOSSession, "session_01R")
        assert row is not None
        assert (row.status, row.user_id, row.ended_at) == ("revoked", "user_01S", at(60))
        assert session_status(session, "session_01R") == "revoked"
        assert session_status(session, "session_01UNKNOWN") is None
    assert calls == [("session.revoked", "session_01R")]


async def test_session_revoked_marks_the_session_revoked_whatever_its_data_says(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    calls = record_handlers(authkit, "session.created", "session.revoked")
    created = factories.session_created("user_01S", session_id="session_01X", created_at=at(0))
    # An older payload, still saying "active": the event type decides, not the snapshot.
    revoked = factories.session_revoked(
        "user_01S", session_id="session_01X", status="active", created_at=at(0)
    )
    for event in (created, revoked, revoked):
        assert (await deliver(client, event)).status_code == 200
    with Session(engine) as session:
        assert session_status(session, "session_01X") == "revoked"
    assert calls == [("session.created", "session_01X"), ("session.revoked", "session_01X")]


@pytest.mark.parametrize("ended", ["revoked", "expired"])
def test_an_ended_session_never_becomes_active_again(authkit: AuthKit, ended: str) -> None:
    calls = record_handlers(authkit, "session.created", "session.revoked")
    create_tables(authkit.engine)
    ended_snapshot = AuthSession.model_validate(
        factories.session("user_01T", "session_01T", status=ended, updated_at=at(10))
    )
    later_active = AuthSession.model_validate(
        factories.session("user_01T", "session_01T", created_at=at(0), updated_at=at(10**6))
    )
    expected = Effect.REVOKED if ended == "revoked" else Effect.INSERTED
    assert authkit.pipeline.apply_snapshot("session", ended_snapshot, source="jit") == expected
    assert authkit.pipeline.apply_snapshot("session", later_active) == Effect.UNCHANGED
    with Session(authkit.engine) as session:
        assert session_status(session, "session_01T") == ended
    # Handlers follow the effective change: a revoked session's handlers, once.
    assert calls == (
        [("session.revoked", "session_01T")]
        if ended == "revoked"
        else [("session.created", "session_01T")]
    )


def test_snapshots_of_every_kind_go_through_the_same_rules(authkit: AuthKit) -> None:
    create_tables(authkit.engine)
    seen: list[str] = []
    authkit.on("organization.created")(lambda session, event: seen.append(event.id))
    authkit.on("organization.updated")(lambda session, event: seen.append(event.id))
    pipeline = authkit.pipeline

    def org(updated: float, name: str) -> Organization:
        data = factories.organization("org_01SNAP", name=name, created_at=at(0))
        data["updated_at"] = factories.iso(at(updated))
        return Organization.model_validate(data)

    assert pipeline.apply_snapshot("organization", org(0, "A"), source="jit") == Effect.INSERTED
    assert pipeline.apply_snapshot("organization", org(0, "B")) == Effect.UNCHANGED
    assert pipeline.apply_snapshot("organization", org(5, "C"), source="backfill") == (
        Effect.UPDATED
    )
    assert seen == ["jit_org_01SNAP_1768478400000", "backfill_org_01SNAP_1768478405000"]
    membership = OrganizationMembership.model_validate(
        factories.organization_membership("user_01M", "org_01SNAP", "om_01SNAP", role="admin")
    )
    assert pipeline.apply_snapshot("organization_membership", membership) == Effect.INSERTED
    with Session(authkit.engine) as session:
        row = session.get(WorkOSOrganization, "org_01SNAP")
        assert row is not None
        assert row.name == "C"
        found = get_membership(session, "user_01M", "org_01SNAP")
        assert found is not None
        assert found.role == "admin"
    # A snapshot the table cannot hold is refused before any write.
    no_version = Organization.model_validate({"id": "org_01NOVERSION", "name": "X"})
    with pytest.raises(InvalidEventError, match=r"data\.updated_at"):
        pipeline.apply_snapshot("organization", no_version)
    with pytest.raises(ValueError, match="Unknown mirrored kind 'team'"):
        pipeline.apply_snapshot("team", no_version)


async def test_a_kind_turned_off_only_runs_its_handlers(engine: Engine) -> None:
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine, mirror=["session"])
    calls = record_handlers(authkit, *ORG_TYPES, *MEMBERSHIP_TYPES)
    org_update = factories.organization_updated("org_01OFF", updated_at=at(5))
    stale_update = factories.organization_updated("org_01OFF", updated_at=at(1))
    membership = factories.organization_membership_created(
        "user_01OFF", "org_01OFF", membership_id="om_01OFF"
    )
    async with app_client(authkit) as client:
        for event in (org_update, stale_update, membership):
            assert (await deliver(client, event)).status_code == 200
        assert (await deliver(client, membership)).status_code == 200  # duplicate: ledger
    with Session(engine) as session:
        assert session.exec(select(WorkOSOrganization)).all() == []
        assert session.exec(select(WorkOSOrganizationMembership)).all() == []
        assert len(session.exec(select(WorkOSEventRecord)).all()) == 3
    # Their own type, every one of them, as for any event type that changes no table.
    assert calls == [
        ("organization.updated", "org_01OFF"),
        ("organization.updated", "org_01OFF"),
        ("organization_membership.created", "om_01OFF"),
    ]
    with pytest.raises(ConfigurationError, match="add 'organization' to AuthKit"):
        authkit.pipeline.apply_snapshot(
            "organization", Organization.model_validate(org_update["data"])
        )


def test_an_unknown_kind_to_mirror_is_a_configuration_error() -> None:
    # The message names the option, the allowed kinds and the value given.
    with pytest.raises(
        ConfigurationError, match=r"mirror: .*'organization_membership'.*organizations"
    ):
        AuthKit(webhook_secret=WEBHOOK_SECRET, mirror=["organizations"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (
            factories.organization_created(organization_id="org_" + "x" * 80),
            "data.id is longer than 64",
        ),
        (
            factories.organization_membership_created("user_" + "x" * 80, "org_01"),
            "data.user_id is longer than 64",
        ),
        (
            factories.organization_membership_created("user_01", "org_01", status="s" * 40),
            "data.status is longer than 32",
        ),
        (
            factories.session_created("user_01", session_id="session_" + "x" * 80),
            "data.id is longer than 64",
        ),
        (
            factories.session_created("user_01", organization_id="org_" + "x" * 80),
            "data.organization_id is longer than 64",
        ),
        (
            factories.organization_deleted("org_" + "x" * 80, id_only=True),
            "data.id is longer than 64",
        ),
    ],
)
async def test_values_longer_than_their_columns_are_refused(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    response = await deliver(client, payload)
    assert response.status_code == 400
    assert f"{field} characters" in response.text
    with Session(engine) as session:
        assert session.exec(select(WorkOSEventRecord)).all() == []


@pytest.mark.parametrize(
    ("event_type", "data", "missing"),
    [
        ("organization.updated", {"id": "org_01", "name": "No version"}, "data.updated_at"),
        (
            "organization_membership.created",
            {"id": "om_01", "user_id": "user_01", "updated_at": "2026-01-15T12:00:00.000Z"},
            "data.organization_id",
        ),
        ("session.revoked", {"id": "session_01"}, "data.user_id"),
    ],
)
async def test_a_mirrored_event_without_what_its_table_needs_is_refused(
    authkit: AuthKit, client: httpx.AsyncClient, event_type: str, data: dict[str, Any], missing: str
) -> None:
    response = await deliver(client, factories.event(event_type, data))
    assert response.status_code == 400
    assert f"{missing}: Field required" in response.text


async def test_prune_and_count_cover_every_kind(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    old = at(0)
    events = [
        factories.user_created("user_01P"),
        factories.user_deleted("user_01GONE"),
        factories.organization_created(organization_id="org_01P", created_at=old),
        factories.organization_deleted("org_01GONE", id_only=True),
        factories.organization_membership_deleted("om_01GONE", "user_01P", "org_01P"),
        # ended long ago, ended recently, active but expired long ago, active
        factories.session_revoked("user_01P", session_id="session_01OLD", updated_at=old),
        factories.session_revoked("user_01P", session_id="session_01NEW", updated_at=at(10**6)),
        factories.session_created(
            "user_01P", session_id="session_01EXP", created_at=old, expires_at=at(60)
        ),
        factories.session_created("user_01P", session_id="session_01LIVE", created_at=at(10**6)),
    ]
    for event in events:
        assert (await deliver(client, event)).status_code == 200
    with Session(engine) as session:
        assert count_rows(session) == {
            "user": KindCount(rows=1, tombstones=1),
            "organization": KindCount(rows=1, tombstones=1),
            "organization_membership": KindCount(rows=0, tombstones=1),
            "session": KindCount(rows=4, tombstones=0),
        }
        # Tombstones carry their delete event's time (now): a cutoff before it keeps them all.
        assert prune_tombstones(session, at(0)) == {
            "user": 0,
            "organization": 0,
            "organization_membership": 0,
        }
        assert prune_ended_sessions(session, at(3600)) == 2
        session.commit()
        remaining = {row.id for row in session.exec(select(WorkOSSession)).all()}
        assert remaining == {"session_01NEW", "session_01LIVE"}
        later = datetime.now(UTC) + timedelta(days=1)
        assert prune_tombstones(session, later) == {
            "user": 1,
            "organization": 1,
            "organization_membership": 1,
        }
        session.commit()
        assert session.exec(select(WorkOSTombstone)).all() == []
        assert session.exec(select(WorkOSUserTombstone)).all() == []


def test_a_page_of_snapshots_follows_the_same_rules_as_one_at_a_time(authkit: AuthKit) -> None:
    """What a backfill of organizations does: one page, one transaction, `apply_snapshots`."""
    create_tables(authkit.engine)
    kind = kind_named("organization")

    def org(object_id: str, updated: float) -> Organization:
        data = factories.organization(object_id, name=f"at {updated}", created_at=at(0))
        data["updated_at"] = factories.iso(at(updated))
        return Organization.model_validate(data)

    with SyncSession(authkit.engine) as session:
        assert apply_snapshots(session, kind, [org("org_01STORED", 5)]) == [Effect.INSERTED]
        apply_deletion(session, kind, "org_01DELETED", deleted_at=at(0))
        session.commit()
    page = [
        org("org_01NEW", 1),
        org("org_01NEW", 3),  # the newest of two in one page wins; the other is unchanged
        org("org_01STORED", 9),
        org("org_01DELETED", 9),
        org("org_01STORED", 2),
    ]
    with SyncSession(authkit.engine) as session:
        effects = apply_snapshots(session, kind, page)
        session.commit()
    assert effects == [
        Effect.UNCHANGED,
        Effect.INSERTED,
        Effect.UPDATED,
        Effect.UNCHANGED,
        Effect.UNCHANGED,
    ]
    with Session(authkit.engine) as session:
        names = {row.id: row.name for row in session.exec(select(WorkOSOrganization)).all()}
    assert names == {"org_01NEW": "at 3", "org_01STORED": "at 9"}
