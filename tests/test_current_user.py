"""current_user and friends over HTTP: a real app, real RS256 tokens, a real database.

Only WorkOS is faked: its JWKS and its users endpoint, behind one httpx transport.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.websockets import WebSocketDisconnect

from fastapi_workos_authkit import AccessTokenClaims, AuthKit, Event, User, WorkOSUser
from fastapi_workos_authkit._sync.user_table import apply_user_deletion
from fastapi_workos_authkit.testing import FakeJWKS, RSAKeyPair, TokenFactory, factories
from tests.conftest import CLIENT_ID, WEBHOOK_SECRET, app_client, bearer, deliver
from tests.gated_transport import GatedTransport

BASE = "https://api.workos.test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_768_478_400.0

    def __call__(self) -> float:
        return self.now


class FakeUsersAPI:
    """``GET /user_management/users/<id>`` of a fake WorkOS, counting calls."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.auth_headers: list[str | None] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        prefix = "/user_management/users/"
        if request.method == "GET" and request.url.path.startswith(prefix):
            user_id = request.url.path[len(prefix) :]
            self.calls.append(user_id)
            self.auth_headers.append(request.headers.get("authorization"))
            if user_id in self.users:
                return httpx.Response(200, json=self.users[user_id])
            return httpx.Response(404, json={"message": "User not found"})
        return httpx.Response(404, json={"message": "Not Found"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenFactory:
    return TokenFactory(CLIENT_ID, clock=clock)


@pytest.fixture
def users_api() -> FakeUsersAPI:
    return FakeUsersAPI()


@pytest.fixture
def jwks(tokens: TokenFactory, users_api: FakeUsersAPI) -> FakeJWKS:
    return FakeJWKS(tokens, api_base_url=BASE, fallback=users_api.handle)


def make_authkit(engine: Engine, jwks: FakeJWKS, clock: FakeClock, **options: Any) -> AuthKit:
    options.setdefault("api_key", "sk_test_key")
    return AuthKit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        api_base_url=BASE,
        engine=engine,
        http_transport=jwks.transport(),
        clock=clock,
        **options,
    )


@pytest.fixture
def authkit(engine: Engine, jwks: FakeJWKS, clock: FakeClock) -> AuthKit:
    return make_authkit(engine, jwks, clock)


def make_app(authkit: AuthKit) -> FastAPI:
    """An app using every dependency, the way the docs show."""
    CurrentUser = Annotated[WorkOSUser, Depends(authkit.current_user)]
    OptionalUser = Annotated[WorkOSUser | None, Depends(authkit.optional_user)]
    Claims = Annotated[AccessTokenClaims, Depends(authkit.claims)]

    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"id": user.id, "email": user.email}

    @app.get("/me-sync")
    def me_sync(user: CurrentUser) -> dict[str, str]:
        return {"id": user.id}

    @app.get("/maybe")
    async def maybe(user: OptionalUser) -> dict[str, str | None]:
        return {"id": user.id if user else None}

    @app.get("/claims")
    async def claims(claims: Claims) -> dict[str, Any]:
        return {"sub": claims.sub, "org_id": claims.org_id, "permissions": claims.permissions}

    @app.get("/admin", dependencies=[Depends(authkit.require_permissions("admin:write"))])
    async def admin() -> dict[str, bool]:
        return {"ok": True}

    @app.get(
        "/two-permissions",
        dependencies=[Depends(authkit.require_permissions("posts:read", "posts:write"))],
    )
    async def two_permissions() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/staff", dependencies=[Depends(authkit.require_roles("admin", "owner"))])
    async def staff() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/org", dependencies=[Depends(authkit.require_organization())])
    async def org() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/acme", dependencies=[Depends(authkit.require_organization("org_01ACME"))])
    async def acme() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/everything", dependencies=[Depends(authkit.require_permissions("admin:write"))])
    async def everything(user: CurrentUser, claims: Claims, maybe: OptionalUser) -> dict[str, Any]:
        return {"id": user.id, "sub": claims.sub, "same": maybe is not None}

    @app.get("/public")
    async def public() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, user: CurrentUser) -> None:
        await websocket.accept()
        await websocket.send_json({"id": user.id})
        await websocket.close()

    return app


