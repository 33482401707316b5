"""The guides show tested code: snippets included from files, and those files exercised here."""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Iterator
from inspect import signature as inspect_signature
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect

from examples.snippets import configuration
from fastapi_workos_authkit import AuthKit, AuthKitSettings, ConfigurationError
from fastapi_workos_authkit.testing import factories, signed_delivery
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import WEBHOOK_SECRET

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages written by the feature owners, who test their examples in their own suites.
OWNED_ELSEWHERE = {
    "actions.md",
    "cli.md",
    "current-user.md",
    "deployment.md",
    "performance.md",
    "reconciliation.md",
}
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _guides() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if p.name not in OWNED_ELSEWHERE)


def _load_sync_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "scripts" / "sync_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_docs = _load_sync_docs()
MARKED_FENCE = re.compile(
    r"^[ \t]*<!-- snippet: (?P<ref>[^ ]+) -->\n[ \t]*```(?P<lang>\w+)", re.MULTILINE
)


def assert_python_blocks_are_snippets(page: Path) -> None:
    """Every python block of ``page`` shows a tested file (marked, and equal to it)."""
    text = page.read_text(encoding="utf-8")
    marked = len([m for m in MARKED_FENCE.finditer(text) if m["lang"] == "python"])
    python_blocks = len(re.findall(r"^[ \t]*```python", text, re.MULTILINE))
    assert marked == python_blocks, (
        f"{page.name}: {python_blocks - marked} python block(s) not copied from a tested file; "
        "put the code in examples/ (or a test), then mark the block with "
        "<!-- snippet: path:section --> and run python scripts/sync_docs.py"
    )
    for match in MARKED_FENCE.finditer(text):
        path = match["ref"].partition(":")[0]
        assert (ROOT / path).is_file(), f"{page.name}: missing {path}"
    assert sync_docs.sync(text) == text, (
        f"{page.name}: a code block differs from the file it shows; run python scripts/sync_docs.py"
    )


@pytest.mark.parametrize("page", sync_docs.pages(), ids=lambda p: p.name)
def test_every_code_block_copied_from_a_file_equals_it(page: Path) -> None:
    # The Markdown is readable as it is (on a code host too): the code is in it, not included.
    text = page.read_text(encoding="utf-8")
    assert not re.search(r'^[ \t]*--8<-- "', text, re.MULTILINE), (
        f"{page.name}: an include line shows blank on a code host; run "
        "python scripts/sync_docs.py to copy the code in"
    )
    assert sync_docs.sync(text) == text, f"{page.name}: run python scripts/sync_docs.py"


@pytest.mark.parametrize("page", _guides(), ids=lambda p: p.name)
def test_every_python_block_in_the_guides_is_copied_from_a_tested_file(page: Path) -> None:
    assert_python_blocks_are_snippets(page)


def test_a_changed_example_is_caught_and_synced_back() -> None:
    page = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    stale = page.replace("authkit = AuthKit()", "authkit = AuthKit(prefix='/old')", 1)
    assert stale != page
    assert sync_docs.sync(stale) == page
    include = '```python\n--8<-- "examples/quickstart.py"\n```\n'
    assert sync_docs.sync(include).startswith(
        "<!-- snippet: examples/quickstart.py -->\n```python\nfrom fastapi import"
    )


def test_configuration_reads_the_environment_and_demands_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WORKOS_CLIENT_ID", "WORKOS_API_KEY", "WORKOS_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKOS_ACTION_SECRET", "action_from_env")
    authkit = configuration.from_the_environment()
    assert authkit.settings.require_action_secret() == "action_from_env"
    with pytest.raises(ConfigurationError, match="WORKOS_WEBHOOK_SECRET"):
        authkit.router()


def test_explicit_options_win_and_move_the_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "from_env")
    authkit = configuration.explicit("whsec_explicit", f"sqlite:///{tmp_path / 'x.db'}")
    assert authkit.settings.require_webhook_secret() == "whsec_explicit"
    assert authkit.settings.webhook_tolerance == 300
    paths = {route.path for route in authkit.router(actions=False).routes}  # type: ignore[attr-defined]
    assert paths == {"/auth/workos/webhook"}


async def _start(authkit: AuthKit) -> None:
    await authkit.startup()
    await authkit.shutdown()


@pytest.mark.anyio
async def test_an_engine_shared_with_the_app_gets_the_tables(tmp_path: Path) -> None:
    authkit = configuration.sharing_the_apps_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    await _start(authkit)
    tables = set(inspect(authkit.engine).get_table_names())
    assert {"workos_users", "workos_events", "workos_user_tombstones"} <= tables
    authkit.engine.dispose()


