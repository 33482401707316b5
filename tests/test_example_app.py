"""The example app (examples/app) end to end, through the pytest plugin's fixtures.

The fixtures come from the package's pytest plugin (fastapi_workos_authkit.testing.pytest_plugin,
loaded through its entry point); this file only points them at the example app, and at both
databases. The testing guide (docs/testing.md) includes parts of it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import Session, select

from examples.app.auth import create_authkit
from examples.app.main import create_app
from examples.app.models import AllowedDomain, AppUser, TodoList
from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.testing import (
    TokenFactory,
    authentication_action,
    factories,
    user_registration_action,
    verify_action_response,
)
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS
from fastapi_workos_authkit.testing.pytest_plugin import SendAction, SendWebhook, WorkOSTestConfig

pytestmark = pytest.mark.anyio

ADA = "user_01ADAEXAMPLEAPP0000000000"


@pytest.fixture
def workos_database_url(database_url: str) -> str:
    """Every test here runs on SQLite and on PostgreSQL (tests/conftest.py)."""
    return database_url


# --8<-- [start:fixtures]
@pytest.fixture
def workos_authkit(workos_authkit_options: dict[str, Any]) -> AuthKit:
    # The app's own factory, given the options that wire it to the fake WorkOS.
    return create_authkit(**workos_authkit_options)


@pytest.fixture
def workos_app(workos_authkit: AuthKit) -> FastAPI:
    return create_app(workos_authkit)


def bearer(tokens: TokenFactory, user_id: str = ADA) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.mint(user_id)}"}


# --8<-- [end:fixtures]


def app_user(authkit: AuthKit, auth_id: str = ADA) -> AppUser | None:
    with Session(authkit.engine) as session:
        return session.exec(select(AppUser).where(AppUser.auth_id == auth_id)).first()


async def registration(
    workos_send_action: SendAction, config: WorkOSTestConfig, email: str
) -> tuple[str, str | None]:
    response = await workos_send_action(user_registration_action(email))
    assert response.status_code == 200, response.text
    payload = verify_action_response(response.content, config.action_secret).payload
    return payload.verdict, payload.error_message


@pytest.mark.parametrize(
    ("email", "verdict", "message"),
    [
        ("someone@gmail.com", "Deny", "Please use your corporate email address"),
        ("mallory@blocked-domain.com", "Deny", "Sign-ups from this domain are blocked"),
        ("ada@acme.test", "Allow", None),
    ],
)
async def test_registration_action(
    workos_send_action: SendAction,
    workos_config: WorkOSTestConfig,
    email: str,
    verdict: str,
    message: str | None,
) -> None:
    assert await registration(workos_send_action, workos_config, email) == (verdict, message)


async def test_registration_checks_allowed_domains_once_any_is_listed(
    workos_send_action: SendAction, workos_config: WorkOSTestConfig, workos_authkit: AuthKit
) -> None:
    with Session(workos_authkit.engine) as session:
        session.add(AllowedDomain(domain="acme.test"))
        session.commit()
    assert await registration(workos_send_action, workos_config, "ada@acme.test") == ("Allow", None)
    assert await registration(workos_send_action, workos_config, "eve@elsewhere.test") == (
        "Deny",
        "elsewhere.test is not allowed to sign up",
    )


async def test_authentication_action_allows(
    workos_send_action: SendAction, workos_config: WorkOSTestConfig
) -> None:
    response = await workos_send_action(authentication_action())
    payload = verify_action_response(response.content, workos_config.action_secret).payload
    assert payload.verdict == "Allow"


# --8<-- [start:whole-life]
async def test_a_users_whole_life(
    workos_send_webhook: SendWebhook,
    workos_client: httpx.AsyncClient,
    workos_tokens: TokenFactory,
    workos_authkit: AuthKit,
) -> None:
    created = factories.user_created(ADA, email="ada@acme.test", first_name="Ada", last_name="L")
    assert (await workos_send_webhook(created)).status_code == 200
    user = app_user(workos_authkit)
    assert user is not None
    assert (user.email, user.name) == ("ada@acme.test", "Ada L")

    me = await workos_client.get("/me", headers=bearer(workos_tokens))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "ada@acme.test"

    lists = await workos_client.get("/todo-lists", headers=bearer(workos_tokens))
    assert [item["name"] for item in lists.json()] == ["Ada's Todo List"]
    new = await workos_client.post(
        "/todo-lists", json={"name": "Groceries"}, headers=bearer(workos_tokens)
    )
    assert new.status_code == 201, new.text
    # --8<-- [end:whole-life]
    one = await workos_client.get(f"/todo-lists/{new.json()['id']}", headers=bearer(workos_tokens))
    assert one.json()["name"] == "Groceries"

    updated = factories.user_updated(
        ADA,
        email="ada@lovelace.test",
        first_name="Ada",
        last_name="Lovelace",
        updated_at=factories.at(60),
    )
    assert (await workos_send_webhook(updated)).status_code == 200

    assert (await workos_send_webhook(factories.session_created(ADA))).status_code == 200
    assert (await workos_send_webhook(factories.session_revoked(ADA))).status_code == 200
    user = app_user(workos_authkit)
    assert user is not None
    assert (user.email, user.name) == ("ada@lovelace.test", "Ada Lovelace")
    assert user.last_login_at is not None
    assert user.last_logout_at is not None

    # Deleted: the app user and their lists go, and the token no longer opens anything.
    assert (await workos_send_webhook(factories.user_deleted(ADA, id_only=True))).status_code == 200
    with Session(workos_authkit.engine) as session:
        assert session.exec(select(AppUser)).all() == []
        assert session.exec(select(TodoList)).all() == []
    refused = await workos_client.get("/me", headers=bearer(workos_tokens))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


async def test_todo_lists_need_a_token_and_stay_private(
    workos_send_webhook: SendWebhook, workos_client: httpx.AsyncClient, workos_tokens: TokenFactory
) -> None:
    assert (await workos_client.get("/todo-lists")).status_code == 401
    grace = "user_01GRACEEXAMPLEAPP00000000"
    for user_id, email in ((ADA, "ada@acme.test"), (grace, "grace@acme.test")):
        assert (await workos_send_webhook(factories.user_created(user_id, email=email))).is_success
    own = await workos_client.post(
        "/todo-lists", json={"name": "Mine"}, headers=bearer(workos_tokens)
    )
    other = await workos_client.get(
        f"/todo-lists/{own.json()['id']}", headers=bearer(workos_tokens, grace)
    )
    assert other.status_code == 404
    theirs = await workos_client.get("/todo-lists", headers=bearer(workos_tokens, grace))
    assert "Mine" not in [item["name"] for item in theirs.json()]


async def test_a_sign_in_before_the_user_is_synced_is_retried(
    workos_send_webhook: SendWebhook, workos_authkit: AuthKit
) -> None:
    early = factories.session_created(ADA)
    assert (await workos_send_webhook(early)).status_code == 500  # rolled back; WorkOS retries
    assert (await workos_send_webhook(factories.user_created(ADA))).status_code == 200
    retried = await workos_send_webhook(early)
    assert retried.json()["status"] == "applied"
    user = app_user(workos_authkit)
    assert user is not None
    assert user.last_login_at is not None


async def test_a_sign_in_of_a_deleted_user_is_ignored(workos_send_webhook: SendWebhook) -> None:
    assert (await workos_send_webhook(factories.user_deleted(ADA, id_only=True))).is_success
    assert (await workos_send_webhook(factories.session_created(ADA))).status_code == 200


# --8<-- [start:fake-workos]
async def test_a_user_whose_webhook_is_late_is_fetched_just_in_time(
    workos_fake: FakeWorkOS,
    workos_client: httpx.AsyncClient,
    workos_tokens: TokenFactory,
    workos_authkit: AuthKit,
) -> None:
    # The user exists in (fake) WorkOS, but no webhook has arrived yet.
    workos_fake.create_user(ADA, email="ada@acme.test", first_name="Ada")
    me = await workos_client.get("/me", headers=bearer(workos_tokens))
    assert me.status_code == 200, me.text
    # The just-in-time insert ran the user.created handler: the app user exists too.
    assert app_user(workos_authkit) is not None


async def test_backfill_gives_existing_users_their_app_rows(
    workos_fake: FakeWorkOS, workos_client: httpx.AsyncClient, workos_authkit: AuthKit
) -> None:
    for number in range(3):
        workos_fake.create_user(f"user_01EXISTING{number}", email=f"u{number}@acme.test")
    result = await workos_authkit.backfill_users()
    assert result.inserted == 3
    assert app_user(workos_authkit, "user_01EXISTING2") is not None


# --8<-- [end:fake-workos]


# -- organizations -------------------------------------------------------------------------------

ACME = "org_01ACMEEXAMPLEAPP000000000"
GRACE = "user_01GRACEEXAMPLEAPP00000000"
LINUS = "user_01LINUSEXAMPLEAPP00000000"


def org_bearer(
    tokens: TokenFactory, user_id: str = ADA, org_id: str | None = ACME
) -> dict[str, str]:
    # The token's `role` says "member" on purpose: the app trusts the mirrored membership.
    return {"Authorization": f"Bearer {tokens.mint(user_id, org_id=org_id, role='member')}"}


async def deliver_all(send: SendWebhook, *payloads: dict[str, Any]) -> None:
    for payload in payloads:
        response = await send(payload)
        assert response.status_code == 200, response.text


# --8<-- [start:org-members]
async def test_only_an_active_admin_lists_the_organizations_members(
    workos_send_webhook: SendWebhook, workos_client: httpx.AsyncClient, workos_tokens: TokenFactory
) -> None:
    await deliver_all(
        workos_send_webhook,
        factories.user_created(ADA, email="ada@acme.test", first_name="Ada", last_name="L"),
        factories.user_created(GRACE, email="grace@acme.test", first_name="Grace", last_name="H"),
        factories.organization_created("Acme", organization_id=ACME, created_at=factories.at(0)),
        factories.organization_membership_created(
            ADA, ACME, membership_id="om_ada", role="admin", created_at=factories.at(1)
        ),
        factories.organization_membership_created(
            GRACE, ACME, membership_id="om_grace", created_at=factories.at(2)
        ),
        # Linus's membership arrives before Linus: stored, and listed with his user id only.
        factories.organization_membership_created(
            LINUS, ACME, membership_id="om_linus", created_at=factories.at(3)
        ),
    )
    members = await workos_client.get("/org/members", headers=org_bearer(workos_tokens))
    assert members.status_code == 200, members.text
    assert [(m["user_id"], m["role"], m["email"], m["name"]) for m in members.json()] == [
        (ADA, "admin", "ada@acme.test", "Ada L"),
        (GRACE, "member", "grace@acme.test", "Grace H"),
        (LINUS, "member", None, None),
    ]

    # A member, even holding a token that claims "admin", is refused.
    as_grace = {"Authorization": f"Bearer {workos_tokens.mint(GRACE, org_id=ACME, role='admin')}"}
    refused = await workos_client.get("/org/members", headers=as_grace)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Only an organization admin may do this"


# --8<-- [end:org-members]


async def test_an_inactive_admin_or_a_token_without_organization_is_refused(
    workos_send_webhook: SendWebhook, workos_client: httpx.AsyncClient, workos_tokens: TokenFactory
) -> None:
    await deliver_all(
        workos_send_webhook,
        factories.user_created(ADA, email="ada@acme.test"),
        factories.organization_membership_created(
            ADA, ACME, membership_id="om_ada", role="admin", created_at=factories.at(1)
        ),
    )
    assert (await workos_client.get("/org/members", headers=org_bearer(workos_tokens))).is_success

    no_org = await workos_client.get("/org/members", headers=org_bearer(workos_tokens, org_id=None))
    assert no_org.status_code == 403
    assert "names no organization" in no_org.json()["detail"]
    elsewhere = await workos_client.get(
        "/org/members", headers=org_bearer(workos_tokens, org_id="org_01ELSEWHERE")
    )
    assert elsewhere.status_code == 403
    # Not synced, so asked of WorkOS just in time, which lists no such membership.
    assert elsewhere.json()["detail"] == "The user is not a member of the organization"

    # The membership is deactivated after the token was signed: the newest state wins.
    deactivated = factories.organization_membership_updated(
        "om_ada", ADA, ACME, role="admin", status="inactive", updated_at=factories.at(60)
    )
    await deliver_all(workos_send_webhook, deactivated)
    inactive = await workos_client.get("/org/members", headers=org_bearer(workos_tokens))
    assert inactive.status_code == 403
    assert inactive.json()["detail"] == "The membership is inactive, not active"
    assert (await workos_client.get("/org/members")).status_code == 401


async def test_todo_lists_are_shared_with_active_members_of_the_organization(
    workos_send_webhook: SendWebhook, workos_client: httpx.AsyncClient, workos_tokens: TokenFactory
) -> None:
    await deliver_all(
        workos_send_webhook,
        factories.user_created(ADA, email="ada@acme.test", first_name="Ada"),
        factories.user_created(GRACE, email="grace@acme.test", first_name="Grace"),
        factories.organization_membership_created(
            ADA, ACME, membership_id="om_ada", created_at=factories.at(1)
        ),
        factories.organization_membership_created(
            GRACE, ACME, membership_id="om_grace", created_at=factories.at(2)
        ),
    )
    shared = await workos_client.post(
        "/todo-lists", json={"name": "Roadmap", "shared": True}, headers=org_bearer(workos_tokens)
    )
    assert shared.status_code == 201, shared.text
    assert shared.json()["organization_id"] == ACME
    as_grace = org_bearer(workos_tokens, GRACE)
    lists = await workos_client.get("/todo-lists", headers=as_grace)
    assert [item["name"] for item in lists.json()] == ["Grace's Todo List", "Roadmap"]
    one = await workos_client.get(f"/todo-lists/{shared.json()['id']}", headers=as_grace)
    assert one.status_code == 200

    # Without the organization in her token, or once inactive, Grace no longer sees it.
    no_org = org_bearer(workos_tokens, GRACE, org_id=None)
    without_org = await workos_client.get("/todo-lists", headers=no_org)
    assert [item["name"] for item in without_org.json()] == ["Grace's Todo List"]
    await deliver_all(
        workos_send_webhook,
        factories.organization_membership_updated(
            "om_grace", GRACE, ACME, status="inactive", updated_at=factories.at(60)
        ),
    )
    gone = await workos_client.get(f"/todo-lists/{shared.json()['id']}", headers=as_grace)
    assert gone.status_code == 404
    # Sharing needs an active membership.
    refused = await workos_client.post(
        "/todo-lists", json={"name": "Mine too", "shared": True}, headers=as_grace
    )
    assert refused.status_code == 403
    assert refused.json()["detail"] == "The membership is inactive, not active"