@pytest.fixture
async def client(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(authkit)
    async with app_client(authkit, app) as c:
        yield c


def seed_user(authkit: AuthKit, user_id: str, **fields: Any) -> None:
    authkit.pipeline.apply_user_snapshot(User.model_validate(factories.user(user_id, **fields)))


def assert_invalid_token(response: httpx.Response, description: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert description in challenge
    assert description in response.json()["detail"]


# --- the happy path -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_valid_token_resolves_to_the_synced_row(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, jwks: FakeJWKS
) -> None:
    seed_user(authkit, "user_01A", email="a@example.com")
    token = tokens.mint("user_01A")
    for path in ("/me", "/me-sync"):
        response = await client.get(path, headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == "user_01A"
    assert (await client.get("/me", headers=bearer(token))).json()["email"] == "a@example.com"
    assert jwks.requests == 1  # preloaded in the lifespan, never fetched again


@pytest.mark.anyio
async def test_the_row_is_a_real_detached_workos_user(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, engine: Engine
) -> None:
    seed_user(authkit, "user_01A", metadata={"plan": "pro"})
    user = await authkit.current_user(_connection(tokens.mint("user_01A")))
    assert isinstance(user, WorkOSUser)
    assert user.user_metadata == {"plan": "pro"}
    assert user.updated_at.tzinfo is not None
    # An app can merge it into its own session and update it like any loaded row.
    with Session(engine) as session:
        row = session.merge(user)
        row.first_name = "Changed"
        session.commit()
    with Session(engine) as session:
        stored = session.get(WorkOSUser, "user_01A")
        assert stored is not None
        assert stored.first_name == "Changed"


def _connection(token: str) -> Any:
    from starlette.requests import Request

    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
    )


@pytest.mark.anyio
async def test_optional_user_is_none_without_credentials(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory
) -> None:
    seed_user(authkit, "user_01A")
    assert (await client.get("/maybe")).json() == {"id": None}
    with_token = await client.get("/maybe", headers=bearer(tokens.mint("user_01A")))
    assert with_token.json() == {"id": "user_01A"}
    # A broken token is still an error, not an anonymous visit.
    assert_invalid_token(await client.get("/maybe", headers=bearer("junk")), "signed JWT")
    other_scheme = await client.get("/maybe", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert other_scheme.json() == {"id": None}


@pytest.mark.anyio
async def test_claims_need_no_database_row(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    token = tokens.mint("user_01NOROW", org_id="org_01X", permissions=["a"])
    response = await client.get("/claims", headers=bearer(token))
    assert response.json() == {"sub": "user_01NOROW", "org_id": "org_01X", "permissions": ["a"]}


@pytest.mark.anyio
async def test_the_token_is_verified_once_per_request(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory
) -> None:
    seed_user(authkit, "user_01A")
    verifier = authkit.token_verifier
    calls: list[str] = []
    original = verifier.verify

    async def counting(token: str) -> AccessTokenClaims:
        calls.append(token)
        return await original(token)

    verifier.verify = counting  # type: ignore[method-assign]
    token = tokens.mint("user_01A", permissions=["admin:write"])
    response = await client.get("/everything", headers=bearer(token))
    assert response.json() == {"id": "user_01A", "sub": "user_01A", "same": True}
    assert len(calls) == 1


# --- RFC 6750 errors ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_credentials_is_401_with_a_bare_challenge(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": ""}):
        response = await client.get("/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/public")).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("authorization", "description"),
    [
        ("Bearer", "must be 'Bearer <token>'"),
        ("Bearer ", "must be 'Bearer <token>'"),
        ("Bearer a b", "must be 'Bearer <token>'"),
        ("Bearer garbage", "signed JWT"),
        ("Bearer a.b.c", "base64url"),
        ("Bearer ...", "signed JWT"),
        ('Bearer "quoted"', "signed JWT"),
        ("Bearer " + "x" * 20_000, "too long"),
    ],
)
async def test_malformed_headers_and_garbage_tokens(
    client: httpx.AsyncClient, authorization: str, description: str
) -> None:
    response = await client.get("/me", headers={"Authorization": authorization})
    assert_invalid_token(response, description)


@pytest.mark.anyio
async def test_every_attack_is_refused_over_http(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, clock: FakeClock
) -> None:
    seed_user(authkit, "user_01A")
    attacks = {
        "RS256": [tokens.hs256_with_public_key("user_01A")],
        "signed JWT": [tokens.alg_none("user_01A")],
        "signature is invalid": [tokens.mint("user_01A", key=RSAKeyPair.generate(tokens.key.kid))],
        "expired": [tokens.mint("user_01A", expired=True)],
        "not yet valid": [tokens.mint("user_01A", not_yet_valid=True)],
        "trusted issuer": [tokens.mint("user_01A", iss="https://evil.example.com/")],
        "another application": [tokens.mint("user_01A", aud="client_01OTHER")],
        "key id": [tokens.mint("user_01A", kid="")],
    }
    for description, bad_tokens in attacks.items():
        for token in bad_tokens:
            assert_invalid_token(await client.get("/me", headers=bearer(token)), description)


@pytest.mark.anyio
async def test_unknown_kid_refetches_then_fails_and_rotation_is_accepted(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    jwks: FakeJWKS,
    clock: FakeClock,
) -> None:
    seed_user(authkit, "user_01A")
    rotated = RSAKeyPair.generate()
    clock.now += 31
    response = await client.get("/me", headers=bearer(tokens.mint("user_01A", key=rotated)))
    assert_invalid_token(response, "unknown key")
    assert jwks.requests == 2
    jwks.keys.append(rotated)
    clock.now += 31
    response = await client.get("/me", headers=bearer(tokens.mint("user_01A", key=rotated)))
    assert response.status_code == 200
    assert jwks.requests == 3


@pytest.mark.anyio
async def test_jwks_cold_outage_is_503_and_the_app_still_starts(
    engine: Engine,
    jwks: FakeJWKS,
    clock: FakeClock,
    tokens: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks.down = True
    authkit = make_authkit(engine, jwks, clock)
    app = make_app(authkit)
    with caplog.at_level(logging.WARNING, logger="fastapi_workos_authkit"):
        async with app_client(authkit, app) as c:
            assert "could not fetch the JWKS" in caplog.text
            response = await c.get("/me", headers=bearer(tokens.mint("user_01A")))
            assert response.status_code == 503
            assert "signing keys" in response.json()["detail"]
            assert response.headers["Retry-After"]


@pytest.mark.anyio
async def test_jwks_warm_outage_keeps_working(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    jwks: FakeJWKS,
    clock: FakeClock,
) -> None:
    seed_user(authkit, "user_01A")
    jwks.down = True
    clock.now += 3600  # far past the TTL: the cached keys are served while a refresh runs
    response = await client.get("/me", headers=bearer(tokens.mint("user_01A")))
    assert response.status_code == 200
    await authkit.token_verifier.key_sources[0].wait_for_refresh()
    assert jwks.requests == 2  # the background refresh failed; the keys are still served
    assert (await client.get("/me", headers=bearer(tokens.mint("user_01A")))).is_success


@pytest.mark.anyio
async def test_inside_the_lifespan_stale_keys_are_refreshed_while_requests_are_answered(
    engine: Engine,
    jwks: FakeJWKS,
    tokens: TokenFactory,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    workos = GatedTransport(jwks.handle)  # WorkOS answering slowly: no request may wait on it
    authkit = AuthKit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        api_key="sk_test_key",
        api_base_url=BASE,
        engine=engine,
        http_transport=workos.transport(),
        clock=clock,
    )
    app = make_app(authkit)
    with caplog.at_level(logging.WARNING, logger="fastapi_workos_authkit"):
        async with app_client(authkit, app) as c:
            seed_user(authkit, "user_01A")
            (source,) = authkit.token_verifier.key_sources
            workos.hold()
            clock.now += 601  # past the TTL
            with anyio.fail_after(10):  # a request waiting for WorkOS would wait forever
                for _ in range(5):
                    response = await c.get("/me", headers=bearer(tokens.mint("user_01A")))
                    assert response.status_code == 200, response.text
                await anyio.wait_all_tasks_blocked()
            # One refresh, in the lifespan's task group, waiting at WorkOS; none answered yet.
            assert (source.fetches, workos.waiting, jwks.requests) == (2, 1, 1)
            assert source.refreshing
            rotated = RSAKeyPair.generate()
            jwks.keys = [rotated, tokens.key]
            workos.release()
            await source.wait_for_refresh()
            assert not source.refreshing
            assert jwks.requests == 2
            response = await c.get("/me", headers=bearer(tokens.mint("user_01A", key=rotated)))
            assert response.status_code == 200  # the rotated key, known without a refetch
            assert jwks.requests == 2
            # The app stops while a refresh waits at WorkOS: it is cancelled, not waited for.
            workos.hold()
            clock.now += 601
            assert (await c.get("/me", headers=bearer(tokens.mint("user_01A")))).is_success
            await anyio.wait_all_tasks_blocked()
            assert workos.waiting == 1
        assert not source.refreshing
        assert workos.waiting == 0
    assert jwks.requests == 2
    assert [r.getMessage() for r in caplog.records] == []


def test_without_the_lifespan_stale_keys_are_refreshed_by_the_request_that_finds_them(
    authkit: AuthKit, tokens: TokenFactory, jwks: FakeJWKS, clock: FakeClock
) -> None:
    app = make_app(authkit)
    with TestClient(app):  # the lifespan once: tables, keys
        seed_user(authkit, "user_01A")
    assert jwks.requests == 1
    rotated = RSAKeyPair.generate()
    jwks.keys = [rotated]  # WorkOS dropped the old key
    clock.now += 601  # past the TTL
    # Without the lifespan, TestClient runs each request on a fresh event loop: no task group
    # outlives a request, so the request that finds the keys stale refreshes them itself.
    client = TestClient(app)
    try:
        response = client.get("/me", headers=bearer(tokens.mint("user_01A")))
        assert response.status_code == 200  # answered with the cached key...
        assert jwks.requests == 2  # ...after its own refresh, done before the answer
        (source,) = authkit.token_verifier.key_sources
        assert not source.refreshing
        response = client.get("/me", headers=bearer(tokens.mint("user_01A")))
        assert_invalid_token(response, "unknown key")  # the refresh took effect
        response = client.get("/me", headers=bearer(tokens.mint("user_01A", key=rotated)))
        assert response.status_code == 200
        assert jwks.requests == 2
    finally:
        authkit.users.dispose()  # no lifespan ran to close the connections


@pytest.mark.anyio
async def test_random_kid_flood_over_http(
    client: httpx.AsyncClient, tokens: TokenFactory, jwks: FakeJWKS, clock: FakeClock
) -> None:
    attacker = RSAKeyPair.generate()
    clock.now += 31
    for i in range(50):
        token = tokens.mint(key=attacker.with_kid(f"random-{i}"))
        assert (await client.get("/claims", headers=bearer(token))).status_code == 401
    assert jwks.requests == 2  # the preload, then a single refetch for the whole flood


@pytest.mark.anyio
async def test_permission_role_and_organization_dependencies(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    def get(path: str, **claims: Any) -> Any:
        return client.get(path, headers=bearer(tokens.mint("user_01A", **claims)))

    assert (await get("/admin", permissions=["admin:write"])).status_code == 200
    refused = await get("/admin", permissions=["posts:read"])
    assert refused.status_code == 403
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", error_description="Missing permission: '
        'admin:write", scope="admin:write"'
    )
    assert (await get("/two-permissions", permissions=["posts:read", "posts:write"])).is_success
    partial = await get("/two-permissions", permissions=["posts:read"])
    assert partial.status_code == 403
    assert partial.json()["detail"] == "Missing permission: posts:write"

    assert (await get("/staff", role="owner")).status_code == 200
    assert (await get("/staff", roles=["member", "admin"])).status_code == 200
    no_role = await get("/staff", role="member")
    assert no_role.status_code == 403
    assert 'error="insufficient_scope"' in no_role.headers["WWW-Authenticate"]

    assert (await get("/org", org_id="org_01X")).status_code == 200
    assert (await get("/org")).status_code == 403
    assert (await get("/acme", org_id="org_01ACME")).status_code == 200
    other_org = await get("/acme", org_id="org_01X")
    assert other_org.status_code == 403
    assert other_org.json()["detail"] == "The session is scoped to another organization"

    # Authorization needs authentication first: no token is 401, not 403.
    assert (await client.get("/admin")).status_code == 401


def test_requirements_are_stable_objects(authkit: AuthKit) -> None:
    assert authkit.require_permissions("a", "b") is authkit.require_permissions("a", "b")
    assert authkit.require_roles("admin") is authkit.require_roles("admin")
    assert authkit.require_organization() is authkit.require_organization()
    assert authkit.require_permissions("a") is not authkit.require_permissions("b")
    with pytest.raises(TypeError):
        authkit.require_permissions()


# --- the user row -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_unsynced_user_is_fetched_just_in_time(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    users_api: FakeUsersAPI,
    engine: Engine,
) -> None:
    created: list[Event[User]] = []

    @authkit.on("user.created")
    def on_created(session: Session, event: Event[User]) -> None:
        created.append(event)

    users_api.users["user_01NEW"] = factories.user("user_01NEW", email="new@example.com")
    token = tokens.mint("user_01NEW")
    response = await client.get("/me", headers=bearer(token))
    assert response.json() == {"id": "user_01NEW", "email": "new@example.com"}
    assert users_api.calls == ["user_01NEW"]
    assert users_api.auth_headers == ["Bearer sk_test_key"]
    assert [(e.event, e.data.id) for e in created] == [("user.created", "user_01NEW")]
    assert created[0].id.startswith("jit_user_01NEW_")
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_01NEW") is not None
    # Synced now: the next request reads the row and asks WorkOS nothing.
    assert (await client.get("/me", headers=bearer(token))).status_code == 200
    assert users_api.calls == ["user_01NEW"]
    assert len(created) == 1


@pytest.mark.anyio
async def test_a_user_unknown_to_workos_is_401(
    client: httpx.AsyncClient, tokens: TokenFactory, users_api: FakeUsersAPI
) -> None:
    response = await client.get("/me", headers=bearer(tokens.mint("user_01GHOST")))
    assert_invalid_token(response, "does not exist")
    assert users_api.calls == ["user_01GHOST"]


@pytest.mark.anyio
async def test_a_deleted_user_is_401_and_never_resurrected(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    users_api: FakeUsersAPI,
) -> None:
    seed_user(authkit, "user_01GONE")
    token = tokens.mint("user_01GONE")
    assert (await client.get("/me", headers=bearer(token))).status_code == 200
    deleted = factories.event("user.deleted", {"object": "user", "id": "user_01GONE"})
    delivery = await deliver(client, deleted, timestamp_ms=int(authkit.clock() * 1000))
    assert delivery.status_code == 200
    # WorkOS would still answer for a moment; the tombstone wins without even asking.
    users_api.users["user_01GONE"] = factories.user("user_01GONE")
    assert_invalid_token(await client.get("/me", headers=bearer(token)), "deleted")
    assert users_api.calls == []
    # Claims alone do not read the database: they still answer.
    assert (await client.get("/claims", headers=bearer(token))).status_code == 200


@pytest.mark.anyio
async def test_without_an_api_key_an_unsynced_user_is_401(
    engine: Engine, jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory
) -> None:
    authkit = make_authkit(engine, jwks, clock, api_key=None)
    app = make_app(authkit)
    async with app_client(authkit, app) as c:
        response = await c.get("/me", headers=bearer(tokens.mint("user_01NEW")))
        assert_invalid_token(response, "not synced yet")


@pytest.mark.anyio
async def test_without_an_api_key_a_deleted_user_is_401_deleted(
    engine: Engine, jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory
) -> None:
    authkit = make_authkit(engine, jwks, clock, api_key=None)
    app = make_app(authkit)
    async with app_client(authkit, app) as c:
        with Session(engine) as session:
            apply_user_deletion(session, "user_01GONE", deleted_at=factories.at(0))
            session.commit()
        response = await c.get("/me", headers=bearer(tokens.mint("user_01GONE")))
        assert_invalid_token(response, "deleted")


@pytest.mark.anyio
async def test_a_failing_user_created_handler_is_500_and_commits_nothing(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    users_api: FakeUsersAPI,
    engine: Engine,
) -> None:
    @authkit.on("user.created")
    def broken(session: Session, event: Event[User]) -> None:
        raise RuntimeError("boom")

    users_api.users["user_01NEW"] = factories.user("user_01NEW")
    response = await client.get("/me", headers=bearer(tokens.mint("user_01NEW")))
    assert response.status_code == 500
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_01NEW") is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://authkit:authkit@127.0.0.1:1/authkit?connect_timeout=2",
        "sqlite:////nonexistent-directory/authkit.db",
    ],
)
async def test_database_down_is_503(
    jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory, url: str
) -> None:
    authkit = make_authkit(None, jwks, clock, database_url=url)  # type: ignore[arg-type]
    app = make_app(authkit)  # no lifespan: it would fail creating the tables
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        response = await c.get("/me", headers=bearer(tokens.mint("user_01A")))
        assert response.status_code == 503
        assert response.json()["detail"] == "The database is unavailable; retry later"
        # Claims need no database: they keep working.
        assert (await c.get("/claims", headers=bearer(tokens.mint("user_01A")))).is_success
    authkit.engine.dispose()


