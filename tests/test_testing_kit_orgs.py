"""The testing kit's organizations, memberships and sessions: factories, tokens, FakeWorkOS.

FakeWorkOS is reached over HTTP through its own transport, as the package's client reaches it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fastapi_workos_authkit import OrganizationMembership
from fastapi_workos_authkit.testing import FakeWorkOS, TokenFactory, factories

pytestmark = pytest.mark.anyio

ORG = "org_01KITORGANIZATION000000000"
OTHER_ORG = "org_01KITOTHERORGANIZATION0000"
ADA = "user_01KITADA00000000000000000"
GRACE = "user_01KITGRACE000000000000000"


class Clock:
    """The fake's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key="sk_test_kit", now=Clock())


@pytest.fixture
async def api(fake: FakeWorkOS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=fake.transport(),
        base_url="https://api.workos.test",
        headers={"Authorization": "Bearer sk_test_kit"},
    ) as client:
        yield client


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# -- factories --------------------------------------------------------------------------------


def test_event_factories_cover_every_mirrored_type() -> None:
    at = factories.at
    events = [
        factories.organization_created("Acme", organization_id=ORG, created_at=at(0)),
        factories.organization_updated(ORG, name="Acme Inc", updated_at=at(5), created_at=at(0)),
        factories.organization_deleted(ORG),
        factories.organization_membership_created(ADA, ORG, membership_id="om_1", role="admin"),
        factories.organization_membership_updated("om_1", ADA, ORG, status="inactive"),
        factories.organization_membership_deleted("om_1", ADA, ORG),
        factories.session_created(ADA, session_id="session_1", organization_id=ORG),
        factories.session_revoked(ADA, session_id="session_1"),
    ]
    assert [e["event"] for e in events] == [
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organization_membership.created",
        "organization_membership.updated",
        "organization_membership.deleted",
        "session.created",
        "session.revoked",
    ]
    assert events[1]["data"]["name"] == "Acme Inc"
    assert events[1]["created_at"] == events[1]["data"]["updated_at"] == "2026-01-15T12:00:05.000Z"
    assert factories.organization_deleted(ORG, id_only=True)["data"] == {"id": ORG}
    assert events[4]["data"]["status"] == "inactive"
    revoked = events[7]["data"]
    assert (revoked["status"], revoked["id"]) == ("revoked", "session_1")
    assert revoked["ended_at"] == revoked["updated_at"]
    assert events[6]["data"]["organization_id"] == ORG
    assert events[6]["data"]["ended_at"] is None


def test_membership_object_has_the_spec_shape_and_parses() -> None:
    data = factories.organization_membership(
        ADA,
        ORG,
        "om_2",
        role="admin",
        roles=["admin", "billing"],
        status="pending",
        directory_managed=True,
        custom_attributes={"team": "core"},
        organization_name="Acme",
    )
    assert data["object"] == "organization_membership"
    assert data["role"] == {"slug": "admin"}
    assert data["roles"] == [{"slug": "admin"}, {"slug": "billing"}]
    assert data["organization_name"] == "Acme"
    parsed = OrganizationMembership.model_validate(data)
    assert (parsed.user_id, parsed.organization_id, parsed.status) == (ADA, ORG, "pending")
    assert "organization_name" not in factories.organization_membership(ADA, ORG)


def test_organization_object_has_domain_objects() -> None:
    data = factories.organization(ORG, name="Acme", domains=["acme.test", "acme.example"])
    assert [d["domain"] for d in data["domains"]] == ["acme.test", "acme.example"]
    assert {d["object"] for d in data["domains"]} == {"organization_domain"}
    assert factories.organization(ORG, domains=[])["domains"] == []


# -- tokens -----------------------------------------------------------------------------------


