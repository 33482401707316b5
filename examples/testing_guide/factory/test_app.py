"""Tests for the factory-built app: the same checks, through the plugin's own AuthKit."""

import httpx
import pytest
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit.testing import TokenFactory, factories
from fastapi_workos_authkit.testing.pytest_plugin import SendWebhook

pytestmark = pytest.mark.anyio


async def test_a_synced_user_calls_me_with_a_real_token(
    workos_authkit: AuthKit,
    workos_send_webhook: SendWebhook,
    workos_client: httpx.AsyncClient,
    workos_tokens: TokenFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = factories.user_created(email="ada@example.com")
    assert (await workos_send_webhook(event)).json()["status"] == "applied"
    assert "welcome, ada@example.com" in capsys.readouterr().out
    with Session(workos_authkit.engine) as session:
        assert session.get(WorkOSUser, event["data"]["id"]) is not None
    token = workos_tokens.mint(event["data"]["id"])
    response = await workos_client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["email"] == "ada@example.com"


async def test_a_token_for_another_client_is_refused(workos_client: httpx.AsyncClient) -> None:
    token = TokenFactory("client_01SOMEONEELSE0000000000").mint("user_01X")
    response = await workos_client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