def test_the_logging_snippet_sets_only_the_packages_logger() -> None:
    logger = logging.getLogger("fastapi_workos_authkit")
    previous, root = logger.level, logging.getLogger().level
    try:
        configuration.show_debug_logs()
        assert logger.level == logging.DEBUG
        assert logging.getLogger().level == root
    finally:
        logger.setLevel(previous)


@pytest.mark.anyio
async def test_the_migrations_snippet_creates_no_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'migrated.db'}")
    authkit = configuration.schema_owned_by_migrations()
    await _start(authkit)
    assert inspect(authkit.engine).get_table_names() == []
    authkit.engine.dispose()


@pytest.fixture
def handlers_snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The handlers guide's module, imported fresh with a test database and secret."""
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'handlers.db'}")
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    sys.modules.pop("examples.snippets.handlers", None)
    module = importlib.import_module("examples.snippets.handlers")
    yield module
    module.authkit.engine.dispose()
    sys.modules.pop("examples.snippets.handlers", None)


@pytest.mark.anyio
async def test_the_handlers_guide_patterns(handlers_snippet: ModuleType) -> None:
    authkit: AuthKit = handlers_snippet.authkit
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):

        async def send(payload: dict[str, Any]) -> int:
            body, headers = signed_delivery(payload, WEBHOOK_SECRET)
            response = await client.post("/workos/webhook", content=body, headers=headers)
            return response.status_code

        assert await send(factories.user_created("user_01H", email="h@example.com")) == 200
        assert await send(factories.organization_created("Acme", domains=["acme.test"])) == 200
        group = factories.event("dsync.group.created", {"id": "directory_group_01", "name": "Ops"})
        assert await send(group) == 200

        handlers_snippet.profile_service_up = False
        update = factories.user_updated("user_01H", email="h2@example.com", updated_at=at(60))
        assert await send(update) == 500
        handlers_snippet.profile_service_up = True
        assert await send(update) == 200  # WorkOS's retry

    assert handlers_snippet.audit_log == [
        "signed up: h@example.com",
        'chat: {"text":"h@example.com"}',
        "organization Acme (acme.test)",
        "directory group Ops",
        "profile pushed: h2@example.com",
    ]


RUNTIME_KEYWORDS = {"engine", "extra_providers", "clock", "http_transport"}
"""`AuthKit`'s keywords that are objects, not settings: no environment variable."""


def _option_rows(text: str) -> dict[str, str]:
    """``{option: environment-variable cell}`` of every table row starting with a code name."""
    rows = re.finditer(r"^\| `(\w+)` \|([^|]*)\|", text, re.MULTILINE)
    return {row.group(1): row.group(2).strip() for row in rows}


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md"])
def test_the_configuration_tables_match_the_settings_class(page: str) -> None:
    """Each option is declared once, in AuthKitSettings; the tables must not drift from it."""
    rows = _option_rows((ROOT / page).read_text(encoding="utf-8"))
    for name in AuthKitSettings.model_fields:
        assert name in rows, f"{page} does not document the option {name}"
        variable = AuthKitSettings.environment_variable(name)
        assert rows[name] == f"`{variable}`", f"{page}: {name} is read from {variable}"
    runtime = set(inspect_signature(AuthKit.__init__).parameters) - {"self", "settings", "options"}
    assert runtime == RUNTIME_KEYWORDS
    assert set(rows) >= RUNTIME_KEYWORDS, f"{page} does not document AuthKit's other keywords"
    # And no row names an environment variable for an option that no longer exists.
    stale = {
        name
        for name, cell in rows.items()
        if re.fullmatch(r"`(WORKOS|AUTHKIT)_\w+`", cell)
        and name not in AuthKitSettings.model_fields
    }
    assert stale == set(), f"{page} documents options AuthKitSettings does not have"


def test_the_settings_snippet_layers_keywords_over_a_settings_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKIT_UNHANDLED_ACTION", "deny")
    authkit = configuration.from_a_settings_object()
    assert authkit.settings.prefix == "/auth/workos"
    assert authkit.settings.action_timeout == 3
    assert authkit.settings.unhandled_action == "allow"  # the keyword beat the environment


def test_no_docstring_or_page_cites_a_document_outside_the_repository() -> None:
    """The API reference renders docstrings: a citation of an unpublished spec ("SPEC §4") would
    send readers to a document they cannot open. Say the fact instead."""
    sources = [*(ROOT / "fastapi_workos_authkit").rglob("*.py"), *DOCS.rglob("*.md")]
    citing = [str(path.relative_to(ROOT)) for path in sources if "SPEC" in path.read_text("utf-8")]
    assert citing == []
