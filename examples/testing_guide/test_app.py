# --8<-- [start:webhooks]
"""Tests for the quickstart's app.py, with no WorkOS account: signed webhooks, real tokens."""

import httpx
import pytest
from app import app, authkit
from sqlmodel import Session, func, select

from fastapi_workos_authkit import WorkOSUser
from fastapi_workos_authkit.testing import TokenFactory, factories
from fastapi_workos_authkit.testing.factories import at
from fastapi_workos_authkit.testing.pytest_plugin import SendWebhook

pytestmark = pytest.mark.anyio


async def test_a_new_user_is_synced_and_welcomed(
    workos_send_webhook: SendWebhook, capsys: pytest.CaptureFixture[str]
) -> None:
    event = factories.user_created(email="ada@example.com")
    response = await workos_send_webhook(event)
    assert response.status_code == 200
    assert response.json()["status"] == "applied"
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
    assert (await workos_send_webhook(update)).json()["status"] == "applied"
    assert (await workos_send_webhook(create)).json()["status"] == "stale"  # older: no change
    assert capsys.readouterr().out.count("welcome") == 1


async def test_a_forged_delivery_is_refused(workos_send_webhook: SendWebhook) -> None:
    response = await workos_send_webhook(factories.user_created(), secret="whsec_not_ours")
    assert response.status_code == 401


async def test_each_test_starts_with_an_empty_database(workos_client: httpx.AsyncClient) -> None:
    # workos_client ran the app's lifespan, which created the tables in this test's database.
    with Session(authkit.engine) as session:
        assert session.exec(select(func.count()).select_from(WorkOSUser)).one() == 0


# --8<-- [end:webhooks]


# --8<-- [start:tokens]
async def test_me_with_a_real_token(
    workos_send_webhook: SendWebhook,
    workos_client: httpx.AsyncClient,
    workos_tokens: TokenFactory,
) -> None:
    event = factories.user_created(email="ada@example.com")
    await workos_send_webhook(event)
    token = workos_tokens.mint(event["data"]["id"])  # signed with the fake WorkOS's key
    response = await workos_client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["email"] == "ada@example.com"
    assert (await workos_client.get("/me")).status_code == 401  # no token


# --8<-- [end:tokens]


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
