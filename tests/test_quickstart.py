"""The README's quickstart is this repository's examples/quickstart.py, and it works as printed."""

from __future__ import annotations

import re
import runpy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit.testing import FakeJWKS, TokenFactory, factories, signed_delivery

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"
CLIENT_ID = "client_01QUICKSTART"

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


@pytest.fixture
def quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The quickstart's globals, run with only the environment a user would set."""
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "whsec_quickstart")
    monkeypatch.setenv("WORKOS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    namespace = runpy.run_path(str(QUICKSTART))
    authkit = namespace["authkit"]
    assert isinstance(authkit, AuthKit)
    # WorkOS's JWKS endpoint, faked at its real URL: nothing leaves the process.
    authkit.http_transport = FakeJWKS(TokenFactory(CLIENT_ID)).transport()
    return namespace


@pytest.fixture
async def client(quickstart: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app, authkit = quickstart["app"], quickstart["authkit"]
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client
    authkit.engine.dispose()


async def test_quickstart_syncs_a_user_and_runs_the_handler(
    quickstart: dict[str, Any], client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = factories.user_created("user_01QUICK", email="quick@example.com")
    body, headers = signed_delivery(payload, "whsec_quickstart")
    response = await client.post("/workos/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "welcome, quick@example.com" in capsys.readouterr().out
    with Session(quickstart["authkit"].engine) as session:
        user = session.get(WorkOSUser, "user_01QUICK")
        assert user is not None
        assert user.email == "quick@example.com"


async def test_quickstart_me_answers_with_the_synced_user(
    quickstart: dict[str, Any], client: httpx.AsyncClient
) -> None:
    payload = factories.user_created("user_01QUICK", email="quick@example.com")
    body, headers = signed_delivery(payload, "whsec_quickstart")
    await client.post("/workos/webhook", content=body, headers=headers)

    assert (await client.get("/me")).status_code == 401
    token = TokenFactory(CLIENT_ID).mint("user_01QUICK")  # the same per-process test key
    me = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "quick@example.com"