# --- tests of an app: overriding the dependency -------------------------------------------


@pytest.mark.anyio
async def test_dependency_overrides_replace_current_user(authkit: AuthKit) -> None:
    app = make_app(authkit)
    fake = WorkOSUser(
        id="user_01FAKE",
        email="fake@example.com",
        created_at=factories.at(0),
        updated_at=factories.at(0),
    )
    app.dependency_overrides[authkit.current_user] = lambda: fake
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        response = await c.get("/me")  # no token at all
    assert response.json() == {"id": "user_01FAKE", "email": "fake@example.com"}


# --- WebSockets ---------------------------------------------------------------------------


@pytest.fixture
def ws_client(authkit: AuthKit) -> Iterator[TestClient]:
    with TestClient(make_app(authkit)) as client:
        yield client


def test_websocket_with_a_valid_token(
    ws_client: TestClient, authkit: AuthKit, tokens: TokenFactory
) -> None:
    seed_user(authkit, "user_01WS")
    headers = bearer(tokens.mint("user_01WS"))
    with ws_client.websocket_connect("/ws", headers=headers) as websocket:
        assert websocket.receive_json() == {"id": "user_01WS"}


@pytest.mark.parametrize("token", [None, "garbage"])
def test_websocket_without_a_valid_token_is_closed_with_1008(
    ws_client: TestClient, token: str | None
) -> None:
    headers = bearer(token) if token else {}
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        ws_client.websocket_connect("/ws", headers=headers) as websocket,
    ):
        websocket.receive_json()
    assert closed.value.code == 1008


