"""uvicorn is the ``server`` extra: the package runs without it, and the one feature that needs it
(serving the fake WorkOS on a real port) says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from fastapi_workos_authkit.testing import FakeWorkOS, FakeWorkOSServer

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter where `import uvicorn` fails, as in an environment without the extra.
WITHOUT_UVICORN = textwrap.dedent(
    """
    import sys

    sys.modules["uvicorn"] = None
    import fastapi_workos_authkit
    import fastapi_workos_authkit.cli
    import fastapi_workos_authkit.testing
    import fastapi_workos_authkit.testing.pytest_plugin
    from fastapi_workos_authkit import AuthKit

    AuthKit(webhook_secret="whsec_x").router()
    print("ok")
    """
)


def test_the_package_imports_and_builds_an_app_without_uvicorn() -> None:
    result = subprocess.run(  # noqa: S603 - this interpreter, a script from the test
        [sys.executable, "-c", WITHOUT_UVICORN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_fake_workos_server_names_the_extra_when_uvicorn_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the environment, not our code
    with pytest.raises(ModuleNotFoundError, match=r"fastapi-workos-authkit\[server\]"):
        FakeWorkOSServer(FakeWorkOS())


def test_uvicorn_is_an_extra_and_a_dev_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("uvicorn")]
    extras = project["optional-dependencies"]
    for extra in ("server", "dev"):
        assert [d for d in extras[extra] if d.startswith("uvicorn")], extra
