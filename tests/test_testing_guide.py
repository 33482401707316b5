"""The testing guide works in a fresh project, in both styles the guide shows.

This is what a new user does: copy the guide's files into an empty folder and run pytest there,
with the installed package. Its pytest plugin is found through the entry point; no WorkOS
account, no network, no private attribute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "examples" / "testing_guide"


def _run_pytest(project: Path) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("WORKOS_", "AUTHKIT_", "PYTEST_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_module_level_quickstart_app_passes_the_guides_tests(tmp_path: Path) -> None:
    # The quickstart's app.py, unchanged: `authkit = AuthKit()` and `app = FastAPI()` at import.
    project = tmp_path / "myproject"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.py", project / "app.py")
    for name in ("conftest.py", "test_app.py"):
        shutil.copy(GUIDE / name, project / name)
    result = _run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout, result.stdout
    # Each test had its own database: none was left in the project's folder.
    assert not list(project.glob("*.db")), list(project.iterdir())


def test_the_factory_built_app_passes_the_guides_tests(tmp_path: Path) -> None:
    project = tmp_path / "myproject"
    shutil.copytree(GUIDE / "factory", project, ignore=shutil.ignore_patterns("__pycache__"))
    result = _run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    assert not list(project.glob("*.db")), list(project.iterdir())


@pytest.mark.parametrize("page", ["testing.md", "quickstart.md"])
def test_the_guide_shows_the_files_it_runs(page: str) -> None:
    # On a code host the Markdown is read as it is: the code must be in it, not included.
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert "--8<--" not in text
    if page == "testing.md":
        for name in ("conftest.py", "test_app.py", "factory/app.py", "factory/conftest.py"):
            body = (GUIDE / name).read_text(encoding="utf-8")
            kept = [line for line in body.splitlines() if "--8<--" not in line]
            # Each file's first test or fixture appears verbatim in the guide.
            assert next(line for line in kept if line.startswith(("async def", "def "))) in text
