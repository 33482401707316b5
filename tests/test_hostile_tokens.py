"""Hostile access tokens and hostile JWKS documents never give a 500 (issue 10, cases 6-8, 11-13).

Everything goes through a real app over HTTP (and the WebSocket handshake), with real RS256
tokens from the testing `TokenFactory`; the hostile variants are made by editing the segments
of real tokens. Only WorkOS's JWKS endpoint is mocked, with respx.
"""

import base64
import gc
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import pytest
import respx
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.websockets import WebSocketDisconnect

from fastapi_workos_authkit import AccessTokenClaims, AuthKit
from fastapi_workos_authkit.testing import RSAKeyPair, TokenFactory
from fastapi_workos_authkit.testing.tokens import b64url, encode_rs256
from tests.conftest import CLIENT_ID

BASE = "https://api.workos.test"
JWKS_PATH = f"/sso/jwks/{CLIENT_ID}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_768_478_400.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JWKSEndpoint:
    """What WorkOS's JWKS URL answers: a document the test can replace at any time."""

    def __init__(self, *keys: RSAKeyPair) -> None:
        self.content: bytes = _jwks(*(key.jwk for key in keys))
        self.requests = 0

    def serve(self, *entries: Any) -> None:
        self.content = _jwks(*entries)

    def respond(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(
            200, content=self.content, headers={"Content-Type": "application/json"}
        )


def _jwks(*entries: Any) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenFactory:
    return TokenFactory(CLIENT_ID, clock=clock)


@pytest.fixture
def endpoint(tokens: TokenFactory) -> Iterator[JWKSEndpoint]:
    served = JWKSEndpoint(tokens.key)
    with respx.mock(base_url=BASE, assert_all_called=False) as workos:
        workos.get(JWKS_PATH).mock(side_effect=served.respond)
        yield served


@pytest.fixture
def authkit(engine: Engine, clock: FakeClock, endpoint: JWKSEndpoint) -> AuthKit:
    # No http_transport: the JWKS goes over httpx's real transport, which respx intercepts.
    return AuthKit(client_id=CLIENT_ID, api_base_url=BASE, engine=engine, clock=clock)


def make_app(authkit: AuthKit) -> FastAPI:
    Claims = Annotated[AccessTokenClaims, Depends(authkit.claims)]
    app = FastAPI(lifespan=authkit.lifespan)

    @app.get("/claims")
    async def claims(claims: Claims) -> dict[str, str]:
        return {"sub": claims.sub}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: Claims) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.sub})
        await websocket.close()

    return app


@asynccontextmanager
async def running(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(authkit)
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c,
    ):
        yield c


async def get_claims(client: httpx.AsyncClient, token: str | bytes) -> httpx.Response:
    return await client.get("/claims", headers={"Authorization": b"Bearer " + _bytes(token)})


def _bytes(token: str | bytes) -> bytes:
    return token if isinstance(token, bytes) else token.encode("ascii")