# --- OpenAPI ------------------------------------------------------------------------------


def test_openapi_shows_one_bearer_scheme(authkit: AuthKit) -> None:
    schema = make_app(authkit).openapi()
    assert schema["components"]["securitySchemes"] == {
        "WorkOSAccessToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An AuthKit access token, as returned by `getAccessToken()` in the WorkOS "
                "frontend SDKs: `Authorization: Bearer <token>`."
            ),
        }
    }
    secured = {
        path: operation["get"].get("security")
        for path, operation in schema["paths"].items()
        if "get" in operation
    }
    assert secured == {
        "/me": [{"WorkOSAccessToken": []}],
        "/me-sync": [{"WorkOSAccessToken": []}],
        "/maybe": [{"WorkOSAccessToken": []}],
        "/claims": [{"WorkOSAccessToken": []}],
        "/admin": [{"WorkOSAccessToken": []}],
        "/two-permissions": [{"WorkOSAccessToken": []}],
        "/staff": [{"WorkOSAccessToken": []}],
        "/org": [{"WorkOSAccessToken": []}],
        "/acme": [{"WorkOSAccessToken": []}],
        "/everything": [{"WorkOSAccessToken": []}],
        "/public": None,
    }
    # The token is read from the header, not exposed as a parameter of the operation.
    assert "parameters" not in schema["paths"]["/me"]["get"]


