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
