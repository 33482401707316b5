"""The organizations guide (docs/organizations.md) tells the truth: its tables match the models,
and its snippets (examples/snippets/organizations.py) do what the guide says, on both databases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from examples.snippets import organizations
from fastapi_workos_authkit import (
    AuthKit,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
)
from fastapi_workos_authkit.testing import factories
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "organizations.md"
ROW = re.compile(r"^\| `(WorkOS\w+)` \| `(workos_\w+)` \| (.+) \|$", re.MULTILINE)


def test_the_tables_in_the_guide_match_the_models() -> None:
    models = {
        model.__name__: model
        for model in (WorkOSOrganization, WorkOSOrganizationMembership, WorkOSSession)
    }
    rows = ROW.findall(GUIDE.read_text())
    assert {name for name, _, _ in rows} == set(models)
    for name, table, columns in rows:
        model_table = models[name].__table__  # type: ignore[attr-defined]
        assert model_table.name == table
        assert re.findall(r"`(\w+)`", columns) == [c.name for c in model_table.columns]


def test_the_guide_lists_every_mirrored_event_type() -> None:
    text = GUIDE.read_text()
    for event_type in (
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organization_membership.created",
        "organization_membership.updated",
        "organization_membership.deleted",
        "session.created",
        "session.revoked",
    ):
        assert f"`{event_type}`" in text


async def test_a_kind_left_out_changes_no_table(engine: Engine) -> None:
    authkit = organizations.mirror_memberships_but_not_sessions(
        webhook_secret=WEBHOOK_SECRET, engine=engine
    )
    ada, acme = "user_01DOCSADA", "org_01DOCSACME"
    async with app_client(authkit) as client:
        for payload in (
            factories.organization_created("Acme", organization_id=acme),
            factories.organization_membership_created(ada, acme, membership_id="om_docs"),
            factories.session_created(ada, session_id="session_docs"),
        ):
            assert (await deliver(client, payload)).status_code == 200
    with Session(engine) as session:
        assert [o.id for o in session.exec(select(WorkOSOrganization)).all()] == [acme]
        memberships = session.exec(select(WorkOSOrganizationMembership)).all()
        assert [m.id for m in memberships] == ["om_docs"]
        assert session.exec(select(WorkOSSession)).all() == []


async def test_the_membership_handler_runs_once_per_effective_change(engine: Engine) -> None:
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine)
    seen: list[str] = []
    organizations.register_membership_audit(authkit, seen)
    ada, acme = "user_01DOCSADA", "org_01DOCSACME"
    promoted = factories.organization_membership_updated(
        "om_docs", ada, acme, role="admin", updated_at=factories.at(60), created_at=factories.at(0)
    )
    stale = factories.organization_membership_updated(
        "om_docs", ada, acme, role="member", updated_at=factories.at(30), created_at=factories.at(0)
    )
    async with app_client(authkit) as client:
        created = factories.organization_membership_created(
            ada, acme, membership_id="om_docs", created_at=factories.at(0)
        )
        for payload in (created, promoted, promoted, stale):
            assert (await deliver(client, payload)).status_code == 200
    assert seen == [f"{ada} is admin (active)"]
