"""The verifier on its own: real RS256 keys, a JWKS served by a mock transport, a fake clock.

Each attack from the issue is refused with `InvalidTokenError`; JWKS outages, rotation and
floods are checked by counting the requests the fake JWKS received.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import jose.backends
import pytest
from jose.backends.cryptography_backend import CryptographyRSAKey

from fastapi_workos_authkit import (
    AccessTokenClaims,
    AuthKitSettings,
    AuthProvider,
    ConfigurationError,
)
from fastapi_workos_authkit._auth.tokens import (
    InvalidTokenError,
    KeysUnavailableError,
    TokenVerifier,
    VerifiedTokenCache,
)
from fastapi_workos_authkit._lifespan_tasks import LifespanTasks
from fastapi_workos_authkit.testing import FakeJWKS, RSAKeyPair, TokenFactory, tamper_header
from fastapi_workos_authkit.testing.tokens import b64url
from tests.gated_transport import GatedTransport

pytestmark = pytest.mark.anyio

CLIENT_ID = "client_01TESTCLIENT"
BASE = "https://api.workos.test"
JWKS_URL = f"{BASE}/sso/jwks/{CLIENT_ID}"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_768_478_400.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenFactory:
    return TokenFactory(CLIENT_ID, clock=clock)


@pytest.fixture
def jwks(tokens: TokenFactory) -> FakeJWKS:
    return FakeJWKS(tokens, api_base_url=BASE)


def providers(hostname: str = "api.workos.com") -> list[AuthProvider]:
    return [
        AuthProvider(issuer=f"https://{hostname}/", jwks=JWKS_URL, application_id=CLIENT_ID),
        AuthProvider(issuer=f"https://{hostname}/user_management/{CLIENT_ID}", jwks=JWKS_URL),
    ]


@pytest.fixture
def verifier(jwks: FakeJWKS, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(
        providers(),
        transport=jwks.transport(),
        clock=clock,
        options=AuthKitSettings(jwks_cache_ttl=600, jwks_refetch_cooldown=30).token_settings(),
    )


def test_python_jose_uses_the_cryptography_backend() -> None:
    assert jose.backends.RSAKey is CryptographyRSAKey


async def test_fetched_keys_are_cryptography_keys(verifier: TokenVerifier) -> None:
    await verifier.preload()
    (source,) = verifier.key_sources
    key = await source.get_key(TokenFactory(CLIENT_ID).key.kid)
    assert isinstance(key, CryptographyRSAKey)


async def test_a_valid_token_gives_typed_claims(
    verifier: TokenVerifier, tokens: TokenFactory
) -> None:
    token = tokens.mint(
        "user_01A",
        org_id="org_01X",
        role="admin",
        roles=["admin", "member"],
        permissions=["posts:write"],
        entitlements=["audit-logs"],
        feature_flags=["beta"],
        act={"sub": "user_01ADMIN"},
        custom_claim="kept",
    )
    claims = await verifier.verify(token)
    assert isinstance(claims, AccessTokenClaims)
    assert claims.sub == "user_01A"
    assert claims.org_id == "org_01X"
    assert (claims.role, claims.roles) == ("admin", ["admin", "member"])
    assert claims.permissions == ["posts:write"]
    assert claims.entitlements == ["audit-logs"]
    assert claims.feature_flags == ["beta"]
    assert claims.act is not None
    assert claims.act.sub == "user_01ADMIN"
    assert claims.iss == f"https://api.workos.com/user_management/{CLIENT_ID}"
    assert claims.sid is not None
    assert claims.jti is not None
    assert claims.model_extra == {"custom_claim": "kept"}


@pytest.mark.parametrize(
    "issuer",
    [
        "https://api.workos.com/",
        "https://api.workos.com",
        f"https://api.workos.com/user_management/{CLIENT_ID}",
        f"https://api.workos.com/user_management/{CLIENT_ID}/",
    ],
)
async def test_every_issuer_form_is_accepted(
    verifier: TokenVerifier, tokens: TokenFactory, issuer: str
) -> None:
    assert (await verifier.verify(tokens.mint(iss=issuer))).iss == issuer


async def test_audience_when_present_must_be_the_client_id(
    verifier: TokenVerifier, tokens: TokenFactory
) -> None:
    assert (await verifier.verify(tokens.mint(aud=CLIENT_ID))).aud == CLIENT_ID
    assert (await verifier.verify(tokens.mint(aud=["other", CLIENT_ID]))).sub
    with pytest.raises(InvalidTokenError, match="another application"):
        await verifier.verify(tokens.mint(aud="client_01OTHER"))


async def test_the_audience_comes_from_the_providers_application_id(
    jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    # One source of truth: the emitted applicationID is what the verifier accepts as aud.
    elsewhere = [
        AuthProvider(issuer=p.issuer, jwks=p.jwks, application_id="client_01PARTNER")
        for p in providers()
    ]
    verifier = TokenVerifier(elsewhere, transport=jwks.transport(), clock=clock)
    assert verifier.audiences == {"client_01PARTNER"}
    assert (await verifier.verify(tokens.mint(aud="client_01PARTNER"))).sub
    with pytest.raises(InvalidTokenError, match="another application"):
        await verifier.verify(tokens.mint(aud=CLIENT_ID))
    # No provider declares an audience: a token without aud passes, one with aud does not.
    bare = [AuthProvider(issuer=p.issuer, jwks=p.jwks) for p in providers()]
    strict = TokenVerifier(bare, transport=jwks.transport(), clock=clock)
    assert (await strict.verify(tokens.mint())).sub
    with pytest.raises(InvalidTokenError, match="another application"):
        await strict.verify(tokens.mint(aud=CLIENT_ID))


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x") -> str:
    def part(value: dict[str, Any]) -> str:
        return b64url(json.dumps(value).encode())

    return f"{part(header)}.{part(claims)}.{b64url(signature)}"


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("alg_none", "RS256|signed JWT"),
        ("hs256_public_key", "RS256"),
        ("foreign_key_known_kid", "signature is invalid"),
        ("expired", "expired"),
        ("not_yet_valid", "not yet valid"),
        ("not_yet_valid_iat", "not yet valid"),
        ("wrong_issuer", "trusted issuer"),
        ("issuer_prefix", "trusted issuer"),
        ("wrong_audience", "another application"),
        ("missing_kid", "key id"),
        ("header_alg_swapped", "RS256"),
        ("payload_tampered", "signature is invalid"),
        ("missing_sub", "'sub'"),
        ("missing_exp", "'exp'"),
        ("empty_sub", "invalid claims"),
        ("exp_not_a_number", "invalid claims"),
        ("exp_nan", "invalid claims: exp"),
        ("exp_infinity", "invalid claims: exp"),
        ("iat_nan", "invalid claims: iat"),
        ("nbf_minus_infinity", "invalid claims: nbf"),
    ],
)
async def test_attacks_are_refused(
    verifier: TokenVerifier, tokens: TokenFactory, attack: str, message: str
) -> None:
    foreign = RSAKeyPair.generate(kid=tokens.key.kid)
    token = {
        "alg_none": lambda: tokens.alg_none(),
        "hs256_public_key": lambda: tokens.hs256_with_public_key(),
        "foreign_key_known_kid": lambda: tokens.mint(key=foreign),
        "expired": lambda: tokens.mint(expired=True),
        "not_yet_valid": lambda: tokens.mint(not_yet_valid=True),
        "not_yet_valid_iat": lambda: tokens.mint(iat=int(tokens.clock()) + 3600),
        "wrong_issuer": lambda: tokens.mint(iss="https://evil.example.com/"),
        "issuer_prefix": lambda: tokens.mint(iss="https://api.workos.com/user_management/"),
        "wrong_audience": lambda: tokens.mint(aud="client_01OTHER"),
        "missing_kid": lambda: tokens.mint(kid=""),
        "header_alg_swapped": lambda: tamper_header(tokens.mint(), alg="HS256"),
        "payload_tampered": lambda: _swap_payload(tokens.mint("user_01A"), tokens, "user_01B"),
        "missing_sub": lambda: tokens.mint(sub=None),
        "missing_exp": lambda: tokens.mint(exp=None),
        "empty_sub": lambda: tokens.mint(sub=""),
        "exp_not_a_number": lambda: tokens.mint(exp="tomorrow"),
        # json.dumps writes NaN / Infinity, and json.loads reads them back as floats.
        "exp_nan": lambda: tokens.mint(exp=float("nan")),
        "exp_infinity": lambda: tokens.mint(exp=float("inf")),
        "iat_nan": lambda: tokens.mint(iat=float("nan")),
        "nbf_minus_infinity": lambda: tokens.mint(nbf=float("-inf")),
    }[attack]()
    with pytest.raises(InvalidTokenError, match=message):
        await verifier.verify(token)


def _swap_payload(token: str, tokens: TokenFactory, sub: str) -> str:
    header, _, signature = token.split(".")
    payload = b64url(json.dumps(tokens.claims(sub)).encode())
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "..",
        "a.b.c.d",
        "!!!.???.***",
        b64url(b"[1,2]") + "." + b64url(b"{}") + ".sig",
        b64url(b"\xff\xfe") + "." + b64url(b"{}") + ".sig",
        b64url(b'{"alg":"RS256","kid":"k"}') + "." + b64url(b"[]") + ".sig",
        "x" * 20_000,
    ],
)
async def test_garbage_tokens_are_refused(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(garbage)


async def test_leeway_is_applied_to_exp(
    verifier: TokenVerifier, tokens: TokenFactory, clock: FakeClock
) -> None:
    token = tokens.mint()
    fresh = tokens.mint()
    clock.advance(tokens.lifetime + 9)  # expired 9 s ago: inside the 10 s leeway
    assert (await verifier.verify(token)).sub
    clock.advance(2)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(fresh)


def test_leeway_is_bounded() -> None:
    with pytest.raises(ConfigurationError, match="token_leeway"):
        AuthKitSettings(token_leeway=301)
    with pytest.raises(ConfigurationError, match="token_leeway"):
        AuthKitSettings(token_leeway=-1)


async def test_verified_tokens_are_cached_until_exp(
    verifier: TokenVerifier, tokens: TokenFactory, clock: FakeClock
) -> None:
    token = tokens.mint()
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the same object: no second verification
    clock.advance(tokens.lifetime + verifier.options.token_leeway + 1)
    with pytest.raises(InvalidTokenError, match="expired"):
        await verifier.verify(token)
    assert len(verifier.cache) == 0


def test_the_token_cache_is_bounded_and_lru(clock: FakeClock) -> None:
    cache = VerifiedTokenCache(2, clock, leeway=0)
    claims = AccessTokenClaims(sub="user_1", exp=clock() + 60, iss="https://api.workos.com/")
    cache.put("a", claims)
    cache.put("b", claims)
    assert cache.get("a") is claims  # "a" is now the most recently used
    cache.put("c", claims)
    assert cache.get("b") is None
    assert cache.get("a") is claims
    assert cache.get("c") is claims
    assert len(cache) == 2
    disabled = VerifiedTokenCache(0, clock, leeway=0)
    disabled.put("a", claims)
    assert disabled.get("a") is None


async def test_a_cache_of_size_zero_verifies_every_time(
    jwks: FakeJWKS, clock: FakeClock, tokens: TokenFactory
) -> None:
    verifier = TokenVerifier(
        providers(),
        transport=jwks.transport(),
        clock=clock,
        options=AuthKitSettings(token_cache_size=0).token_settings(),
    )
    token = tokens.mint()
    assert await verifier.verify(token) is not await verifier.verify(token)
    assert len(verifier.cache) == 0


async def test_unknown_kid_refetches_once_then_fails(
    verifier: TokenVerifier, jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    await verifier.preload()
    assert jwks.requests == 1
    clock.advance(31)
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(tokens.mint(key=RSAKeyPair.generate()))
    assert jwks.requests == 2


async def test_key_rotation_new_kid_is_accepted(
    verifier: TokenVerifier, jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    await verifier.preload()
    new_key = RSAKeyPair.generate()
    jwks.keys = [new_key, tokens.key]
    clock.advance(31)
    claims = await verifier.verify(tokens.mint("user_01ROTATED", key=new_key))
    assert claims.sub == "user_01ROTATED"
    assert jwks.requests == 2
    # The old key is gone from the JWKS after the next refresh: its tokens are refused. The
    # request that finds the cache stale is still served (stale-while-revalidate).
    jwks.keys = [new_key]
    clock.advance(601)
    assert (await verifier.verify(tokens.mint("user_01STALE"))).sub == "user_01STALE"
    await verifier.key_sources[0].wait_for_refresh()
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(tokens.mint("user_01OLD"))


async def test_random_kid_flood_costs_one_fetch_per_cooldown(
    verifier: TokenVerifier, jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    await verifier.preload()
    attacker = RSAKeyPair.generate()
    for round_ in range(3):
        clock.advance(31)
        before = jwks.requests
        flood = [tokens.mint(key=attacker.with_kid(uuid.uuid4().hex)) for _ in range(200)]
        results = await asyncio.gather(
            *(verifier.verify(token) for token in flood), return_exceptions=True
        )
        assert all(isinstance(r, InvalidTokenError) for r in results), round_
        assert jwks.requests - before == 1
    # Inside the cooldown no fetch happens at all.
    before = jwks.requests
    with pytest.raises(InvalidTokenError):
        await verifier.verify(tokens.mint(key=attacker.with_kid("another")))
    assert jwks.requests == before


async def test_cold_outage_is_keys_unavailable(
    verifier: TokenVerifier, jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    jwks.down = True
    await verifier.preload()  # logs a warning, does not raise
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(tokens.mint())
    # Still cold: retried sooner than the cooldown, but still throttled.
    clock.advance(1)
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(tokens.mint())
    assert jwks.requests == 1
    # WorkOS is back: a few seconds later the next token fetches the keys.
    jwks.down = False
    clock.advance(5)
    assert (await verifier.verify(tokens.mint())).sub
    assert jwks.requests == 2


async def test_warm_outage_keeps_serving_cached_keys(
    verifier: TokenVerifier, jwks: FakeJWKS, tokens: TokenFactory, clock: FakeClock
) -> None:
    await verifier.preload()
    jwks.down = True
    clock.advance(601)  # past the TTL: a refresh is attempted and fails
    claims = await verifier.verify(tokens.mint("user_01WARM"))
    assert claims.sub == "user_01WARM"
    await verifier.key_sources[0].wait_for_refresh()
    assert jwks.requests == 2
    assert (await verifier.verify(tokens.mint("user_01WARM2"))).sub  # still served, no new fetch
    assert jwks.requests == 2
    clock.advance(31)
    stranger = tokens.mint(key=RSAKeyPair.generate())
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(stranger)


async def test_jwks_without_usable_keys_counts_as_a_failed_fetch(
    clock: FakeClock, tokens: TokenFactory
) -> None:
    only_ec = FakeJWKS([], client_id=CLIENT_ID, api_base_url=BASE)
    verifier = TokenVerifier(providers(), transport=only_ec.transport(), clock=clock)
    with pytest.raises(KeysUnavailableError):
        await verifier.verify(tokens.mint())


async def test_each_provider_uses_its_own_jwks(clock: FakeClock) -> None:
    custom_key = RSAKeyPair.generate()
    custom = TokenFactory(CLIENT_ID, key=custom_key, api_hostname="auth.example.com", clock=clock)
    workos = TokenFactory(CLIENT_ID, clock=clock)
    custom_jwks = FakeJWKS(custom, api_base_url="https://auth.example.com")
    workos_jwks = FakeJWKS(workos, api_base_url=BASE, fallback=custom_jwks.handle)
    verifier = TokenVerifier(
        [
            *providers(),
            AuthProvider(
                issuer=f"https://auth.example.com/user_management/{CLIENT_ID}",
                jwks=f"https://auth.example.com/sso/jwks/{CLIENT_ID}",
            ),
        ],
        transport=workos_jwks.transport(),
        clock=clock,
    )
    assert (await verifier.verify(custom.mint("user_01CUSTOM"))).sub == "user_01CUSTOM"
    assert (await verifier.verify(workos.mint("user_01WORKOS"))).sub == "user_01WORKOS"
    # A token claiming the custom issuer but signed by the WorkOS key is refused.
    with pytest.raises(InvalidTokenError):
        await verifier.verify(workos.mint(iss=custom.issuer))
    assert (custom_jwks.requests, workos_jwks.requests) == (1, 1)


async def test_a_stale_cache_serves_known_keys_while_one_refresh_runs_in_the_background(
    tokens: TokenFactory, clock: FakeClock
) -> None:
    served = FakeJWKS(tokens, api_base_url=BASE)
    workos = GatedTransport(served.handle)  # WorkOS answering slowly: no request may wait on it
    tasks = LifespanTasks()
    verifier = TokenVerifier(
        providers(),
        transport=workos.transport(),
        clock=clock,
        options=AuthKitSettings(jwks_cache_ttl=600, jwks_refetch_cooldown=30).token_settings(),
        tasks=tasks,
    )
    async with tasks.running():  # what AuthKit.lifespan holds open
        await verifier.preload()
        assert served.requests == 1
        workos.hold()
        clock.advance(601)
        # Without stale-while-revalidate this would wait at the gate forever (the guard fails it).
        with anyio.fail_after(10):
            for n in range(20):
                assert (await verifier.verify(tokens.mint(f"user_01S{n}"))).sub == f"user_01S{n}"
            await anyio.wait_all_tasks_blocked()  # let the background refresh reach the gate
        (source,) = verifier.key_sources
        assert (source.fetches, workos.waiting, served.requests) == (2, 1, 1)  # one refresh
        assert source.refreshing
        rotated = RSAKeyPair.generate()
        served.keys = [rotated, tokens.key]
        workos.release()
        await source.wait_for_refresh()
        assert served.requests == 2
        assert not source.refreshing
        assert rotated.kid in source.kids
        # An unknown kid still waits for a (throttled) fetch; inside the cooldown none happens.
        with pytest.raises(InvalidTokenError, match="unknown key"):
            await verifier.verify(tokens.mint(key=RSAKeyPair.generate()))
        assert served.requests == 2
    await verifier.aclose()


async def test_without_a_lifespan_the_request_that_finds_the_cache_stale_refreshes_it(
    tokens: TokenFactory, clock: FakeClock
) -> None:
    # No task group outlives a request then (a script, a bare TestClient): the first request
    # past the TTL refreshes inline, and the requests arriving meanwhile are served from the
    # cache at once rather than queueing behind it.
    served = FakeJWKS(tokens, api_base_url=BASE)
    workos = GatedTransport(served.handle)
    verifier = TokenVerifier(
        providers(),
        transport=workos.transport(),
        clock=clock,
        options=AuthKitSettings(jwks_cache_ttl=600, jwks_refetch_cooldown=30).token_settings(),
    )
    await verifier.preload()
    (source,) = verifier.key_sources
    workos.hold()
    clock.advance(601)
    rotated = RSAKeyPair.generate()
    served.keys = [rotated, tokens.key]
    first: list[str] = []

    async def first_request() -> None:
        first.append((await verifier.verify(tokens.mint("user_01FIRST"))).sub)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(first_request)
            await anyio.wait_all_tasks_blocked()
            assert (workos.waiting, first) == (1, [])  # the first request waits for WorkOS...
            assert source.refreshing
            for n in range(20):  # ...the others do not, and start no second refresh
                assert (await verifier.verify(tokens.mint(f"user_01S{n}"))).sub == f"user_01S{n}"
            assert (source.fetches, workos.waiting) == (2, 1)
            workos.release()
    assert first == ["user_01FIRST"]
    assert not source.refreshing
    assert rotated.kid in source.kids
    assert served.requests == 2
    await source.wait_for_refresh()  # nothing left to wait for
    await verifier.aclose()


def test_the_refresh_lock_belongs_to_each_event_loop(
    tokens: TokenFactory, clock: FakeClock
) -> None:
    # Two event loops in two threads share one verifier (two test clients, say). A lock held on
    # one loop must not make the other wait on it, or fail: an anyio lock (like asyncio's) only
    # wakes waiters of its own loop. Loop A's fetch blocks at WorkOS holding A's refresh lock;
    # loop B's refetch for an unknown kid gets its own lock, sees the attempt A made within the
    # cooldown, and answers at once.
    served = FakeJWKS(tokens, api_base_url=BASE)
    reached, release = threading.Event(), threading.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if not release.is_set():
            reached.set()
            await anyio.to_thread.run_sync(release.wait)
        return served.handle(request)

    verifier = TokenVerifier(
        providers(), transport=httpx.MockTransport(handle), clock=clock, options=None
    )
    errors: list[BaseException] = []

    def loop_a() -> None:
        async def verify() -> None:
            assert (await verifier.verify(tokens.mint("user_01A"))).sub == "user_01A"

        try:
            anyio.run(verify)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=loop_a)
    thread.start()
    try:
        assert reached.wait(10)

        async def loop_b() -> None:
            with anyio.fail_after(10), pytest.raises(KeysUnavailableError):
                await verifier.verify(tokens.mint("user_01B"))

        anyio.run(loop_b)
    finally:
        release.set()
        thread.join(10)
    assert errors == []
    assert served.requests == 1


def test_a_key_source_follows_the_app_to_a_new_event_loop(
    tokens: TokenFactory, clock: FakeClock
) -> None:
    # A bare TestClient runs each request on a fresh event loop. The JWKS client's keep-alive
    # connection belongs to the loop that opened it; reused on the next loop it would fail with
    # "Event loop is closed". A real socket, since only a real connection is kept alive.
    served = FakeJWKS(tokens, api_base_url=BASE)
    with jwks_http_server(served) as url:
        verifier = TokenVerifier([AuthProvider(issuer=tokens.issuer, jwks=url)], clock=clock)
        for n in range(3):
            key = RSAKeyPair.generate()  # a new kid each time: each run fetches the JWKS
            served.keys = [key]
            clock.advance(31)
            claims = anyio.run(verifier.verify, tokens.mint(f"user_01L{n}", key=key))
            assert claims.sub == f"user_01L{n}"
        anyio.run(verifier.aclose)
    assert served.requests == 3


@contextmanager
def jwks_http_server(served: FakeJWKS) -> Iterator[str]:
    """``served`` behind a real HTTP/1.1 server on localhost, in a thread; yields its JWKS URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as WorkOS's servers do

        def do_GET(self) -> None:
            response = served.handle(httpx.Request("GET", served.url.copy_with(path=self.path)))
            self.send_response(response.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # not on the test's stderr

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.block_on_close = False  # connections left open by a client of an ended loop
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{served.url.path}"
    finally:
        server.shutdown()
        server.server_close()
