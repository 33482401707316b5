"""The README's quickstart is this repository's examples/quickstart.py, and it works as printed."""

from __future__ import annotations

import logging
import re
import runpy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit.testing import factories, signed_delivery

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"

pytestmark = pytest.mark.anyio


def _readme_quickstart() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Quickstart section has no python block"
    return match.group(1)


def test_readme_quickstart_is_the_tested_file() -> None:
    code = _readme_quickstart()
    assert code == QUICKSTART.read_text(encoding="utf-8")
    assert len(code.splitlines()) <= 20


async def test_quickstart_syncs_a_user_and_runs_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "whsec_quickstart")
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    namespace: dict[str, Any] = runpy.run_path(str(QUICKSTART))
    app, authkit = namespace["app"], namespace["authkit"]
    assert isinstance(authkit, AuthKit)

    payload = factories.user_created("user_01QUICK", email="quick@example.com")
    body, headers = signed_delivery(payload, "whsec_quickstart")
    with caplog.at_level(logging.INFO, logger="myapp"):
        async with (
            authkit.lifespan(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as client,
        ):
            response = await client.post("/workos/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "new user user_01QUICK" in caplog.messages
    with Session(authkit.engine) as session:
        user = session.get(WorkOSUser, "user_01QUICK")
        assert user is not None
        assert user.email == "quick@example.com"
    authkit.engine.dispose()
