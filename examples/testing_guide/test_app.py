"""Tests for the quickstart's app.py, with no WorkOS account: signed webhooks, a faked user."""

import httpx
import pytest
from app import app, authkit
from sqlmodel import Session

from fastapi_workos_authkit import WorkOSUser
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.factories import at
from fastapi_workos_authkit.testing.pytest_plugin import SendWebhook

pytestmark = pytest.mark.anyio


# --8<-- [start:webhooks]
async def test_a_new_user_is_synced_and_welcomed(
    workos_send_webhook: SendWebhook, capsys: pytest.CaptureFixture[str]
) -> None:
    event = factories.user_created(email="ada@example.com")
    response = await workos_send_webhook(event)
    assert response.status_code == 200
    assert "welcome, ada@example.com" in capsys.readouterr().out
    with Session(authkit.engine) as session:
        user = session.get(WorkOSUser, event["data"]["id"])
        assert user is not None
        assert user.email == "ada@example.com"


async def test_an_update_that_arrives_first_still_welcomes_the_user(
    workos_send_webhook: SendWebhook, capsys: pytest.CaptureFixture[str]
) -> None:
    update = factories.user_updated(email="late@example.com", updated_at=at(60))
    create = factories.user_created(update["data"]["id"], email="early@example.com")
    assert (await workos_send_webhook(update)).status_code == 200
    assert (await workos_send_webhook(create)).status_code == 200  # older: changes nothing
    assert capsys.readouterr().out.count("welcome") == 1


async def test_a_forged_delivery_is_refused(workos_send_webhook: SendWebhook) -> None:
    response = await workos_send_webhook(factories.user_created(), secret="whsec_not_ours")
    assert response.status_code == 401


# --8<-- [end:webhooks]


# --8<-- [start:override]
async def test_me_with_current_user_overridden(workos_client: httpx.AsyncClient) -> None:
    fake_user = WorkOSUser(
        id="user_01TEST", email="test@example.com", created_at=at(0), updated_at=at(0)
    )
    app.dependency_overrides[authkit.current_user] = lambda: fake_user
    try:
        response = await workos_client.get("/me")
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 200
    assert response.json()["email"] == "test@example.com"


# --8<-- [end:override]
