"""The reconciliation guide and CLI reference: their code comes from files that run here."""

from __future__ import annotations

import importlib.util
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.cli import ExitCode, build_parser
from fastapi_workos_authkit.testing import FakeWorkOS, factories
from tests.conftest import WEBHOOK_SECRET
from tests.test_docs import assert_python_blocks_are_snippets
from tests.test_reconcile import db_users, fake_users

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [ROOT / "docs" / "reconciliation.md", ROOT / "docs" / "cli.md"]
EXAMPLE = ROOT / "examples" / "snippets" / "reconciliation.py"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INCLUDE = re.compile(r'^--8<-- "([^":]+):([\w-]+)"$')


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_python_block_is_copied_from_a_tested_file(guide: Path) -> None:
    assert_python_blocks_are_snippets(guide)


def test_the_cli_reference_lists_every_subcommand_and_exit_code() -> None:
    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert subcommands
    for name in subcommands:
        assert f"### `{name}`" in text, name
    for code in ExitCode:
        assert f"| {code.value} |" in text, code


@pytest.fixture
def example(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("WORKOS_API_KEY", "sk_test_key")
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", database_url)
    monkeypatch.delenv("WORKOS_CLIENT_ID", raising=False)
    spec = importlib.util.spec_from_file_location(f"reconcile_example_{uuid.uuid4().hex}", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.authkit.engine.dispose()


def wire(kit: AuthKit, fake: FakeWorkOS) -> None:
    # Before the REST client exists: every call to "WorkOS" then reaches the fake instead.
    kit.http_transport = fake.transport()


@pytest.mark.anyio
async def test_the_documented_jobs_run(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    kit: AuthKit = example.authkit
    fake = FakeWorkOS()
    wire(kit, fake)
    assert kit.events_poll_interval == 300
    ids = [fake.create_user()["id"] for _ in range(3)]
    fake.add_event("organization.created", factories.organization_created()["data"])
    await kit.startup()
    try:
        await kit.events_poller.stop()  # type: ignore[union-attr]  # the test drives it itself
        await example.catch_up(kit)
        fake.delete_user(ids[0])
        await example.catch_up(kit)
        assert db_users(kit.engine) == fake_users(fake)
        printed = capsys.readouterr().out
        assert "3 new users, 0 refreshed" in printed
        assert printed.count("welcome ") == 3

        assert await example.retry_failures(kit) == 0
        await example.nightly_cleanup(kit)
        assert "pruned 0 events and 0 tombstones" in capsys.readouterr().out
        health = await example.health(kit)
        assert health == {
            "failed_events": 0,
            "events_cursor": fake.events[-1]["id"],
            "syncing_now": [],
        }
    finally:
        await kit.shutdown()


@pytest.mark.anyio
async def test_the_documented_app_polls_from_its_lifespan(example: ModuleType) -> None:
    kit: AuthKit = example.authkit
    wire(kit, FakeWorkOS())
    async with example.lifespan(example.app):
        assert kit.events_poller is not None
        assert kit.events_poller.running
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=example.app), base_url="http://testserver"
        ) as client:
            assert (await client.post("/workos/webhook", content=b"{}")).status_code == 401
    assert kit.events_poller is None