def assert_invalid_token(response: httpx.Response, description: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert description in response.json()["detail"]


def assert_nothing_leaked(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No traceback was logged, and no log line holds a token or key material."""
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        text = record.getMessage()
        for secret in secrets:
            assert secret not in text, text


# --- case 6: deeply nested JSON inside a token ----------------------------------------------

DEEP = 3000  # far past the stdlib parser's recursion limit, well inside the 16 KiB token limit


def nested_header(token: str) -> str:
    _, payload, signature = token.split(".")
    header = b'{"alg":"RS256","kid":"k","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    return f"{b64url(header)}.{payload}.{signature}"


def nested_payload(token: str) -> str:
    header, _, signature = token.split(".")
    payload = b'{"sub":"user_01A","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    return f"{header}.{b64url(payload)}.{signature}"


@pytest.mark.anyio
@pytest.mark.parametrize("make", [nested_header, nested_payload], ids=["header", "payload"])
async def test_nested_json_in_a_token_is_401_without_a_traceback(
    authkit: AuthKit, tokens: TokenFactory, caplog: pytest.LogCaptureFixture, make: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make(tokens.mint("user_01A"))
    async with running(authkit) as client:
        response = await get_claims(client, token)
        assert_invalid_token(response, "is not valid JSON")
        assert (await get_claims(client, tokens.mint("user_01A"))).json() == {"sub": "user_01A"}
    refused = [r for r in caplog.records if r.getMessage().startswith("access token refused")]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert_nothing_leaked(caplog, token.split(".")[2], token.split(".")[1][:40])


@pytest.mark.parametrize(("part", "make"), [("header", nested_header), ("payload", nested_payload)])
def test_nested_json_on_the_websocket_handshake_closes_with_1008(
    authkit: AuthKit,
    tokens: TokenFactory,
    caplog: pytest.LogCaptureFixture,
    part: str,
    make: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make(tokens.mint("user_01A"))
    with TestClient(make_app(authkit)) as client:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws,
        ):
            ws.receive_json()
        assert closed.value.code == 1008
        assert closed.value.reason == f"The token {part} is not valid JSON"
    assert_nothing_leaked(caplog, token.split(".")[2])


# --- case 11: only canonical base64url ------------------------------------------------------


def _other_last_char(segment: str) -> str:
    """The same bytes with different spare low bits in the last character (non-canonical)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(segment[-1])
    spare = {2: 0b1111, 3: 0b11}[len(segment) % 4]  # bits of the last char beyond the data
    assert last & spare == 0
    return segment[:-1] + alphabet[last | 1]


def _with_signature(token: str, edit: Any) -> str:
    header, payload, signature = token.split(".")
    return f"{header}.{payload}.{edit(signature)}"


# Edits of the signature segment only: the signed bytes stay the same, so each of these is a
# genuinely valid signature to a lenient decoder (python-jose's), which accepted every one.
NON_CANONICAL = {
    "padded": lambda t: t + "==",
    "bangs inserted": lambda t: _with_signature(t, lambda s: s[:-10] + "!!!!" + s[-10:]),
    "non-ASCII inserted": lambda t: _with_signature(t, lambda s: s[:-10] + "é" + s[-10:]),
    "spare bits set": lambda t: _with_signature(t, _other_last_char),
    "standard alphabet": lambda t: _with_signature(
        t, lambda s: s.replace("-", "+").replace("_", "/")
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("variant", NON_CANONICAL)
async def test_a_non_canonical_spelling_of_a_valid_token_is_refused(
    authkit: AuthKit, tokens: TokenFactory, endpoint: JWKSEndpoint, variant: str
) -> None:
    valid = tokens.mint("user_01A")
    while variant == "standard alphabet" and not {"-", "_"} & set(valid.split(".")[2]):
        valid = tokens.mint("user_01A")  # this variant needs a signature that uses - or _
    hostile = NON_CANONICAL[variant](valid)
    assert hostile != valid
    async with running(authkit) as client:
        response = await get_claims(client, hostile.encode("utf-8"))
        assert_invalid_token(response, "base64url")
        # The genuine token still works, and the variant never became a cache entry of its own.
        assert (await get_claims(client, valid)).status_code == 200
        assert_invalid_token(await get_claims(client, hostile.encode("utf-8")), "base64url")
    assert len(authkit.token_verifier.cache) == 1


@pytest.mark.anyio
async def test_a_non_canonical_token_is_refused_before_any_key_lookup(
    authkit: AuthKit, tokens: TokenFactory, endpoint: JWKSEndpoint, clock: FakeClock
) -> None:
    stranger = RSAKeyPair.generate()  # an unknown kid would make the verifier fetch the JWKS
    async with running(authkit) as client:
        fetched = endpoint.requests
        clock.advance(3600)
        for make in NON_CANONICAL.values():
            hostile = make(tokens.mint("user_01A", key=stranger))
            assert (await get_claims(client, hostile.encode("utf-8"))).status_code == 401
        assert endpoint.requests == fetched
    assert len(authkit.token_verifier.cache) == 0


# --- case 12: crit --------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "crit",
    [["exp"], ["b64"], [], "exp", None, {"x": 1}],
    ids=["unknown-extension", "b64", "empty-list", "string", "null", "object"],
)
async def test_a_token_with_crit_is_refused(
    authkit: AuthKit, tokens: TokenFactory, crit: Any
) -> None:
    # Correctly signed, with the crit header (mint would drop a None, so the header is set here).
    token = _resign_with_header(tokens, tokens.mint("user_01A"), {"crit": crit, "exp": 1})
    async with running(authkit) as client:
        assert_invalid_token(await get_claims(client, token), "critical extensions (crit)")
        assert (await get_claims(client, tokens.mint("user_01A"))).status_code == 200


def _resign_with_header(tokens: TokenFactory, token: str, changes: dict[str, Any]) -> str:
    """``token``'s claims re-signed by its own key, under a header with ``changes`` applied."""
    header_segment, payload_segment, _ = token.split(".")
    header = json.loads(_decode(header_segment)) | changes
    return encode_rs256(json.loads(_decode(payload_segment)), tokens.key, header)


def _decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# --- case 13: NumericDate claims are JSON numbers -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "9999999999"),
        ("exp", "1768478700.5"),
        ("iat", "1768478400"),
        ("iat", True),
        ("nbf", "0"),
        ("nbf", False),
    ],
)
async def test_a_numeric_date_that_is_not_a_json_number_is_refused(
    authkit: AuthKit, tokens: TokenFactory, clock: FakeClock, claim: str, value: Any
) -> None:
    async with running(authkit) as client:
        response = await get_claims(client, tokens.mint("user_01A", **{claim: value}))
        assert_invalid_token(response, f"invalid claims: {claim}")
        # Numbers, integral or not, are NumericDates.
        number = clock() + (60.5 if claim == "exp" else -60.5)
        accepted = await get_claims(client, tokens.mint("user_01A", **{claim: number}))
        assert accepted.status_code == 200, accepted.text


# --- cases 7 and 8: hostile JWKS documents --------------------------------------------------


def broken_entries(kid: str, good: RSAKeyPair) -> dict[str, Any]:
    """RSA entries python-jose cannot make a key of, each under ``kid``."""
    jwk = good.with_kid(kid).jwk
    return {
        "no n": {k: v for k, v in jwk.items() if k != "n"},
        "n is 1.5": jwk | {"n": 1.5},
        "n is a list": jwk | {"n": [[["AQAB"]]]},
        "e is null": jwk | {"e": None},
        "n is not base64url": jwk | {"n": "!!" + jwk["n"]},
        "n is too small": jwk | {"n": "AA"},
    }


BROKEN = list(broken_entries("x", RSAKeyPair.generate(kid="x")))
# The entries on which python-jose raises TypeError, which nothing caught; the others raised
# ValueError, which refused the whole document (see the rotation test).
TYPE_ERRORS = ["no n", "n is 1.5", "n is a list", "e is null"]
NESTED_DOCUMENT = b'{"keys":[' + b"[" * DEEP + b"]" * DEEP + b"]}"


def warnings_from(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(start)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [*TYPE_ERRORS, "nested document"])
async def test_start_up_with_a_broken_jwks_warns_and_completes(
    authkit: AuthKit,
    tokens: TokenFactory,
    endpoint: JWKSEndpoint,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    if broken == "nested document":
        endpoint.content = NESTED_DOCUMENT
    else:
        endpoint.serve(broken_entries(tokens.key.kid, tokens.key)[broken])
    async with running(authkit) as client:  # start-up completes
        assert warnings_from(caplog, "could not fetch the JWKS")
        # No key was ever fetched: 503, as for WorkOS being down; never a 500.
        response = await get_claims(client, tokens.mint("user_01A"))
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        # WorkOS fixes its document: a few seconds later the keys are fetched.
        endpoint.serve(tokens.key.jwk)
        clock.advance(5)
        assert (await get_claims(client, tokens.mint("user_01A"))).status_code == 200
    assert_nothing_leaked(caplog, tokens.key.jwk["n"][:40])


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [*TYPE_ERRORS, "nested document"])
async def test_an_unknown_kid_with_a_broken_jwks_is_401_and_cached_keys_are_kept(
    authkit: AuthKit,
    tokens: TokenFactory,
    endpoint: JWKSEndpoint,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    rotated = RSAKeyPair.generate()
    async with running(authkit) as client:
        if broken == "nested document":
            endpoint.content = NESTED_DOCUMENT
        else:
            endpoint.serve(broken_entries(rotated.kid, rotated)[broken])
        clock.advance(31)  # past the refetch cooldown: the unknown kid makes a refetch
        before = endpoint.requests
        response = await get_claims(client, tokens.mint("user_01A", key=rotated))
        assert_invalid_token(response, "unknown key")
        assert endpoint.requests == before + 1
        assert warnings_from(caplog, "could not fetch the JWKS")
        # The cached key is still served.
        assert (await get_claims(client, tokens.mint("user_01B"))).json() == {"sub": "user_01B"}


@pytest.mark.anyio
@pytest.mark.parametrize("broken", ["no n", "n is 1.5", "nested document"])
async def test_a_background_refresh_of_a_broken_jwks_leaks_no_exception(
    authkit: AuthKit,
    tokens: TokenFactory,
    endpoint: JWKSEndpoint,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    async with running(authkit) as client:
        (source,) = authkit.token_verifier.key_sources
        if broken == "nested document":
            endpoint.content = NESTED_DOCUMENT
        else:
            endpoint.serve(broken_entries(tokens.key.kid, tokens.key)[broken])
        clock.advance(601)  # past the TTL: the known kid is served while a refresh runs
        assert (await get_claims(client, tokens.mint("user_01A"))).status_code == 200
        # Let the background task run to its end, without awaiting (retrieving) its result.
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()
        assert not source.refreshing
        assert warnings_from(caplog, "could not fetch the JWKS")
        # Served stale: the refresh failed, the cached key is kept.
        assert (await get_claims(client, tokens.mint("user_01B"))).status_code == 200
    del source
    gc.collect()  # a task that ended with an exception nobody retrieved is reported here
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
@pytest.mark.parametrize("broken", BROKEN)
async def test_one_broken_entry_does_not_block_key_rotation(
    authkit: AuthKit,
    tokens: TokenFactory,
    endpoint: JWKSEndpoint,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    new_key = RSAKeyPair.generate(kid="k3_rotated")
    bad = broken_entries("k_broken", new_key)[broken]
    async with running(authkit) as client:
        endpoint.serve(bad, tokens.key.jwk, new_key.jwk)  # [broken entry, k2, new k3]
        clock.advance(31)
        response = await get_claims(client, tokens.mint("user_01NEW", key=new_key))
        assert response.json() == {"sub": "user_01NEW"}, response.text
        assert (await get_claims(client, tokens.mint("user_01OLD"))).status_code == 200
    (skipped,) = warnings_from(caplog, "skipping JWKS entry 0")
    assert "k_broken" in skipped.getMessage()
    assert_nothing_leaked(caplog, tokens.key.jwk["n"][:40], new_key.jwk["n"][:40])


@pytest.mark.anyio
async def test_a_broken_entry_at_start_up_leaves_the_good_keys_usable(
    authkit: AuthKit, tokens: TokenFactory, endpoint: JWKSEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.serve(
        "not an object",
        {"kty": "RSA", "n": tokens.key.jwk["n"], "e": "AQAB"},  # no kid
        {"kty": "EC", "kid": "ec_key", "crv": "P-256", "x": "AA", "y": "AA"},  # not for us
        tokens.key.jwk,
    )
    async with running(authkit) as client:
        assert (await get_claims(client, tokens.mint("user_01A"))).status_code == 200
    skipped = warnings_from(caplog, "skipping JWKS entry")
    assert [r.getMessage().split(" from ")[0] for r in skipped] == [
        "skipping JWKS entry 0 (kid None)",
        "skipping JWKS entry 1 (kid None)",
    ]
    assert endpoint.requests == 1


@pytest.mark.anyio
async def test_a_jwks_failure_nobody_foresaw_still_only_warns_at_start_up(
    engine: Engine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_transport(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a transport that fails in a way httpx does not wrap")

    authkit = AuthKit(
        client_id=CLIENT_ID,
        api_base_url=BASE,
        engine=engine,
        clock=clock,
        http_transport=httpx.MockTransport(broken_transport),
    )
    async with running(authkit) as client:  # start-up completes
        (warning,) = warnings_from(caplog, "the JWKS refresh from")
        assert warning.exc_info is not None  # unforeseen: the traceback is kept, at WARNING
        assert (await client.get("/claims")).status_code == 401  # no token: no key needed