@pytest.mark.anyio
async def test_tokens_never_reach_the_logs(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    tokens: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_user(authkit, "user_01A")
    good = tokens.mint("user_01A")
    bad = tokens.mint("user_01A", expired=True)
    ghost = tokens.mint("user_01GHOST")
    with caplog.at_level(logging.DEBUG):
        for token in (good, bad, ghost, "garbage.token.value"):
            await client.get("/me", headers=bearer(token))
    for token in (good, bad, ghost):
        for part in token.split("."):
            assert part not in caplog.text
    assert "garbage.token.value" not in caplog.text


# --- how the row is read ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "async", "thread"])
async def test_every_read_mode_gives_the_same_row(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, backend: str, mode: str
) -> None:
    if mode == "async" and backend != "postgresql":
        pytest.skip("the async reader is for PostgreSQL")
    seed_user(authkit, "user_01M", metadata={"k": "v"}, email="m@example.com")
    authkit.users.mode = mode  # type: ignore[assignment]
    for _ in range(7):  # past psycopg's prepare threshold too
        response = await client.get("/me", headers=bearer(tokens.mint("user_01M")))
        assert response.json() == {"id": "user_01M", "email": "m@example.com"}
    user = await authkit.users.load("user_01M")
    with Session(authkit.engine) as session:
        loaded = session.get(WorkOSUser, "user_01M")
        assert loaded is not None
        assert user.model_dump() == loaded.model_dump()
    assert user.user_metadata == {"k": "v"}
    assert user.created_at.tzinfo is not None


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "thread"])
async def test_reads_leave_the_apps_pool_transactional(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, engine: Engine, mode: str
) -> None:
    seed_user(authkit, "user_01P")
    authkit.users.mode = mode  # type: ignore[assignment]
    for _ in range(3):
        assert (await client.get("/me", headers=bearer(tokens.mint("user_01P")))).is_success
    # A write the app rolls back must stay rolled back: no pooled connection is in autocommit.
    with Session(engine) as session:
        row = session.get(WorkOSUser, "user_01P")
        assert row is not None
        row.first_name = "Rolled back"
        session.add(row)
        session.flush()
        session.rollback()
    with Session(engine) as session:
        again = session.get(WorkOSUser, "user_01P")
        assert again is not None
        assert again.first_name == "Marcelina"


