"""Hostile input around the just-in-time user fetch and the REST client (issue 10, cases 9, 10, 14).

A real app over HTTP, real RS256 tokens, a real database (SQLite and PostgreSQL). Only WorkOS is
faked, with respx routes that count every call: its JWKS, and its users endpoint answering
whatever the case needs.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx
from fastapi import Depends, FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from fastapi_workos_authkit import (
    AccessTokenClaims,
    AuthKit,
    ConfigurationError,
    User,
    WorkOSUser,
)
from fastapi_workos_authkit._recovery import workos_api
from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSAPIError, WorkOSClient
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit.testing import TokenFactory, factories
from tests.conftest import CLIENT_ID, app_client, bearer

BASE = "https://api.workos.test"
API_KEY = "sk_test_key"
USERS_PATH = r"^/user_management/users/"

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_768_478_400.0

    def __call__(self) -> float:
        return self.now


class FakeWorkOS:
    """respx routes for the JWKS and the users endpoint, plus a catch-all, all counted."""

    def __init__(self, tokens: TokenFactory) -> None:
        self.router = respx.Router(base_url=BASE, assert_all_called=False)
        self.jwks = self.router.get(f"/sso/jwks/{CLIENT_ID}").respond(
            200, json={"keys": [tokens.key.jwk]}
        )
        self.users = self.router.get(path__regex=USERS_PATH)
        self.users.respond(404, json={"message": "User not found"})
        self.other = self.router.route().respond(404, json={"message": "Not Found"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.async_handler)

    def api_key_requests(self) -> list[str]:
        """Paths of every request that carried the API key."""
        return [
            call.request.url.path
            for call in self.router.calls
            if call.request.headers.get("authorization") == f"Bearer {API_KEY}"
        ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenFactory:
    return TokenFactory(CLIENT_ID, clock=clock)


@pytest.fixture
def workos(tokens: TokenFactory) -> FakeWorkOS:
    return FakeWorkOS(tokens)


@pytest.fixture
def authkit(engine: Engine, workos: FakeWorkOS, clock: FakeClock) -> AuthKit:
    kit = AuthKit(
        client_id=CLIENT_ID,
        api_key=API_KEY,
        api_base_url=BASE,
        engine=engine,
        http_transport=workos.transport(),
        clock=clock,
    )
    # No retries: a failed fetch answers at once (the default policy backs off for seconds).
    kit.workos_api = WorkOSClient(
        base_url=BASE, api_key=API_KEY, transport=workos.transport(), retry=RetryPolicy(attempts=1)
    )
    return kit


def make_app(authkit: AuthKit) -> FastAPI:
    app = FastAPI(lifespan=authkit.lifespan)

    @app.get("/me")
    async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
        return {"id": user.id}

    @app.get("/maybe")
    async def maybe(
        user: Annotated[WorkOSUser | None, Depends(authkit.optional_user)],
    ) -> dict[str, str | None]:
        return {"id": user.id if user else None}

    @app.get("/claims")
    async def claims(
        claims: Annotated[AccessTokenClaims, Depends(authkit.claims)],
    ) -> dict[str, str]:
        return {"sub": claims.sub}

    @app.get("/admin", dependencies=[Depends(authkit.require_permissions("admin:write"))])
    async def admin() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
async def client(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(authkit)
    async with app_client(authkit, app) as c:
        yield c


def assert_retry_later(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json()["detail"] == "WorkOS could not be reached; retry later"


async def concurrently(count: int, request: Callable[[], Awaitable[httpx.Response]]) -> list[int]:
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request()).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return statuses


def gated(
    authkit: AuthKit, user_id: str, expected: int, answer: httpx.Response
) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """A WorkOS answer held back until all ``expected`` requests are accounted for: each one
    either calls WorkOS (and waits here) or waits on another request's fetch of the user."""
    calling = 0
    everyone_in = anyio.Event()

    def check() -> None:
        if calling + authkit.users.fetch_waiters(user_id) >= expected:
            everyone_in.set()

    async def answer_when_all_are_in(request: httpx.Request) -> httpx.Response:
        nonlocal calling
        calling += 1
        # A guard, not a measurement: a broken single-flight fails the test rather than hang it.
        with anyio.fail_after(30):
            while not everyone_in.is_set():
                check()
                await anyio.lowlevel.checkpoint()
        return answer

    return answer_when_all_are_in


# -- case 9: a 200 that is not a user -------------------------------------------------------

