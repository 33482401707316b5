"""The README's demo tells the truth: what it prints is what the tables and handlers did."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from examples import demo

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.anyio


async def test_sync_demo_shows_ordering_dedup_and_tombstones(tmp_path: Path) -> None:
    lines: list[str] = []
    result = await demo.run_sync_demo(f"sqlite:///{tmp_path / 'demo.db'}", lines.append)

    assert result.statuses == [
        "applied",  # the update arrived first and inserted the row
        "stale",  # the older create
        "duplicate",
        "applied",
        "stale",
        "applied",
        "applied",  # the delete
        "tombstoned",  # the late create after it
        "tombstoned",  # a delete of a user never seen: still a tombstone, no row
        "tombstoned",  # its late create
        "applied",  # the sign-in
    ]
    # The demo says why the first update ran the user.created handlers.
    assert any(
        "the user.updated inserted the row, so the user.created handlers ran" in line
        for line in lines
    ), lines
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
    assert details[1] == "applied"  # the membership was stored before its organization
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


def test_the_demos_install_prints_no_setuptools_warning(tmp_path: Path) -> None:
    # What scripts/demo runs, in a fresh venv: setuptools' BuildBackendWarning must not show.
    script = (ROOT / "scripts" / "demo").read_text(encoding="utf-8")
    setting = re.search(r'^EDITABLE_WARNING="([^"]+)"$', script, re.MULTILINE)
    assert setting is not None
    assert 'PYTHONWARNINGS="$EDITABLE_WARNING" .venv/bin/python -m pip install' in script
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
    env = {**os.environ, "PYTHONWARNINGS": setting.group(1)}
    result = subprocess.run(  # noqa: S603 - pip, on this repository
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "BuildBackendWarning" not in result.stderr, result.stderr
    assert "Editable installation" not in result.stderr, result.stderr