@pytest.mark.anyio
@pytest.mark.postgres_only
@pytest.mark.parametrize("mode", ["auto", "async", "thread"])
async def test_a_read_waiting_on_the_database_never_blocks_the_event_loop(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory, engine: Engine, mode: str
) -> None:
    import threading

    from sqlalchemy import text

    seed_user(authkit, "user_01BL")
    authkit.users.mode = mode  # type: ignore[assignment]
    headers = bearer(tokens.mint("user_01BL"))
    assert (await client.get("/me", headers=headers)).is_success  # the read pool is warm
    locker = engine.connect()
    locker.execute(text("LOCK TABLE workos_users IN ACCESS EXCLUSIVE MODE"))
    # Released from another thread after a while, so that a read blocking the loop would make
    # this test fail (the /claims answers come after the read), not hang.
    release = threading.Timer(10, locker.rollback)
    release.start()
    try:
        slow = asyncio.create_task(client.get("/me", headers=headers))
        for _ in range(3):  # the read waits on the lock; the loop keeps serving meanwhile
            assert (await client.get("/claims", headers=headers)).is_success
        assert not slow.done()
    finally:
        release.cancel()
        locker.rollback()
        locker.close()
    response = await slow
    assert response.status_code == 200, response.text


@pytest.mark.anyio
async def test_an_engine_authkit_built_reads_every_commit(
    jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory, database_url: str
) -> None:
    # AuthKit's own engine: the read pool (PostgreSQL) or the reader thread's kept connection
    # (SQLite). Each read must see what was committed since the previous one.
    authkit = make_authkit(None, jwks, clock, database_url=database_url)  # type: ignore[arg-type]
    app = make_app(authkit)
    headers = bearer(tokens.mint("user_01FR"))
    try:
        async with app_client(authkit, app) as c:
            seed_user(authkit, "user_01FR", email="before@example.com")
            for email in ("before@example.com", "after@example.com", "again@example.com"):
                with Session(authkit.engine) as session:
                    row = session.get(WorkOSUser, "user_01FR")
                    assert row is not None
                    row.email = email
                    session.add(row)
                    session.commit()
                response = await c.get("/me", headers=headers)
                assert response.json() == {"id": "user_01FR", "email": email}
            missing = await c.get("/me", headers=bearer(tokens.mint("user_01NONE")))
            assert missing.status_code == 401
    finally:
        authkit.engine.dispose()