def payload(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def test_mint_takes_organization_claims_and_sid() -> None:
    tokens = TokenFactory("client_01KIT")
    claims = payload(
        tokens.mint(
            ADA,
            org_id=ORG,
            role="admin",
            roles=["admin", "billing"],
            permissions=["members:read"],
            sid="session_01KIT",
        )
    )
    assert claims["sub"] == ADA
    assert claims["org_id"] == ORG
    assert claims["role"] == "admin"
    assert claims["roles"] == ["admin", "billing"]
    assert claims["permissions"] == ["members:read"]
    assert claims["sid"] == "session_01KIT"


def test_mint_leaves_organization_claims_out_by_default() -> None:
    claims = payload(TokenFactory("client_01KIT").mint(ADA))
    assert not {"org_id", "role", "roles", "permissions"} & claims.keys()
    assert claims["sid"].startswith("session_01")


# -- FakeWorkOS: organizations ----------------------------------------------------------------


async def test_organizations_list_pages_in_both_orders(
    fake: FakeWorkOS, api: httpx.AsyncClient
) -> None:
    created = [fake.create_organization(f"org_{n}", name=f"Org {n}")["id"] for n in range(5)]
    first = await api.get("/organizations", params={"limit": 2, "order": "asc"})
    assert ids(first) == created[:2]
    assert first.json()["object"] == "list"
    assert first.json()["list_metadata"] == {"before": None, "after": "org_1"}
    second = await api.get("/organizations", params={"limit": 2, "order": "asc", "after": "org_1"})
    assert ids(second) == created[2:4]
    last = await api.get("/organizations", params={"limit": 2, "order": "asc", "after": "org_3"})
    assert ids(last) == ["org_4"]
    assert last.json()["list_metadata"] == {"before": "org_4", "after": None}
    # WorkOS lists newest first unless told otherwise.
    assert ids(await api.get("/organizations")) == created[::-1]
    before = await api.get("/organizations", params={"order": "asc", "before": "org_3"})
    assert ids(before) == created[:3]


async def test_organization_get_update_delete(fake: FakeWorkOS, api: httpx.AsyncClient) -> None:
    created = fake.create_organization(ORG, name="Acme", domains=["acme.test"])
    got = await api.get(f"/organizations/{ORG}")
    assert got.status_code == 200
    assert got.json() == created
    updated = fake.update_organization(ORG, name="Acme Inc")
    assert updated["updated_at"] > created["updated_at"]
    assert (await api.get(f"/organizations/{ORG}")).json()["name"] == "Acme Inc"
    fake.delete_organization(ORG)
    missing = await api.get(f"/organizations/{ORG}")
    assert missing.status_code == 404
    assert missing.json()["code"] == "entity_not_found"
    assert (await api.get("/organizations/org_unknown")).status_code == 404
    assert ids(await api.get("/organizations")) == []
    assert fake.organizations == []
    with pytest.raises(KeyError, match="no live organization"):
        fake.update_organization(ORG, name="Back")
    with pytest.raises(ValueError, match="already exists"):
        fake.create_organization(ORG)


async def test_organization_routes_need_the_api_key(fake: FakeWorkOS) -> None:
    fake.create_organization(ORG)
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url="https://api.workos.test"
    ) as anonymous:
        assert (await anonymous.get("/organizations")).status_code == 401
        assert (await anonymous.get(f"/organizations/{ORG}")).status_code == 401


# -- FakeWorkOS: memberships ------------------------------------------------------------------


# --8<-- [start:memberships]
@pytest.fixture
def memberships(fake: FakeWorkOS) -> dict[str, str]:
    fake.create_organization(ORG, name="Acme")
    fake.create_organization(OTHER_ORG, name="Other")
    made = {
        "ada_acme": fake.create_membership(ADA, ORG, "om_ada_acme", role="admin"),
        "grace_acme": fake.create_membership(GRACE, ORG, "om_grace_acme"),
        "ada_other": fake.create_membership(ADA, OTHER_ORG, "om_ada_other"),
        "grace_other": fake.create_membership(GRACE, OTHER_ORG, "om_grace_other", status="pending"),
        "old_acme": fake.create_membership("user_old", ORG, "om_old_acme", status="inactive"),
    }
    return {name: membership["id"] for name, membership in made.items()}


async def test_memberships_filter_by_organization_or_user(
    api: httpx.AsyncClient, memberships: dict[str, str]
) -> None:
    path = "/user_management/organization_memberships"
    by_org = await api.get(path, params={"organization_id": ORG, "order": "asc"})
    assert ids(by_org) == ["om_ada_acme", "om_grace_acme"]  # active only by default
    by_user = await api.get(path, params={"user_id": ADA, "order": "asc"})
    assert ids(by_user) == ["om_ada_acme", "om_ada_other"]
    both = await api.get(path, params={"user_id": GRACE, "organization_id": OTHER_ORG})
    assert ids(both) == []  # Grace's membership there is pending
    every = await api.get(
        path,
        params={
            "user_id": GRACE,
            "organization_id": OTHER_ORG,
            "statuses": "active,inactive,pending",
        },
    )
    assert ids(every) == ["om_grace_other"]
    inactive = await api.get(path, params={"organization_id": ORG, "statuses": "inactive"})
    assert ids(inactive) == ["om_old_acme"]
    repeated = await api.get(
        path, params=[("organization_id", ORG), ("statuses", "active"), ("statuses", "inactive")]
    )
    assert sorted(ids(repeated)) == ["om_ada_acme", "om_grace_acme", "om_old_acme"]
    admin = by_org.json()["data"][0]
    assert admin["role"] == {"slug": "admin"}
    assert admin["organization_id"] == ORG


