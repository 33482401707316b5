"""The guides show tested code: snippets included from files, and those files exercised here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import inspect

from examples.snippets import configuration
from fastapi_workos_authkit import AuthKit, ConfigurationError

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
SNIPPET = re.compile(r'--8<-- "([^":]+)(?::[\w-]+)?"')


def _guides() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if p.name not in OWNED_ELSEWHERE)


@pytest.mark.parametrize("page", _guides(), ids=lambda p: p.name)
def test_every_python_block_in_the_guides_is_included_from_a_file(page: Path) -> None:
    for language, body in FENCE.findall(page.read_text(encoding="utf-8")):
        if language != "python":
            continue
        lines = [line for line in body.splitlines() if line.strip()]
        assert lines, f"{page.name}: empty python block"
        for line in lines:
            match = SNIPPET.search(line)
            assert match, f"{page.name}: python block not included from a tested file: {line!r}"
            assert (ROOT / match.group(1)).is_file(), f"{page.name}: missing {match.group(1)}"


def test_configuration_reads_the_environment_and_demands_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WORKOS_CLIENT_ID", "WORKOS_API_KEY", "WORKOS_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKOS_ACTION_SECRET", "action_from_env")
    authkit = configuration.from_the_environment()
    assert authkit.settings.action_secret == "action_from_env"
    with pytest.raises(ConfigurationError, match="WORKOS_WEBHOOK_SECRET"):
        authkit.router()


def test_explicit_options_win_and_move_the_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "from_env")
    authkit = configuration.explicit("whsec_explicit", f"sqlite:///{tmp_path / 'x.db'}")
    assert authkit.settings.webhook_secret == "whsec_explicit"
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