def test_auto_mode_is_async_only_on_a_postgresql_engine_authkit_built(
    backend: str, database_url: str, engine: Engine
) -> None:
    given = AuthKit(client_id=CLIENT_ID, engine=engine)
    built = AuthKit(client_id=CLIENT_ID, database_url=database_url)
    try:
        if backend == "sqlite":
            # Even a local file read never runs on the event loop.
            assert given.users.resolved_mode() == built.users.resolved_mode() == "thread"
        else:
            # An app's engine may carry connect_args (sslmode...) that only its own pool
            # applies, so its reads stay on that pool, in a worker thread.
            assert given.users.resolved_mode() == "thread"
            assert built.users.resolved_mode() == "async"
    finally:
        built.engine.dispose()
    given.users.mode = "async"
    assert given.users.resolved_mode() == "async"  # an explicit mode is kept as is


def test_auto_mode_never_blocks_the_loop_on_another_postgresql_driver() -> None:
    import types

    from sqlalchemy import create_engine

    # A pg8000 engine (its DB-API stood in for: no connection is made) must not read inline.
    stand_in = types.SimpleNamespace(paramstyle="format", __version__="1.30.0", Error=Exception)
    engine = create_engine("postgresql+pg8000://u@localhost/db", module=stand_in)
    assert AuthKit(client_id=CLIENT_ID, engine=engine).users.resolved_mode() == "thread"


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_an_apps_engine_keeps_its_connect_args(
    engine: Engine, jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory, database_url: str
) -> None:
    import uuid

    from sqlalchemy import text

    from fastapi_workos_authkit._sync.database import make_engine

    name = f"authkit-{uuid.uuid4().hex[:12]}"
    own = make_engine(database_url, connect_args={"application_name": name})
    authkit = make_authkit(own, jwks, clock)
    app = make_app(authkit)
    try:
        async with app_client(authkit, app) as c:
            seed_user(authkit, "user_01CA")
            own.pool.dispose()  # from here on, every connection is one the read opened
            assert (await c.get("/me", headers=bearer(tokens.mint("user_01CA")))).is_success
            with engine.connect() as admin:
                count = admin.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": name},
                ).scalar_one()
            assert count >= 1  # the read went through the app's pool, with its connect_args
    finally:
        own.dispose()


@pytest.mark.anyio
@pytest.mark.postgres_only
@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_restarted_server_costs_one_retry_not_an_error(
    jwks: FakeJWKS,
    clock: FakeClock,
    tokens: TokenFactory,
    engine: Engine,
    database_url: str,
    mode: str,
) -> None:
    from fastapi_workos_authkit._sync.database import make_engine

    # Without pre-ping, so the read itself must cope with dead pooled connections.
    own = make_engine(database_url, pool_pre_ping=False)
    authkit = make_authkit(own, jwks, clock)
    authkit.users.mode = mode  # type: ignore[assignment]
    app = make_app(authkit)
    token = tokens.mint("user_01R")
    try:
        async with app_client(authkit, app) as c:
            seed_user(authkit, "user_01R")
            # Several idle connections, all of which a restart kills.
            if mode == "async":
                # The read pool opens a connection only when a read has to wait for one, and
                # concurrent reads share statements, so a few rounds may be needed for several.
                pids = []
                for _ in range(10):
                    requests = [c.get("/me", headers=bearer(token)) for _ in range(5)]
                    assert all(r.is_success for r in await asyncio.gather(*requests))
                    pids = await authkit.users.reader_backend_pids()
                    if len(pids) >= 2:
                        break
            else:
                held = [own.connect() for _ in range(4)]
                pids = [h.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for h in held]
                for h in held:
                    h.close()
            assert pids  # at least one idle connection the restart kills
            _terminate(engine, pids)
            response = await c.get("/me", headers=bearer(token))
            assert response.status_code == 200, response.text
            assert response.json()["id"] == "user_01R"
            # The dead ones are gone: the next read finds a live connection at once.
            assert not set(await authkit.users.reader_backend_pids()) & set(pids)
            assert (await c.get("/me", headers=bearer(token))).is_success
    finally:
        own.dispose()