BAD_BODIES = {
    "html": httpx.Response(
        200,
        content=b"<html><body>Captive portal: user_secret_marker</body></html>",
        headers={"content-type": "text/html"},
    ),
    "json list": httpx.Response(200, json=[{"id": "user_01BAD", "note": "user_secret_marker"}]),
    "json string": httpx.Response(200, json="user_secret_marker"),
    "missing fields": httpx.Response(200, json={"id": "user_01BAD", "x": "user_secret_marker"}),
    "wrong types": httpx.Response(
        200,
        json={
            **factories.user("user_01BAD"),
            "email": {"user_secret_marker": 1},
            "created_at": "not a date",
        },
    ),
    "not utf-8": httpx.Response(
        200, content=b'{"id": "\xff\xfe user_secret_marker"}', headers={"content-type": "json"}
    ),
    "deeply nested": httpx.Response(
        200, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}
    ),
    "empty 204": httpx.Response(204),
}


@pytest.mark.parametrize("body", list(BAD_BODIES))
async def test_a_bad_200_from_the_jit_fetch_is_503_and_never_logs_the_body(
    client: httpx.AsyncClient,
    workos: FakeWorkOS,
    tokens: TokenFactory,
    body: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    workos.users.mock(return_value=BAD_BODIES[body])
    with caplog.at_level(logging.DEBUG, logger="fastapi_workos_authkit"):
        response = await client.get("/me", headers=bearer(tokens.mint("user_01BAD")))
    assert_retry_later(response)
    assert workos.users.call_count == 1
    failures = [r for r in caplog.records if "could not fetch user" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR]
    assert "WorkOS answered" in failures[0].getMessage()
    assert "user_secret_marker" not in caplog.text
    # Not remembered: a bad answer is a failure, so the next request asks WorkOS again.
    workos.users.mock(return_value=httpx.Response(200, json=factories.user("user_01BAD")))
    assert (await client.get("/me", headers=bearer(tokens.mint("user_01BAD")))).status_code == 200
    assert workos.users.call_count == 2


def test_a_bad_200_on_a_websocket_handshake_is_try_again_later(
    authkit: AuthKit, workos: FakeWorkOS, tokens: TokenFactory
) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    app = make_app(authkit)

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, user: Annotated[WorkOSUser, Depends(authkit.current_user)]
    ) -> None:
        await websocket.accept()
        await websocket.close()

    workos.users.mock(return_value=BAD_BODIES["html"])
    headers = bearer(tokens.mint("user_01BAD"))
    with (
        TestClient(app) as test_client,
        pytest.raises(WebSocketDisconnect) as closed,
        test_client.websocket_connect("/ws", headers=headers) as websocket,
    ):
        websocket.receive_json()
    assert closed.value.code == 1013


def client_answering(answer: httpx.Response) -> tuple[WorkOSClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    client = WorkOSClient(
        base_url=BASE,
        api_key=API_KEY,
        transport=httpx.MockTransport(handle),
        retry=RetryPolicy(attempts=1),
    )
    return client, seen


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (BAD_BODIES["html"], "not JSON"),
        (httpx.Response(200, json=["a"]), "JSON list, not an object"),
        (httpx.Response(200, json={"data": {"id": "x"}}), "'data' of type dict, not a list"),
        (httpx.Response(200, json={"data": ["x"]}), "item 0 of 'data' of type str"),
        (httpx.Response(200, json={"data": [], "list_metadata": []}), "'list_metadata' of type"),
        (
            httpx.Response(200, json={"data": [], "list_metadata": {"after": 5}}),
            "'list_metadata.after' cursor of type int",
        ),
    ],
)
async def test_every_listing_turns_a_bad_200_into_a_clear_error(
    answer: httpx.Response, message: str
) -> None:
    client, _ = client_answering(answer)
    async with client:
        with pytest.raises(WorkOSAPIError, match=message):
            await client.list_users()
        with pytest.raises(WorkOSAPIError, match=message):
            await client.list_events(events=["user.created"])


async def test_a_listed_user_of_the_wrong_shape_is_a_clear_error() -> None:
    listing = {"data": [factories.user("user_01OK"), {"id": "user_01BAD", "secret": "s3cr3t"}]}
    client, _ = client_answering(httpx.Response(200, json=listing))
    async with client:
        with pytest.raises(WorkOSAPIError, match=r"item 1\) .*not a user object") as raised:
            await client.list_users()
    assert "s3cr3t" not in str(raised.value)
    assert "email: Field required" in str(raised.value)


