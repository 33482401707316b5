"""The code of docs/current-user.md runs: the snippets' app, over HTTP, with real tokens."""

import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from examples.snippets import current_user_testing
from fastapi_workos_authkit import AuthKit, User, WorkOSUser
from fastapi_workos_authkit.testing import FakeJWKS, TokenFactory, factories
from tests.test_docs import assert_python_blocks_are_snippets

CLIENT_ID = "client_01DOCS"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory(CLIENT_ID)


@pytest.fixture
def snippets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tokens: TokenFactory) -> ModuleType:
    """The snippet module, imported with the environment a deployment would set."""
    monkeypatch.setenv("WORKOS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'docs.db'}")
    monkeypatch.delenv("WORKOS_API_HOSTNAME", raising=False)
    monkeypatch.delenv("WORKOS_API_KEY", raising=False)
    module = importlib.reload(importlib.import_module("examples.snippets.current_user"))
    module.authkit.http_transport = FakeJWKS(tokens).transport()
    return module


@pytest.fixture
async def client(snippets: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = snippets.app
    async with (
        snippets.authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c,
    ):
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_the_guide_endpoints(
    client: httpx.AsyncClient, snippets: ModuleType, tokens: TokenFactory
) -> None:
    authkit: AuthKit = snippets.authkit
    authkit.pipeline.apply_user_snapshot(
        User.model_validate(factories.user("user_01D", email="d@example.com", first_name="Dee"))
    )
    token = tokens.mint("user_01D", org_id="org_01X", role="admin", permissions=["posts:delete"])
    assert (await client.get("/me", headers=auth(token))).json() == {
        "id": "user_01D",
        "email": "d@example.com",
    }
    assert (await client.get("/greeting")).json() == {"message": "Hello, stranger!"}
    assert (await client.get("/greeting", headers=auth(token))).json() == {"message": "Hello, Dee!"}
    assert (await client.get("/session", headers=auth(token))).json() == {
        "user": "user_01D",
        "organization": "org_01X",
        "role": "admin",
    }
    assert (await client.delete("/posts/7", headers=auth(token))).json() == {"deleted": 7}
    assert (await client.get("/billing", headers=auth(token))).status_code == 200
    assert (await client.get("/team", headers=auth(token))).json() == {"organization": "org_01X"}

    member = tokens.mint("user_01D", role="member")
    for path in ("/billing", "/team"):
        assert (await client.get(path, headers=auth(member))).status_code == 403
    assert (await client.delete("/posts/7", headers=auth(member))).status_code == 403
    assert (await client.get("/me")).status_code == 401


def test_the_guide_websocket(snippets: ModuleType, tokens: TokenFactory) -> None:
    with TestClient(snippets.app) as client:
        snippets.authkit.pipeline.apply_user_snapshot(
            User.model_validate(factories.user("user_01W"))
        )
        headers = auth(tokens.mint("user_01W"))
        with client.websocket_connect("/ws", headers=headers) as websocket:
            assert websocket.receive_json() == {"hello": "user_01W"}


def test_the_guide_providers(snippets: ModuleType) -> None:
    config = snippets.convex_style_config("client_123")
    assert [p["issuer"] for p in config["providers"]] == [
        "https://api.workos.com/",
        "https://api.workos.com/user_management/client_123",
    ]
    issuers = snippets.custom_domain.token_verifier.issuers
    assert "https://auth.example.com/user_management/client_123" in issuers
    assert "https://api.workos.com/" in issuers


def test_the_guide_override(snippets: ModuleType) -> None:
    current_user_testing.test_me_as_a_fake_user(snippets.app, snippets.authkit)


def test_the_guide_real_tokens(tmp_path: Path) -> None:
    def build_app(authkit: AuthKit) -> FastAPI:
        app = FastAPI(lifespan=authkit.lifespan)

        @app.get("/me")
        async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
            return {"id": user.id}

        return app

    current_user_testing.test_me_with_a_real_token(build_app, tmp_path)


def test_every_python_block_of_the_guide_is_copied_from_a_tested_file() -> None:
    assert_python_blocks_are_snippets(ROOT / "docs" / "current-user.md")
