"""The example app (examples/app) end to end, through the testing kit, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from examples.app.auth import create_authkit
from examples.app.main import create_app
from examples.app.models import AllowedDomain, AppUser, TodoList
from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.testing import (
    FakeJWKS,
    TokenFactory,
    factories,
    signed_action_request,
    signed_delivery,
    user_registration_action,
    verify_action_response,
)
from fastapi_workos_authkit.testing.actions import authentication_action
from tests.conftest import ACTION_SECRET, CLIENT_ID, WEBHOOK_SECRET

pytestmark = pytest.mark.anyio

API = "https://api.workos.test"
ADA = "user_01ADAEXAMPLEAPP0000000000"


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory(CLIENT_ID)


@pytest.fixture
def example_authkit(engine: Engine, tokens: TokenFactory) -> AuthKit:
    return create_authkit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        action_secret=ACTION_SECRET,
        api_base_url=API,
        engine=engine,
        http_transport=FakeJWKS(tokens, api_base_url=API).transport(),
    )


@pytest.fixture
async def app_client(example_authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(example_authkit)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        yield client


async def webhook(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body, headers = signed_delivery(payload, WEBHOOK_SECRET)
    return await client.post("/workos/webhook", content=body, headers=headers)


async def registration(client: httpx.AsyncClient, email: str) -> tuple[str, str | None]:
    body, headers = signed_action_request(user_registration_action(email), ACTION_SECRET)
    response = await client.post("/workos/action", content=body, headers=headers)
    assert response.status_code == 200, response.text
    payload = verify_action_response(response.content, ACTION_SECRET).payload
    return payload.verdict, payload.error_message


def bearer(tokens: TokenFactory, user_id: str = ADA) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.mint(user_id)}"}


@pytest.mark.parametrize(
    ("email", "verdict", "message"),
    [
        ("someone@gmail.com", "Deny", "Please use your corporate email address"),
        ("mallory@blocked-domain.com", "Deny", "Sign-ups from this domain are blocked"),
        ("ada@acme.test", "Allow", None),
    ],
)
async def test_registration_action(
    app_client: httpx.AsyncClient, email: str, verdict: str, message: str | None
) -> None:
    assert await registration(app_client, email) == (verdict, message)


async def test_registration_checks_allowed_domains_once_any_is_listed(
    app_client: httpx.AsyncClient, engine: Engine
) -> None:
    with Session(engine) as session:
        session.add(AllowedDomain(domain="acme.test"))
        session.commit()
    assert await registration(app_client, "ada@acme.test") == ("Allow", None)
    assert await registration(app_client, "eve@elsewhere.test") == (
        "Deny",
        "elsewhere.test is not allowed to sign up",
    )


async def test_authentication_action_allows(app_client: httpx.AsyncClient) -> None:
    body, headers = signed_action_request(authentication_action(), ACTION_SECRET)
    response = await app_client.post("/workos/action", content=body, headers=headers)
    assert verify_action_response(response.content, ACTION_SECRET).payload.verdict == "Allow"


async def test_a_users_whole_life(
    app_client: httpx.AsyncClient, engine: Engine, tokens: TokenFactory
) -> None:
    # Synced: the app user and a first todo list appear with the WorkOS user.
    created = factories.user_created(ADA, email="ada@acme.test", first_name="Ada", last_name="L")
    assert (await webhook(app_client, created)).status_code == 200
    with Session(engine) as session:
        user = session.exec(select(AppUser).where(AppUser.auth_id == ADA)).one()
        assert (user.email, user.name) == ("ada@acme.test", "Ada L")

    me = await app_client.get("/me", headers=bearer(tokens))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == ADA
    assert me.json()["email"] == "ada@acme.test"

    lists = await app_client.get("/todo-lists", headers=bearer(tokens))
    assert [item["name"] for item in lists.json()] == ["Ada's Todo List"]
    new = await app_client.post("/todo-lists", json={"name": "Groceries"}, headers=bearer(tokens))
    assert new.status_code == 201, new.text
    one = await app_client.get(f"/todo-lists/{new.json()['id']}", headers=bearer(tokens))
    assert one.json()["name"] == "Groceries"

    # Updated: the mirror follows.
    updated = factories.user_updated(
        ADA,
        email="ada@lovelace.test",
        first_name="Ada",
        last_name="Lovelace",
        updated_at=factories.at(60),
    )
    assert (await webhook(app_client, updated)).status_code == 200

    # Signed in, then out: tracked on the app user.
    assert (await webhook(app_client, factories.session_created(ADA))).status_code == 200
    assert (await webhook(app_client, factories.session_revoked(ADA))).status_code == 200
    with Session(engine) as session:
        user = session.exec(select(AppUser).where(AppUser.auth_id == ADA)).one()
        assert (user.email, user.name) == ("ada@lovelace.test", "Ada Lovelace")
        assert user.last_login_at is not None
        assert user.last_logout_at is not None

    # Deleted: the app user and their lists go, and the token no longer opens anything.
    assert (await webhook(app_client, factories.user_deleted(ADA, id_only=True))).status_code == 200
    with Session(engine) as session:
        assert session.exec(select(AppUser)).all() == []
        assert session.exec(select(TodoList)).all() == []
    refused = await app_client.get("/me", headers=bearer(tokens))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


async def test_todo_lists_need_a_token_and_stay_private(
    app_client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    assert (await app_client.get("/todo-lists")).status_code == 401
    grace = "user_01GRACEEXAMPLEAPP00000000"
    for user_id, email in ((ADA, "ada@acme.test"), (grace, "grace@acme.test")):
        assert (await webhook(app_client, factories.user_created(user_id, email=email))).is_success
    own = await app_client.post("/todo-lists", json={"name": "Mine"}, headers=bearer(tokens))
    other = await app_client.get(f"/todo-lists/{own.json()['id']}", headers=bearer(tokens, grace))
    assert other.status_code == 404
    names = [
        item["name"]
        for item in (await app_client.get("/todo-lists", headers=bearer(tokens, grace))).json()
    ]
    assert "Mine" not in names


async def test_a_sign_in_before_the_user_is_synced_is_retried(
    app_client: httpx.AsyncClient, engine: Engine
) -> None:
    early = factories.session_created(ADA)
    assert (await webhook(app_client, early)).status_code == 500  # rolled back; WorkOS retries
    assert (await webhook(app_client, factories.user_created(ADA))).status_code == 200
    retried = await webhook(app_client, early)
    assert retried.json()["status"] == "processed"
    with Session(engine) as session:
        user = session.exec(select(AppUser).where(AppUser.auth_id == ADA)).one()
        assert user.last_login_at is not None


async def test_a_sign_in_of_a_deleted_user_is_ignored(app_client: httpx.AsyncClient) -> None:
    assert (await webhook(app_client, factories.user_deleted(ADA, id_only=True))).is_success
    assert (await webhook(app_client, factories.session_created(ADA))).status_code == 200