async def test_a_backfill_stops_with_a_clear_error_on_a_bad_page(authkit: AuthKit) -> None:
    create_tables(authkit.engine)
    client, seen = client_answering(BAD_BODIES["html"])
    authkit.workos_api = client
    with pytest.raises(WorkOSAPIError, match=r"/user_management/users with a body that is not"):
        await authkit.backfill_users()
    assert len(seen) == 1
    await authkit.shutdown()


# -- case 10: the token's sub is input -------------------------------------------------------

IMPLAUSIBLE_SUBS = [
    f"../../sso/jwks/{CLIENT_ID}",
    "user_01/../../organizations",
    "user_01?limit=100",
    "user_01#x",
    "user%2F01",
    "user 01",
    "user-01",
    "usér_01",
    "user_01\n",
    "a" * 129,
]


@pytest.mark.parametrize("sub", IMPLAUSIBLE_SUBS)
async def test_an_implausible_sub_is_401_and_never_reaches_workos(
    client: httpx.AsyncClient,
    workos: FakeWorkOS,
    tokens: TokenFactory,
    sub: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = tokens.mint(sub, permissions=["admin:write"])
    with caplog.at_level(logging.INFO, logger="fastapi_workos_authkit"):
        for path in ("/me", "/maybe", "/claims", "/admin"):
            response = await client.get(path, headers=bearer(token))
            assert response.status_code == 401, (path, response.text)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer error="invalid_token"')
            assert "sub is not a user id" in response.json()["detail"]
    assert workos.users.call_count == 0
    assert workos.other.call_count == 0
    assert workos.api_key_requests() == []
    refusals = [r for r in caplog.records if "sub is not a plausible" in r.getMessage()]
    assert {r.levelno for r in refusals} == {logging.WARNING}
    assert sub not in caplog.text


@pytest.mark.parametrize("sid", ["session_\x00x", "session_\ud800", "session 01", "s" * 129])
async def test_an_implausible_sid_is_401_and_never_fails_the_reads_beside_it(
    database_url: str,
    workos: FakeWorkOS,
    clock: FakeClock,
    tokens: TokenFactory,
    sid: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On PostgreSQL concurrent reads share one statement (AuthKit's own engine, one read
    # connection, so these requests queue together): a sid the database cannot hold (NUL, a
    # lone surrogate) must be refused before it gets there, or the good requests read beside
    # it would fail with it.
    authkit = AuthKit(
        client_id=CLIENT_ID,
        api_base_url=BASE,
        database_url=database_url,
        read_pool_size=1,
        http_transport=workos.transport(),
        clock=clock,
    )
    good = tokens.mint("user_01SID", sid="session_01GOOD")
    bad = tokens.mint("user_01SID", sid=sid)
    try:
        async with app_client(authkit, make_app(authkit)) as client:
            authkit.pipeline.apply_user_snapshot(User.model_validate(factories.user("user_01SID")))
            with caplog.at_level(logging.INFO, logger="fastapi_workos_authkit"):
                responses = await asyncio.gather(
                    *(client.get("/me", headers=bearer(t)) for t in (good, bad, good, bad, good))
                )
    finally:
        authkit.engine.dispose()
    assert [r.status_code for r in responses] == [200, 401, 200, 401, 200]
    for refused in responses[1::2]:
        assert "sid is not a session id" in refused.json()["detail"]
    assert "sid is not a plausible session id" in caplog.text
    assert sid not in caplog.text


async def test_plausible_subs_of_any_shape_are_looked_up_up_to_128_characters(
    client: httpx.AsyncClient, workos: FakeWorkOS, tokens: TokenFactory
) -> None:
    # Fixtures and emulators use short ids: the rule is the alphabet and the length, not ULIDs.
    # (Ids of 65 to 128 characters pass the rule, but the users table's id column holds 64, so
    # no WorkOS answer for them could be stored: they are refused without a call.)
    for sub in ["u1", "user_01HXYZ", "USER_lower_123", "a" * 64]:
        workos.users.mock(return_value=httpx.Response(200, json=factories.user(sub)))
        response = await client.get("/me", headers=bearer(tokens.mint(sub)))
        assert response.json() == {"id": sub}
    workos.users.mock(return_value=httpx.Response(404, json={"message": "User not found"}))
    response = await client.get("/me", headers=bearer(tokens.mint("a" * 128)))
    assert "does not exist" in response.json()["detail"]
    response = await client.get("/me", headers=bearer(tokens.mint("a" * 129)))
    assert "sub is not a user id" in response.json()["detail"]
    assert workos.api_key_requests() == [
        *(f"/user_management/users/{sub}" for sub in ["u1", "user_01HXYZ", "USER_lower_123"]),
        f"/user_management/users/{'a' * 64}",
    ]


async def test_a_fetched_user_with_lone_surrogates_is_stored_with_them_replaced(
    client: httpx.AsyncClient, workos: FakeWorkOS, tokens: TokenFactory, engine: Engine
) -> None:
    # The same rule as a signed webhook body: a lone surrogate becomes U+FFFD, on both
    # databases (a UTF-8 driver cannot encode it, so storing it as sent gave a 500).
    text = json.dumps(factories.user("user_01SURROGATE", first_name="Ada"))
    content = text.replace('"Ada"', '"Ada\\ud800"').encode()
    assert b"\\ud800" in content
    raw = httpx.Response(200, content=content, headers={"content-type": "application/json"})
    workos.users.mock(return_value=raw)
    response = await client.get("/me", headers=bearer(tokens.mint("user_01SURROGATE")))
    assert response.status_code == 200, response.text
    with Session(engine) as session:
        stored = session.get(WorkOSUser, "user_01SURROGATE")
        assert stored is not None
        assert stored.first_name == "Ada\ufffd"


@pytest.mark.parametrize(
    "override",
    [
        {"email": "a" * 310 + "@example.com"},
        {"metadata": {"score": float("nan")}},
    ],
    ids=["email over 320", "non-finite number"],
)
async def test_a_fetched_user_that_cannot_be_stored_is_503_and_writes_nothing(
    client: httpx.AsyncClient,
    workos: FakeWorkOS,
    tokens: TokenFactory,
    engine: Engine,
    override: dict[str, object],
) -> None:
    workos.users.mock(
        return_value=httpx.Response(
            200,
            content=json.dumps({**factories.user("user_01UNSTORABLE"), **override}).encode(),
            headers={"content-type": "application/json"},
        )
    )
    response = await client.get("/me", headers=bearer(tokens.mint("user_01UNSTORABLE")))
    assert_retry_later(response)
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_01UNSTORABLE") is None


async def test_a_sub_longer_than_any_stored_user_id_is_401_without_a_workos_call(
    client: httpx.AsyncClient, workos: FakeWorkOS, tokens: TokenFactory
) -> None:
    for sub in ["a" * 65, "a" * 128]:
        response = await client.get("/me", headers=bearer(tokens.mint(sub)))
        assert response.status_code == 401
        assert "does not exist" in response.json()["detail"]
    assert workos.users.call_count == 0


def test_the_plausible_id_rule() -> None:
    assert workos_api.is_plausible_id("user_01E4ZCR3C56J083X43JQXF3JK5")
    assert workos_api.is_plausible_id("x")
    assert workos_api.is_plausible_id("a" * 128)
    for value in [*IMPLAUSIBLE_SUBS, "", None, 5, "user_\uff10\uff11"]:  # fullwidth digits
        assert not workos_api.is_plausible_id(value), value


async def test_the_client_checks_then_percent_encodes_every_id_it_puts_in_a_path() -> None:
    client, seen = client_answering(httpx.Response(200, json=factories.user("user_01X")))
    async with client:
        for user_id in IMPLAUSIBLE_SUBS:
            with pytest.raises(WorkOSAPIError, match="implausible user id") as raised:
                await client.get_user(user_id)
            assert user_id not in str(raised.value)
        assert seen == []
        await client.get_user("user_01X")
    # The raw bytes on the wire: one path segment, percent-encoded. (A plausible id encodes to
    # itself; the encoding guards the path should the rule ever be widened.)
    assert [request.url.raw_path for request in seen] == [b"/user_management/users/user_01X"]


# -- case 14: single-flight and a short memory of 404s ---------------------------------------


async def test_concurrent_first_requests_share_one_workos_call(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    workos: FakeWorkOS,
    tokens: TokenFactory,
    engine: Engine,
) -> None:
    user = factories.user("user_01NEW")
    answer = httpx.Response(200, json=user)
    workos.users.mock(side_effect=gated(authkit, "user_01NEW", 20, answer))
    token = tokens.mint("user_01NEW")
    statuses = await concurrently(20, lambda: client.get("/me", headers=bearer(token)))
    assert statuses == [200] * 20
    assert workos.users.call_count == 1


async def test_concurrent_requests_for_an_unknown_user_share_one_404_and_it_is_remembered(
    client: httpx.AsyncClient,
    authkit: AuthKit,
    workos: FakeWorkOS,
    tokens: TokenFactory,
    clock: FakeClock,
) -> None:
    not_found = httpx.Response(404, json={"message": "User not found"})
    workos.users.mock(side_effect=gated(authkit, "user_01GHOST", 20, not_found))
    token = tokens.mint("user_01GHOST")
    statuses = await concurrently(20, lambda: client.get("/me", headers=bearer(token)))
    assert statuses == [401] * 20
    assert workos.users.call_count == 1

    workos.users.mock(return_value=not_found)
    for _ in range(20):
        response = await client.get("/me", headers=bearer(token))
        assert response.status_code == 401
        assert "does not exist" in response.json()["detail"]
    assert workos.users.call_count == 1

    clock.now += 4.9  # the default user_not_found_ttl is 5 seconds
    assert (await client.get("/me", headers=bearer(token))).status_code == 401
    assert workos.users.call_count == 1
    clock.now += 0.2
    assert (await client.get("/me", headers=bearer(token))).status_code == 401
    assert workos.users.call_count == 2

    # The user.created webhook lands while the 404 is remembered: the row is read first, so
    # the memory never hides a user that exists.
    snapshot = User.model_validate(factories.user("user_01GHOST"))
    await anyio.to_thread.run_sync(authkit.pipeline.apply_user_snapshot, snapshot)
    assert (await client.get("/me", headers=bearer(token))).status_code == 200
    assert workos.users.call_count == 2


async def test_a_shared_failure_reaches_every_waiter_and_is_not_remembered(
    client: httpx.AsyncClient, authkit: AuthKit, workos: FakeWorkOS, tokens: TokenFactory
) -> None:
    workos.users.mock(side_effect=gated(authkit, "user_01FLAKY", 20, BAD_BODIES["html"]))
    token = tokens.mint("user_01FLAKY")
    statuses = await concurrently(20, lambda: client.get("/me", headers=bearer(token)))
    assert statuses == [503] * 20
    assert workos.users.call_count == 1
    workos.users.mock(return_value=httpx.Response(503, json={"message": "down"}))
    assert_retry_later(await client.get("/me", headers=bearer(token)))
    assert workos.users.call_count == 2
    workos.users.mock(return_value=httpx.Response(200, json=factories.user("user_01FLAKY")))
    assert (await client.get("/me", headers=bearer(token))).status_code == 200
    assert workos.users.call_count == 3


async def test_a_ttl_of_zero_remembers_nothing(
    engine: Engine, workos: FakeWorkOS, tokens: TokenFactory, clock: FakeClock
) -> None:
    authkit = AuthKit(
        client_id=CLIENT_ID,
        api_key=API_KEY,
        api_base_url=BASE,
        engine=engine,
        http_transport=workos.transport(),
        clock=clock,
        user_not_found_ttl=0,
    )
    app = make_app(authkit)
    async with app_client(authkit, app) as c:
        token = tokens.mint("user_01GHOST")
        for _ in range(3):
            assert (await c.get("/me", headers=bearer(token))).status_code == 401
    assert workos.users.call_count == 3


async def test_the_memory_of_404s_is_bounded(
    client: httpx.AsyncClient, authkit: AuthKit, workos: FakeWorkOS, tokens: TokenFactory
) -> None:
    from fastapi_workos_authkit._auth import dependencies

    bound = dependencies.NOT_FOUND_CACHE_SIZE
    for index in range(bound + 5):
        authkit.users._jit.remember_not_found(f"user_{index}")
    assert len(authkit.users._jit._not_found) == bound
    # The oldest went first: the first ids are asked again, the newest are still remembered.
    assert (await client.get("/me", headers=bearer(tokens.mint("user_0")))).status_code == 401
    assert workos.users.call_count == 1
    newest = f"user_{bound + 4}"
    assert (await client.get("/me", headers=bearer(tokens.mint(newest)))).status_code == 401
    assert workos.users.call_count == 1


@pytest.mark.parametrize("ttl", [-1, float("nan")])
def test_a_negative_user_not_found_ttl_is_a_configuration_error(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="user_not_found_ttl"):
        AuthKit(client_id=CLIENT_ID, user_not_found_ttl=ttl)
