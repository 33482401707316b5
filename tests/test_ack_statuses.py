"""The webhook's acknowledgement says what a delivery did: WorkOS shows it in its delivery log."""

from __future__ import annotations

import httpx
import pytest

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import app_client, build_app, deliver

pytestmark = pytest.mark.anyio


async def _status(client: httpx.AsyncClient, payload: dict) -> str:  # type: ignore[type-arg]
    response = await deliver(client, payload)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def test_user_deliveries_say_applied_stale_unchanged_duplicate_or_tombstoned(
    client: httpx.AsyncClient,
) -> None:
    created = factories.user_created("user_01ACK", updated_at=at(10))
    assert await _status(client, created) == "applied"
    assert await _status(client, created) == "duplicate"
    same = factories.user_updated("user_01ACK", updated_at=at(10))
    assert await _status(client, same) == "unchanged"
    older = factories.user_updated("user_01ACK", updated_at=at(5))
    assert await _status(client, older) == "stale"
    assert await _status(client, factories.user_updated("user_01ACK", updated_at=at(20))) == (
        "applied"
    )
    assert await _status(client, factories.user_deleted("user_01ACK")) == "applied"
    late = factories.user_updated("user_01ACK", updated_at=at(30))
    assert await _status(client, late) == "tombstoned"
    # A delete of an id never seen removes nothing; its tombstone keeps a late create out.
    assert await _status(client, factories.user_deleted("user_01NEVER", id_only=True)) == (
        "tombstoned"
    )
    assert await _status(client, factories.user_created("user_01NEVER")) == "tombstoned"


async def test_organizations_memberships_and_sessions_say_why_too(
    client: httpx.AsyncClient,
) -> None:
    org = factories.organization_created(organization_id="org_01ACK")
    assert await _status(client, org) == "applied"
    assert await _status(client, factories.organization_deleted("org_01ACK")) == "applied"
    assert await _status(client, factories.organization_updated("org_01ACK")) == "tombstoned"
    revoked = factories.session_revoked("user_01ACK", session_id="session_01ACK")
    assert await _status(client, revoked) == "applied"
    created = factories.session_created("user_01ACK", session_id="session_01ACK")
    assert await _status(client, created) == "stale"  # an ended session never comes back


async def test_an_event_of_a_kind_not_mirrored_is_applied_by_its_own_handlers(
    authkit: AuthKit,
) -> None:
    seen: list[str] = []
    authkit.add_handler("user.password_reset", lambda session, event: seen.append(event.id))
    event = factories.event("user.password_reset", {"id": "password_reset_01", "user_id": "u"})
    async with app_client(authkit) as client:
        assert await _status(client, event) == "applied"
    assert seen == [event["id"]]


def test_the_openapi_schema_lists_every_status(authkit: AuthKit) -> None:
    schema = build_app(authkit).openapi()["components"]["schemas"]["WebhookAck"]
    assert schema["properties"]["status"]["enum"] == [
        "applied",
        "unchanged",
        "stale",
        "tombstoned",
        "duplicate",
    ]
    assert "Only `applied` runs handlers" in schema["properties"]["status"]["description"]
