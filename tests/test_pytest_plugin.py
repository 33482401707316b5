"""The pytest plugin's fixtures clean up after themselves (run in a pytest of their own)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

INNER_TESTS = textwrap.dedent(
    """
    import pytest

    pytestmark = pytest.mark.anyio
    CLIENTS = []


    async def test_calls_workos(workos_authkit, workos_fake):
        workos_fake.create_user()
        page = await workos_authkit.workos_api.list_users()
        assert len(page.data) == 1
        CLIENTS.append(workos_authkit.workos_api)


    def test_the_workos_client_was_closed_after_the_test():
        assert len(CLIENTS) == 1
        assert CLIENTS[0]._http.is_closed
    """
)


def test_workos_authkit_is_shut_down_after_each_test(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def _pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - pytest itself, arguments from the test
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_fixture_of_the_plugin_is_prefixed_with_workos(tmp_path: Path) -> None:
    """The plugin loads in every suite of a project that installs the package: its fixture names
    must not clash with the project's own (``send_webhook`` would)."""
    listing = _pytest(tmp_path, "--fixtures").stdout
    header = "fixtures defined from fastapi_workos_authkit.testing.pytest_plugin"
    section = listing.split(header, 1)[1].split("fixtures defined from", 1)[0]
    names = [line.split(" ", 1)[0] for line in section.splitlines() if " -- " in line]
    assert "workos_send_webhook" in names
    assert "workos_send_action" in names
    assert [name for name in names if not name.startswith("workos_")] == []


def test_the_plugin_can_be_turned_off(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text("def test_config(workos_config):\n    pass\n")
    assert _pytest(tmp_path).returncode == 0
    turned_off = _pytest(tmp_path, "-p", "no:fastapi_workos_authkit")
    assert turned_off.returncode != 0
    assert "fixture 'workos_config' not found" in turned_off.stdout
