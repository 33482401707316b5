"""The testing guide works in a fresh project: the quickstart plus the guide's two files, green.

This is what a new user does: copy the quickstart as app.py and the guide's conftest.py and
test_app.py next to it, then run pytest. The package's pytest plugin is found through its entry
point; no WorkOS account, no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_and_the_testing_guide_pass_in_a_fresh_project(tmp_path: Path) -> None:
    project = tmp_path / "myproject"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.py", project / "app.py")
    for name in ("conftest.py", "test_app.py"):
        shutil.copy(ROOT / "examples" / "testing_guide" / name, project / name)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("WORKOS_", "AUTHKIT_", "PYTEST_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout
