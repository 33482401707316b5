"""``current_organization``, ``current_membership`` and ``reject_revoked_sessions`` (issue 12).

A real app over HTTP, real RS256 tokens, real signed webhooks, a real database (SQLite and
PostgreSQL). Only WorkOS is faked, with the testing kit's `FakeWorkOS` (its JWKS, organizations
and memberships), reached through its own transport.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from starlette.websockets import WebSocketDisconnect

from fastapi_workos_authkit import (
    AccessTokenClaims,
    AuthKit,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSUser,
)
from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSClient
from fastapi_workos_authkit.testing import FakeWorkOS, TokenFactory, factories, signed_delivery
from tests.conftest import CLIENT_ID, WEBHOOK_SECRET, app_client, bearer, deliver

pytestmark = pytest.mark.anyio

BASE = "https://api.workos.test"
API_KEY = "sk_test_key"
ADA = "user_01ORGDEPADA000000000000000"
ORG = "org_01ORGDEPACME0000000000000"
SID = "session_01ORGDEPSESSION00000000"

Org = WorkOSOrganization
Membership = WorkOSOrganizationMembership


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory(CLIENT_ID)


@pytest.fixture
def fake(tokens: TokenFactory) -> FakeWorkOS:
    return FakeWorkOS(api_key=API_KEY, jwks=tokens.jwks(), client_id=CLIENT_ID)


def make_authkit(engine: Engine, fake: FakeWorkOS, **options: Any) -> AuthKit:
    kit = AuthKit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        api_base_url=BASE,
        engine=engine,
        http_transport=fake.transport(),
        **{"api_key": API_KEY, **options},
    )
    if kit.settings.api_key:
        # No retries: a failed fetch answers at once (the default policy backs off for seconds).
        kit.workos_api = WorkOSClient(
            base_url=BASE,
            api_key=API_KEY,
            transport=fake.transport(),
            retry=RetryPolicy(attempts=1),
        )
    return kit


@pytest.fixture
def authkit(engine: Engine, fake: FakeWorkOS) -> AuthKit:
    return make_authkit(engine, fake)


def make_app(authkit: AuthKit) -> FastAPI:
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())
    CurrentOrg = Annotated[Org, Depends(authkit.current_organization)]
    CurrentMembership = Annotated[Membership, Depends(authkit.current_membership)]

    @app.get("/me", responses=authkit.current_user.responses)
    async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
        return {"id": user.id}

    @app.get("/org", responses=authkit.current_organization.responses)
    async def org(organization: CurrentOrg) -> dict[str, str]:
        return {"id": organization.id, "name": organization.name or ""}

    @app.get("/membership", responses=authkit.current_membership.responses)
    async def membership(found: CurrentMembership) -> dict[str, Any]:
        return {"id": found.id, "role": found.role, "status": found.status}

    @app.get("/both")
    async def both(
        user: Annotated[WorkOSUser, Depends(authkit.current_user)], found: CurrentMembership
    ) -> dict[str, str]:
        return {"user": user.id, "membership": found.id}

    @app.get("/admins")
    async def admins(
        claims: Annotated[AccessTokenClaims, Depends(authkit.require_roles("admin"))],
    ) -> dict[str, str]:
        return {"sub": claims.sub}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, found: CurrentMembership) -> None:
        await websocket.accept()
        await websocket.send_json({"membership": found.id})
        await websocket.close()

    @app.websocket("/ws-org")
    async def ws_org(websocket: WebSocket, organization: CurrentOrg) -> None:
        await websocket.accept()
        await websocket.send_json({"organization": organization.id})
        await websocket.close()

    return app


@pytest.fixture
async def client(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(authkit)
    async with app_client(authkit, app) as client:
        yield client


async def sync_user(client: httpx.AsyncClient, user_id: str = ADA) -> None:
    assert (await deliver(client, factories.user_created(user_id))).status_code == 200


async def sync_org(client: httpx.AsyncClient, org_id: str = ORG) -> None:
    payload = factories.organization_created("Acme", organization_id=org_id)
    assert (await deliver(client, payload)).status_code == 200


async def sync_membership(
    client: httpx.AsyncClient, status: str = "active", role: str = "admin"
) -> str:
    payload = factories.organization_membership_created(ADA, ORG, role=role, status=status)
    assert (await deliver(client, payload)).status_code == 200
    membership_id: str = payload["data"]["id"]
    return membership_id


async def revoke(client: httpx.AsyncClient, sid: str = SID) -> None:
    created = factories.session_created(ADA, session_id=sid, organization_id=ORG)
    assert (await deliver(client, created)).status_code == 200
    revoked = factories.session_revoked(ADA, session_id=sid)
    assert (await deliver(client, revoked)).status_code == 200


def fetches(fake: FakeWorkOS, prefix: str) -> list[str]:
    return [request.path for request in fake.requests if request.path.startswith(prefix)]


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    return (
        response.status_code,
        response.json()["detail"],
        response.headers.get("www-authenticate", ""),
    )


# -- the happy paths -------------------------------------------------------------------------


async def test_synced_rows_are_the_callers_organization_and_membership(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    await sync_user(client)
    await sync_org(client)
    membership_id = await sync_membership(client)
    token = tokens.mint(ADA, org_id=ORG, sid=SID)
    org = await client.get("/org", headers=bearer(token))
    assert (org.status_code, org.json()) == (200, {"id": ORG, "name": "Acme"})
    found = await client.get("/membership", headers=bearer(token))
    assert found.json() == {"id": membership_id, "role": "admin", "status": "active"}
    both = await client.get("/both", headers=bearer(token))
    assert both.json() == {"user": ADA, "membership": membership_id}
    assert fetches(fake, "/organizations") == fetches(fake, "/user_management") == []


# -- 403: no organization, not active, deleted ----------------------------------------------


async def test_a_token_without_an_organization_is_refused_with_insufficient_scope(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    await sync_user(client)
    token = tokens.mint(ADA)
    for path in ("/org", "/membership"):
        status, detail, challenge = refusal(await client.get(path, headers=bearer(token)))
        assert status == 403
        assert "names no organization" in detail
        assert 'error="insufficient_scope"' in challenge


@pytest.mark.parametrize("status", ["inactive", "pending"])
async def test_a_membership_that_is_not_active_is_refused(
    client: httpx.AsyncClient, tokens: TokenFactory, status: str
) -> None:
    await sync_user(client)
    await sync_membership(client, status=status)
    response = await client.get("/membership", headers=bearer(tokens.mint(ADA, org_id=ORG)))
    assert refusal(response)[:2] == (403, f"The membership is {status}, not active")


async def test_deleted_rows_are_refused_without_asking_workos(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    await sync_user(client)
    await sync_org(client)
    membership_id = await sync_membership(client)
    deleted_org = factories.organization_deleted(ORG)
    deleted_membership = factories.organization_membership_deleted(membership_id, ADA, ORG)
    assert (await deliver(client, deleted_org)).status_code == 200
    assert (await deliver(client, deleted_membership)).status_code == 200
    # WorkOS still serves both (a stale answer): the tombstones must win all the same.
    fake.create_organization(ORG, name="Acme")
    fake.create_membership(ADA, ORG, membership_id=membership_id, role="admin")
    token = tokens.mint(ADA, org_id=ORG)
    org = await client.get("/org", headers=bearer(token))
    assert refusal(org)[:2] == (403, "The organization was deleted")
    found = await client.get("/membership", headers=bearer(token))
    assert refusal(found)[:2] == (403, "The membership was deleted")
    assert fetches(fake, "/organizations") == []


async def test_the_user_must_be_synced_and_not_deleted(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    await sync_user(client)
    await sync_membership(client)
    assert (await deliver(client, factories.user_deleted(ADA))).status_code == 200
    for path in ("/org", "/membership"):
        response = await client.get(path, headers=bearer(tokens.mint(ADA, org_id=ORG)))
        assert refusal(response)[:2] == (401, "The user was deleted")


# -- just in time ----------------------------------------------------------------------------


async def test_unsynced_rows_are_fetched_just_in_time_through_the_pipeline(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS, authkit: AuthKit
) -> None:
    ran: list[str] = []
    authkit.add_handler("organization.created", lambda session, event: ran.append(event.event))
    authkit.add_handler(
        "organization_membership.created", lambda session, event: ran.append(event.event)
    )
    await sync_user(client)
    fake.create_organization(ORG, name="Fetched Inc")
    created = fake.create_membership(ADA, ORG, role="admin")
    token = tokens.mint(ADA, org_id=ORG)
    org = await client.get("/org", headers=bearer(token))
    assert org.json() == {"id": ORG, "name": "Fetched Inc"}
    found = await client.get("/membership", headers=bearer(token))
    assert found.json() == {"id": created["id"], "role": "admin", "status": "active"}
    assert ran == ["organization.created", "organization_membership.created"]
    listing = [r for r in fake.requests if r.path == "/user_management/organization_memberships"]
    assert len(listing) == 1
    assert listing[0].params("user_id") == [ADA]
    assert listing[0].params("organization_id") == [ORG]
    assert set(listing[0].params("statuses")[0].split(",")) == {"active", "inactive", "pending"}
    # Now mirrored: no further call.
    await client.get("/org", headers=bearer(token))
    await client.get("/membership", headers=bearer(token))
    assert fetches(fake, "/organizations") == [f"/organizations/{ORG}"]
    assert len(fetches(fake, "/user_management/organization_memberships")) == 1


async def test_a_fetched_inactive_membership_is_mirrored_and_refused(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    await sync_user(client)
    fake.create_membership(ADA, ORG, role="member", status="inactive")
    response = await client.get("/membership", headers=bearer(tokens.mint(ADA, org_id=ORG)))
    assert refusal(response)[:2] == (403, "The membership is inactive, not active")


async def test_unknown_to_workos_is_403_and_remembered(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    await sync_user(client)
    token = tokens.mint(ADA, org_id=ORG)
    for _ in range(3):
        org = await client.get("/org", headers=bearer(token))
        assert refusal(org)[:2] == (403, "The organization does not exist")
        found = await client.get("/membership", headers=bearer(token))
        assert refusal(found)[:2] == (403, "The user is not a member of the organization")
    assert len(fetches(fake, "/organizations")) == 1
    assert len(fetches(fake, "/user_management/organization_memberships")) == 1


async def test_without_an_api_key_an_unsynced_row_is_403_saying_so(
    engine: Engine, fake: FakeWorkOS, tokens: TokenFactory
) -> None:
    authkit = make_authkit(engine, fake, api_key=None)
    app = make_app(authkit)
    async with app_client(authkit, app) as client:
        await sync_user(client)
        token = tokens.mint(ADA, org_id=ORG)
        org = await client.get("/org", headers=bearer(token))
        assert refusal(org)[:2] == (
            403,
            "The organization is not synced yet, and no WorkOS API key is set to fetch it",
        )
        found = await client.get("/membership", headers=bearer(token))
        assert refusal(found)[:2] == (
            403,
            "The membership is not synced yet, and no WorkOS API key is set to fetch it",
        )
    assert fetches(fake, "/organizations") == []
    assert fetches(fake, "/user_management") == []


async def test_workos_down_is_503(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    await sync_user(client)
    fake.fail_with_status(2, status=503)
    token = tokens.mint(ADA, org_id=ORG)
    org = await client.get("/org", headers=bearer(token))
    found = await client.get("/membership", headers=bearer(token))
    for response in (org, found):
        assert response.status_code == 503
        assert response.json()["detail"] == "WorkOS could not be reached; retry later"
        assert response.headers["retry-after"] == "5"


class GatedTransport(httpx.AsyncBaseTransport):
    """The fake WorkOS, whose answers are held until ``expected`` requests are accounted for:
    each one either calls WorkOS (waiting here) or waits on another request's fetch."""

    def __init__(self, inner: httpx.AsyncBaseTransport, waiting: Any, expected: int) -> None:
        self.inner = inner
        self.waiting = waiting
        self.expected = expected
        self.calling = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calling += 1
        # A guard, not a measurement: a broken single flight fails the test rather than hang.
        with anyio.fail_after(30):
            while self.calling + self.waiting() < self.expected:
                await anyio.lowlevel.checkpoint()
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("path", ["/org", "/membership"])
async def test_concurrent_requests_share_one_fetch(
    client: httpx.AsyncClient,
    tokens: TokenFactory,
    fake: FakeWorkOS,
    authkit: AuthKit,
    path: str,
) -> None:
    await sync_user(client)
    fake.create_organization(ORG, name="Acme")
    fake.create_membership(ADA, ORG, role="admin")
    count = 8
    store = authkit.organizations
    if path == "/org":
        gate = GatedTransport(
            fake.transport(), lambda: store.fetch_waiters("organization", ORG), count
        )
    else:
        gate = GatedTransport(
            fake.transport(),
            lambda: store.fetch_waiters("organization_membership", (ADA, ORG)),
            count,
        )
    authkit.workos_api = WorkOSClient(
        base_url=BASE, api_key=API_KEY, transport=gate, retry=RetryPolicy(attempts=1)
    )
    token = tokens.mint(ADA, org_id=ORG)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await client.get(path, headers=bearer(token))).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    assert statuses == [200] * count
    assert gate.calling == 1


# -- revoked sessions ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/me", "/org", "/membership", "/both", "/admins"])
async def test_a_revoked_sessions_token_is_refused_everywhere(
    client: httpx.AsyncClient, tokens: TokenFactory, path: str
) -> None:
    await sync_user(client)
    await sync_org(client)
    await sync_membership(client)
    token = tokens.mint(ADA, org_id=ORG, role="admin", sid=SID)
    other_session = tokens.mint(ADA, org_id=ORG, role="admin", sid="session_01STILLACTIVE")
    assert (await client.get(path, headers=bearer(token))).status_code == 200
    await revoke(client)
    status, detail, challenge = refusal(await client.get(path, headers=bearer(token)))
    assert (status, detail) == (401, "The session was revoked")
    assert 'error="invalid_token"' in challenge
    # Only that session: the user's other sign-ins still work.
    assert (await client.get(path, headers=bearer(other_session))).status_code == 200


async def test_a_revoked_before_created_session_is_refused_too(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    await sync_user(client)
    revoked = factories.session_revoked(ADA, session_id=SID)
    assert (await deliver(client, revoked)).status_code == 200
    response = await client.get("/me", headers=bearer(tokens.mint(ADA, sid=SID)))
    assert refusal(response)[:2] == (401, "The session was revoked")


async def test_an_expired_session_is_not_refused(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    # A sign-out is "revoked"; "expired" is a timeout WorkOS sends no event for, and the
    # token's own exp bounds it (see UserStore.load).
    await sync_user(client)
    expired = factories.session_created(ADA, session_id=SID, status="expired")
    assert (await deliver(client, expired)).status_code == 200
    assert (await client.get("/me", headers=bearer(tokens.mint(ADA, sid=SID)))).status_code == 200


async def test_an_unsynced_user_with_a_revoked_session_is_fetched_then_refused(
    client: httpx.AsyncClient, tokens: TokenFactory, fake: FakeWorkOS
) -> None:
    fake.create_user(ADA)
    await revoke(client)
    response = await client.get("/me", headers=bearer(tokens.mint(ADA, sid=SID)))
    assert refusal(response)[:2] == (401, "The session was revoked")


@pytest.mark.parametrize(
    "options", [{"reject_revoked_sessions": False}, {"mirror": ["organization"]}]
)
async def test_the_check_can_be_turned_off(
    engine: Engine, fake: FakeWorkOS, tokens: TokenFactory, options: dict[str, Any]
) -> None:
    authkit = make_authkit(engine, fake, **options)
    assert authkit.users.reject_revoked_sessions is False
    app = make_app(authkit)
    async with app_client(authkit, app) as client:
        await sync_user(client)
        await revoke(client)
        token = tokens.mint(ADA, org_id=ORG, role="admin", sid=SID)
        assert (await client.get("/me", headers=bearer(token))).status_code == 200
        assert (await client.get("/admins", headers=bearer(token))).status_code == 200


# -- one round trip ---------------------------------------------------------------------------


def count_statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


async def test_the_session_is_read_with_the_user_in_one_statement(
    engine: Engine, fake: FakeWorkOS, tokens: TokenFactory, backend: str
) -> None:
    # The thread mode reads on the engine's own pool, where every statement is seen; the
    # SQLite reader thread and the PostgreSQL read pool run the same compiled statement.
    authkit = make_authkit(engine, fake)
    authkit.users.mode = "thread"
    app = make_app(authkit)
    async with app_client(authkit, app) as client:
        await sync_user(client)
        await revoke(client)
        active = tokens.mint(ADA, sid="session_01OTHER")
        revoked = tokens.mint(ADA, sid=SID)
        authkit.users.read(ADA)  # compiles the statement; warms the pool
        seen = count_statements(engine)
        assert (await client.get("/me", headers=bearer(active))).status_code == 200
        assert (await client.get("/me", headers=bearer(revoked))).status_code == 401
    reads = [s for s in seen if "workos_users" in s or "workos_sessions" in s]
    assert len(reads) == 2
    assert all("workos_users" in s and "workos_sessions" in s for s in reads)


async def test_each_read_mode_answers_the_same(
    engine: Engine, fake: FakeWorkOS, tokens: TokenFactory, backend: str
) -> None:
    # "auto": the SQLite reader thread, or the PostgreSQL read pool (engine= of the app's
    # makes it "thread"; AuthKit's own engine picks "async" on psycopg).
    kit = AuthKit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        api_base_url=BASE,
        http_transport=fake.transport(),
        database_url=engine.url.render_as_string(hide_password=False),
    )
    app = make_app(kit)
    try:
        async with (
            kit.lifespan(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
        ):
            # The path this test covers: the read pool, or the SQLite reader thread.
            assert kit.users.resolved_mode() == ("async" if backend == "postgresql" else "thread")
            await sync_user(c)
            await revoke(c)
            ok = await c.get("/me", headers=bearer(tokens.mint(ADA, sid="session_01OTHER")))
            no_sid = await c.get("/me", headers=bearer(tokens.mint(ADA)))
            refused = await c.get("/me", headers=bearer(tokens.mint(ADA, sid=SID)))
            assert (ok.status_code, no_sid.status_code) == (200, 200)
            assert refusal(refused)[:2] == (401, "The session was revoked")
    finally:
        kit.engine.dispose()


# -- WebSockets, OpenAPI, overrides ------------------------------------------------------------


@pytest.fixture
def ws_client(authkit: AuthKit) -> Iterator[TestClient]:
    with TestClient(make_app(authkit)) as client:
        yield client


def ws_close_code(ws_client: TestClient, path: str, token: str) -> int:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        ws_client.websocket_connect(path, headers=bearer(token)) as websocket,
    ):
        websocket.receive_json()
    return closed.value.code


def test_websockets_get_the_membership_or_a_close_code(
    ws_client: TestClient, tokens: TokenFactory
) -> None:
    for payload in (
        factories.user_created(ADA),
        factories.organization_created("Acme", organization_id=ORG),
        factories.organization_membership_created(ADA, ORG, membership_id="om_01WS"),
    ):
        content, headers = signed_delivery(payload, WEBHOOK_SECRET)
        assert ws_client.post("/workos/webhook", content=content, headers=headers).is_success
    token = tokens.mint(ADA, org_id=ORG, sid=SID)
    with ws_client.websocket_connect("/ws", headers=bearer(token)) as websocket:
        assert websocket.receive_json() == {"membership": "om_01WS"}
    with ws_client.websocket_connect("/ws-org", headers=bearer(token)) as websocket:
        assert websocket.receive_json() == {"organization": ORG}
    assert ws_close_code(ws_client, "/ws", tokens.mint(ADA)) == 1008  # no organization
    for payload in (
        factories.session_created(ADA, session_id=SID),
        factories.session_revoked(ADA, session_id=SID),
    ):
        content, headers = signed_delivery(payload, WEBHOOK_SECRET)
        assert ws_client.post("/workos/webhook", content=content, headers=headers).is_success
    assert ws_close_code(ws_client, "/ws", token) == 1008
    assert ws_close_code(ws_client, "/ws-org", token) == 1008


def test_openapi_documents_401_403_and_503(authkit: AuthKit) -> None:
    schema = make_app(authkit).openapi()
    for path in ("/org", "/membership"):
        operation = schema["paths"][path]["get"]
        assert {"401", "403", "503"} <= set(operation["responses"])
        assert operation["security"] == [{"WorkOSAccessToken": []}]
    assert {"401", "503"} <= set(schema["paths"]["/me"]["get"]["responses"])


async def test_the_dependencies_are_stable_and_can_be_overridden(authkit: AuthKit) -> None:
    assert authkit.current_organization is authkit.current_organization
    app = make_app(authkit)
    fake_membership = Membership(
        id="om_01FAKE", user_id=ADA, organization_id=ORG, status="active", role="viewer"
    )
    app.dependency_overrides[authkit.current_membership] = lambda: fake_membership
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        response = await c.get("/membership")  # no token at all
    assert response.json() == {"id": "om_01FAKE", "role": "viewer", "status": "active"}
