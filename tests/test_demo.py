"""The README's demo tells the truth: what it prints is what the tables and handlers did."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import demo

pytestmark = pytest.mark.anyio


async def test_sync_demo_shows_ordering_dedup_and_tombstones(tmp_path: Path) -> None:
    lines: list[str] = []
    result = await demo.run_sync_demo(f"sqlite:///{tmp_path / 'demo.db'}", lines.append)

    assert result.statuses == ["processed"] * 2 + ["duplicate"] + ["processed"] * 8
    # The update that arrived first inserted the row, so the app saw a user.created; the stale
    # create, the duplicate, the stale update and both late creates ran nothing.
    assert result.handler_calls == [
        "user.created ada@example.com",
        "user.updated ada@lovelace.dev",
        "user.created grace@example.com",
        "user.deleted user_01GRACE",
        "session.created user_01ADA",
    ]
    assert result.users == {"user_01ADA": "ada@lovelace.dev"}
    assert result.tombstones == ["user_01GRACE", "user_01LINUS"]
    assert any("answered 401" in line for line in lines)


async def test_example_app_story_goes_from_denied_sign_up_to_refused_token(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    story = await demo.run_example_app_story(f"sqlite:///{tmp_path / 'app.db'}", lines.append)

    statuses = [(step.split(" for ")[0], status) for step, status, _ in story.steps]
    assert statuses == [
        ("registration action", 200),
        ("registration action", 200),
        ("webhook user.created", 200),
        ("GET /me", 200),
        ("POST /todo-lists", 201),
        ("GET /todo-lists", 200),
        ("webhook session.created", 200),
        ("webhook user.deleted (id only)", 200),
        ("GET /me with the same token", 401),
    ]
    details = [detail for _, _, detail in story.steps]
    assert details[0] == "Deny (Please use your corporate email address)"
    assert details[1] == "Allow"
    assert details[3] == "ada@acme.test"
    assert details[5] == "Ada's Todo List, Launch plan"
    assert any("todo lists left: 0" in line for line in lines)


async def test_organizations_story_stores_a_membership_before_its_organization(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    story = await demo.run_organizations_story(f"sqlite:///{tmp_path / 'orgs.db'}", lines.append)

    assert [(step, status) for step, status, _ in story.steps] == [
        ("webhook user.created (Ada)", 200),
        ("webhook organization_membership.created", 200),
        ("webhook organization.created (late)", 200),
        ("webhook organization_membership.created", 200),
        ("GET /org/members (active admin)", 200),
        ("webhook organization_membership.updated", 200),
        ("GET /org/members with the same token", 403),
        ("webhook session.created (Ada's laptop)", 200),
        ("GET /me with that session's token", 200),
        ("webhook session.revoked (Ada signs out)", 200),
        ("GET /me with the same token", 401),
    ]
    details = [detail for _, _, detail in story.steps]
    assert details[1] == "processed"  # the membership was stored before its organization
    assert details[4] == "user_01ADALOVELACE (ada@acme.test), user_01GRACEHOPPER (not synced yet)"
    assert details[6] == "Only an organization admin may do this"
    assert details[8] == "user_01ADALOVELACE"
    assert details[10] == "The session was revoked"
    # What the demo printed about the tables is what they held at that moment.
    assert (
        "    workos_organizations: (none); workos_organization_memberships: "
        "user_01ADALOVELACE:admin:active"
    ) in lines
    assert any("stored all the same" in line for line in lines)