def _terminate(admin_engine: Engine, pids: list[int]) -> None:
    """Kill these backends from an admin connection, as a server restart would (only ours: the
    server is shared), and wait until PostgreSQL has reaped them."""
    from sqlalchemy import text

    with admin_engine.connect() as admin:
        admin.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:p AS int[])) AS pid"),
            {"p": pids},
        )
        for _ in range(500):
            alive = admin.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:p AS int[]))"),
                {"p": pids},
            ).scalar_one()
            if not alive:
                return
            admin.execute(text("SELECT pg_sleep(0.01)"))
            admin.commit()
    raise AssertionError(f"backends {pids} survived pg_terminate_backend")


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_the_read_pool_is_closed_with_the_lifespan(
    jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory, engine: Engine, database_url: str
) -> None:
    from sqlalchemy import text

    authkit = make_authkit(None, jwks, clock, database_url=database_url)  # type: ignore[arg-type]
    assert authkit.users.resolved_mode() == "async"
    app = make_app(authkit)
    token = tokens.mint("user_01RP")
    try:
        async with app_client(authkit, app) as c:
            seed_user(authkit, "user_01RP")
            requests = [c.get("/me", headers=bearer(token)) for _ in range(3)]
            assert all(r.is_success for r in await asyncio.gather(*requests))
            pids = await authkit.users.reader_backend_pids()
            assert 1 <= len(pids) <= authkit.settings.read_pool_size
        with engine.connect() as admin:
            alive = admin.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:p AS int[]))"),
                {"p": pids},
            ).scalar_one()
        assert alive == 0  # shutdown closed the read pool's connections
    finally:
        authkit.engine.dispose()


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_concurrent_reads_batched_on_one_connection_each_get_their_own_answer(
    jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory, database_url: str
) -> None:
    # One read connection, many requests at once: they queue and are read together, several
    # keys per statement. Each must still get its own user, its own session's verdict, and a
    # user that is not there must still be fetched just in time.
    from fastapi_workos_authkit import AuthSession

    authkit = make_authkit(None, jwks, clock, database_url=database_url, read_pool_size=1)  # type: ignore[arg-type]
    assert authkit.users.resolved_mode() == "async"
    app = make_app(authkit)
    try:
        async with app_client(authkit, app) as c:
            sessions = []
            for n in range(12):
                seed_user(authkit, f"user_01B{n:02d}", email=f"b{n}@example.com")
                status = "revoked" if n % 3 == 0 else "active"
                sessions.append(
                    factories.session(f"user_01B{n:02d}", f"session_01B{n:02d}", status=status)
                )
            authkit.pipeline.apply_snapshots(
                [AuthSession.model_validate(s) for s in sessions], kind="session", source="test"
            )
            calls = [(f"user_01B{n:02d}", f"session_01B{n:02d}") for n in range(12)]
            calls += [("user_01B01", "session_01B02"), ("user_01B01", None), ("user_01B05", None)]
            responses = await asyncio.gather(
                *(c.get("/me", headers=bearer(tokens.mint(user, sid=sid))) for user, sid in calls)
            )
            for (user, sid), response in zip(calls, responses, strict=True):
                if sid is not None and int(sid[-2:]) % 3 == 0:
                    assert response.status_code == 401, (user, sid, response.text)
                    assert "The session was revoked" in response.headers["WWW-Authenticate"]
                else:
                    assert response.status_code == 200, (user, sid, response.text)
                    assert response.json() == {
                        "id": user,
                        "email": f"b{int(user[-2:])}@example.com",
                    }
            assert authkit.users.read_pool_size() == 1
    finally:
        authkit.engine.dispose()


@pytest.mark.anyio
async def test_workos_unreachable_during_a_jit_fetch_is_503(
    client: httpx.AsyncClient, authkit: AuthKit, tokens: TokenFactory
) -> None:
    from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSClient

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    authkit.workos_api = WorkOSClient(
        base_url=BASE,
        api_key="sk_test_key",
        transport=httpx.MockTransport(down),
        retry=RetryPolicy(attempts=1),
    )
    response = await client.get("/me", headers=bearer(tokens.mint("user_01NEW")))
    assert response.status_code == 503
    assert response.json()["detail"] == "WorkOS could not be reached; retry later"


@pytest.mark.postgres_only
def test_the_async_reader_follows_the_app_to_a_new_event_loop(
    authkit: AuthKit, tokens: TokenFactory
) -> None:
    app = make_app(authkit)
    headers = bearer(tokens.mint("user_01L"))
    with TestClient(app) as client:  # the lifespan: tables, keys
        seed_user(authkit, "user_01L")
        assert client.get("/me", headers=headers).status_code == 200
    # Without the lifespan, TestClient runs each request on a fresh event loop.
    client = TestClient(app)
    try:
        for _ in range(3):
            assert client.get("/me", headers=headers).json()["id"] == "user_01L"
    finally:
        authkit.users.dispose()  # no lifespan ran to close the connections