# --8<-- [end:memberships]


async def test_memberships_list_requires_a_user_or_an_organization(
    api: httpx.AsyncClient, memberships: dict[str, str]
) -> None:
    path = "/user_management/organization_memberships"
    refused = await api.get(path, params={"statuses": "active"})
    assert refused.status_code == 422
    assert "user_id or organization_id is required" in refused.json()["message"]
    bad_status = await api.get(path, params={"user_id": ADA, "statuses": "active,gone"})
    assert bad_status.status_code == 422
    assert "gone" in bad_status.json()["message"]


async def test_memberships_page_with_after(
    api: httpx.AsyncClient, memberships: dict[str, str]
) -> None:
    path = "/user_management/organization_memberships"
    params: dict[str, Any] = {
        "organization_id": ORG,
        "statuses": "active,inactive,pending",
        "limit": 2,
        "order": "asc",
    }
    seen: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        response = await api.get(path, params={**params, **({"after": after} if after else {})})
        seen += ids(response)
        pages += 1
        after = response.json()["list_metadata"]["after"]
        if after is None:
            break
    assert seen == ["om_ada_acme", "om_grace_acme", "om_old_acme"]
    assert pages == 2
    unknown = await api.get(path, params={**params, "after": "om_unknown"})
    assert unknown.status_code == 400


async def test_membership_get_update_delete_and_their_events(
    fake: FakeWorkOS, api: httpx.AsyncClient, memberships: dict[str, str]
) -> None:
    path = "/user_management/organization_memberships"
    got = await api.get(f"{path}/om_grace_acme")
    assert got.status_code == 200
    assert got.json()["user_id"] == GRACE
    changed = fake.update_membership("om_grace_acme", role="admin", status="inactive")
    assert changed["role"] == {"slug": "admin"}
    assert changed["roles"] == [{"slug": "admin"}]
    assert (await api.get(f"{path}/om_grace_acme")).json()["status"] == "inactive"
    fake.delete_membership("om_grace_acme")
    assert (await api.get(f"{path}/om_grace_acme")).status_code == 404
    assert (await api.get(f"{path}/om_unknown")).status_code == 404
    assert "om_grace_acme" not in [m["id"] for m in fake.memberships]

    org_events = [e for e in fake.events if not e["event"].startswith("user.")]
    assert [e["event"] for e in org_events] == [
        "organization.created",
        "organization.created",
        *["organization_membership.created"] * 5,
        "organization_membership.updated",
        "organization_membership.deleted",
    ]
    # The log keeps each snapshot as it was: the update says inactive, the create active.
    grace = [e["data"] for e in org_events if e["data"]["id"] == "om_grace_acme"]
    assert [m["status"] for m in grace] == ["active", "inactive", "inactive"]
    assert grace[0]["updated_at"] < grace[1]["updated_at"]


async def test_events_api_serves_the_organization_events(
    fake: FakeWorkOS, api: httpx.AsyncClient
) -> None:
    fake.create_organization(ORG, name="Acme")
    fake.create_membership(ADA, ORG, "om_events")
    fake.update_organization(ORG, name="Acme Inc")
    fake.delete_organization(ORG)
    response = await api.get(
        "/events",
        params={"events": "organization.created,organization.updated,organization.deleted"},
    )
    assert response.status_code == 200
    assert [e["event"] for e in response.json()["data"]] == [
        "organization.created",
        "organization.updated",
        "organization.deleted",
    ]
    assert response.json()["data"][1]["data"]["name"] == "Acme Inc"


async def test_faults_apply_to_organization_routes(
    fake: FakeWorkOS, api: httpx.AsyncClient
) -> None:
    fake.create_organization(ORG)
    fake.fail_with_429(path="/organizations", retry_after=2)
    limited = await api.get("/organizations")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    fake.drop_connection(path="/user_management/organization_memberships")
    with pytest.raises(httpx.RemoteProtocolError):
        await api.get("/user_management/organization_memberships", params={"organization_id": ORG})
    assert ids(await api.get("/organizations")) == [ORG]
