"""Scenario 5: fuzzed requests against the webhook, Action and authenticated endpoints.

Hypothesis generates *recipes* (what to send and how to sign it); each recipe is signed when it
is sent, so a request meant to carry a valid signature is not made stale by generation time.
Nothing Hypothesis generates is a validly signed, well-formed event: every such request must be
refused, with no 5xx other than the documented 503, and nothing may be written to any table.

Beside them, a fixed list of *hostile classes* (issue 10) is sent every run, each a few times, so
every class shows up in the results whatever Hypothesis drew: correctly signed deep nesting, lone
surrogates, non-finite numbers, over-long ids and values, a client leaving mid-body; access tokens
with nested JSON segments, non-canonical base64url, ``crit``, string dates or a path in ``sub``;
and broken JWKS documents served to the workers. Each class carries the answers it may get
(`EXPECTED`); a class is counted per route and per answer in ``figures.by_class``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastapi_workos_authkit._routes.signatures import compute_signature
from fastapi_workos_authkit.testing import encode, factories
from fastapi_workos_authkit.testing.actions import (
    authentication_action,
    user_registration_action,
)
from fastapi_workos_authkit.testing.tokens import (
    RSAKeyPair,
    TokenFactory,
    b64url,
    tamper_header,
)

from .jwks import JWKSServer
from .load import make_clients

WEBHOOK = "/workos/webhook"
ACTION = "/workos/action"
ME = "/bench/me"
CLAIMS = "/bench/claims"  # token verification alone: a 200 there means the token verified
ONE_MIB = 1024 * 1024

# Header bytes h11 lets through (visible ASCII and obs-text; spaces and tabs only inside).
_HEADER_BYTES = st.binary(min_size=1, max_size=300).map(
    lambda raw: bytes(b if (0x21 <= b <= 0x7E or b >= 0x80) else 0x41 for b in raw)
)
_HEADER_NAMES = st.sampled_from(
    [
        b"workos-signature",
        b"content-type",
        b"content-encoding",
        b"authorization",
        b"x-forwarded-for",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
_NOT_A_STRING = st.none() | st.booleans() | st.integers() | st.lists(st.integers(), max_size=3)


@dataclass
class Recipe:
    """One request to send: path, body, how to sign it, and extra headers."""

    kind: str
    path: str
    body: bytes = b""
    sign: str = "valid"  # valid | none | wrong_secret | forged | stale | seconds | raw | of_other
    signed_body: bytes | None = None  # for "of_other": the body the signature was made over
    offset_s: int = 0
    raw_header: bytes = b""
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)
    authorization: bytes | None = None
    # The hostile class (issue 10) this recipe belongs to; "" for Hypothesis's random recipes.
    cls: str = ""
    # The answers this recipe may get; ``None``: refused, with no 5xx other than 503.
    expect: frozenset[str] | None = None
    # For the surrogate class on the webhook: the event and user ids it is expected to store.
    stores: tuple[str, str] | None = None


def _bases(secret_kind: str) -> list[bytes]:
    if secret_kind == "webhook":
        return [
            encode(factories.user_created("user_01FUZZ0000000000000000000A")),
            encode(factories.user_deleted("user_01FUZZ0000000000000000000B", id_only=True)),
            encode(factories.session_created("user_01FUZZ0000000000000000000C")),
            encode(factories.organization_created()),
        ]
    return [
        encode(authentication_action()),
        encode(user_registration_action(email="ana@acme.test")),
    ]


@st.composite
def signed_recipes(draw: st.DrawFn, path: str, secret_kind: str) -> Recipe:
    """Requests to a signed endpoint: bodies and signatures, each wrong in some way."""
    base = draw(st.sampled_from(_bases(secret_kind)))
    kind = draw(
        st.sampled_from(
            [
                "garbage",
                "forged",
                "wrong_secret",
                "truncated_original_signature",
                "truncated_signed",
                "flipped_byte",
                "reserialised",
                "stale",
                "seconds_timestamp",
                "signed_json_not_event",
                "signed_bad_field",
                "mangled_header",
                "missing_header",
                "garbage",
                "oversized",
            ]
        )
    )
    extra = draw(st.lists(st.tuples(_HEADER_NAMES, _HEADER_BYTES), max_size=2))
    extra = [(name, value) for name, value in extra if name != b"workos-signature"]
    recipe = Recipe(kind=kind, path=path, body=base, extra=extra)
    if kind == "garbage":
        recipe.body = draw(st.binary(max_size=2048))
        recipe.sign = draw(st.sampled_from(["raw", "none", "forged", "valid_over_base"]))
        if recipe.sign == "valid_over_base":
            recipe.sign, recipe.signed_body = "of_other", base
        recipe.raw_header = draw(_HEADER_BYTES)
    elif kind == "forged":
        recipe.sign = "forged"
    elif kind == "wrong_secret":
        recipe.sign = "wrong_secret"
    elif kind in ("truncated_original_signature", "truncated_signed"):
        cut = draw(st.integers(0, len(base) - 1))
        recipe.body = base[:cut]
        if kind == "truncated_original_signature":
            recipe.sign, recipe.signed_body = "of_other", base
    elif kind == "flipped_byte":
        position = draw(st.integers(0, len(base) - 1))
        value = draw(st.integers(0, 255).filter(lambda b: b != base[position]))
        recipe.body = base[:position] + bytes([value]) + base[position + 1 :]
        recipe.sign, recipe.signed_body = "of_other", base
    elif kind == "reserialised":
        indent = draw(st.sampled_from([None, 1, 2]))
        reordered = dict(sorted(json.loads(base).items(), reverse=draw(st.booleans())))
        recipe.body = json.dumps(reordered, indent=indent, ensure_ascii=True).encode()
        if recipe.body == base:
            recipe.body = b"\xef\xbb\xbf" + base  # a BOM-prefixed copy must fail too
        recipe.sign, recipe.signed_body = "of_other", base
    elif kind == "stale":
        recipe.sign = "stale"
        magnitude = draw(st.integers(200 if secret_kind == "webhook" else 40, 10**9))
        recipe.offset_s = magnitude * draw(st.sampled_from([-1, 1]))
    elif kind == "seconds_timestamp":
        recipe.sign = "seconds"
    elif kind == "signed_json_not_event":
        recipe.body = json.dumps(draw(_JSON)).encode()
    elif kind == "signed_bad_field":
        payload = json.loads(base)
        name = draw(st.sampled_from(["id", "data"] if secret_kind == "webhook" else ["object"]))
        payload[name] = draw(_NOT_A_STRING)
        recipe.body = json.dumps(payload).encode()
    elif kind == "mangled_header":
        recipe.sign = "raw"
        stamp = str(int(time.time() * 1000))
        recipe.raw_header = draw(
            st.sampled_from(
                [
                    f"v1={'0' * 64}".encode(),
                    f"t={stamp}".encode(),
                    f"t={stamp}, v1=".encode(),
                    f"t=-{stamp}, v1={'a' * 64}".encode(),
                    ("t=" + stamp + ", v1=" + "\u00e9" * 64).encode(),
                    f"t=1e12, v1={'a' * 64}".encode(),
                    b"t=" + b"9" * 5000 + b", v1=" + b"a" * 64,
                    b",,,,=,=",
                ]
            )
            | _HEADER_BYTES
        )
    elif kind == "missing_header":
        recipe.sign = "none"
    elif kind == "oversized":
        recipe.body = base + b" " * (ONE_MIB + draw(st.integers(1, 4096)))
        recipe.sign = draw(st.sampled_from(["valid", "none"]))
    return recipe


@st.composite
def token_recipes(draw: st.DrawFn, tokens: TokenFactory, foreign: RSAKeyPair) -> Recipe:
    """Requests to an authenticated endpoint with a mangled or untrusted bearer token."""
    sub = "user_01FUZZNOTSYNCED0000000000"  # never synced: a valid token still finds no user
    kind = draw(
        st.sampled_from(
            [
                "random_header",
                "random_bearer",
                "flipped_char",
                "truncated",
                "alg_none",
                "hs256_public_key",
                "foreign_key_known_kid",
                "unknown_kid",
                "expired",
                "not_yet_valid",
                "wrong_issuer",
                "wrong_audience",
                "extra_segments",
                "valid_unknown_user",
                "no_header",
            ]
        )
    )
    recipe = Recipe(kind=kind, path=ME, sign="none")
    token = ""
    if kind == "random_header":
        recipe.authorization = draw(_HEADER_BYTES)
        return recipe
    if kind == "random_bearer":
        token = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=500))
    elif kind in ("flipped_char", "truncated", "extra_segments"):
        token = tokens.mint(sub)
        if kind == "flipped_char":
            position = draw(st.integers(0, len(token) - 1))
            replacement = draw(
                st.sampled_from("ABCxyz019-_.").filter(lambda c: c != token[position])
            )
            token = token[:position] + replacement + token[position + 1 :]
        elif kind == "truncated":
            token = token[: draw(st.integers(0, len(token) - 1))]
        else:
            token = token + "." + draw(st.text("abcXYZ-_", max_size=20))
    elif kind == "alg_none":
        token = tokens.alg_none(sub)
    elif kind == "hs256_public_key":
        token = tokens.hs256_with_public_key(sub)
    elif kind == "foreign_key_known_kid":
        token = tokens.mint(sub, key=foreign, kid=tokens.key.kid)
    elif kind == "unknown_kid":
        token = tamper_header(tokens.mint(sub), kid=draw(st.text("abcdef0123", min_size=1)))
    elif kind == "expired":
        token = tokens.mint(sub, expired=True)
    elif kind == "not_yet_valid":
        token = tokens.mint(sub, not_yet_valid=True)
    elif kind == "wrong_issuer":
        token = tokens.mint(
            sub, iss=draw(st.sampled_from(["https://evil.test", "", "api.workos.com"]))
        )
    elif kind == "wrong_audience":
        token = tokens.mint(sub, aud="client_01SOMEONEELSE")
    elif kind == "valid_unknown_user":
        token = tokens.mint(sub)
    elif kind == "no_header":
        return recipe
    scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", "Bearer  ", ""]))
    recipe.authorization = (scheme + token).strip().encode("ascii", "replace") or b"Bearer"
    return recipe


def generate(count: int, tokens: TokenFactory, foreign: RSAKeyPair) -> list[Recipe]:
    """``count`` recipes, shared roughly equally by the three endpoints."""
    recipes: list[Recipe] = []
    strategy = st.one_of(
        signed_recipes(WEBHOOK, "webhook"),
        signed_recipes(ACTION, "action"),
        token_recipes(tokens, foreign),
    )

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(recipe: Recipe) -> None:
        recipes.append(recipe)

    collect()
    return recipes


# --- The hostile classes of issue 10: sent every run, each a few times ---------------------

# The answers each hostile class may get, per route. One line per decision, so a changed
# decision (say, widening the ledger columns instead of refusing long ids) changes one line.
EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    ("deep_nesting", WEBHOOK): frozenset({"400"}),
    ("deep_nesting", ACTION): frozenset({"400"}),
    # The lead's decision: lone surrogates are replaced with U+FFFD and the event is stored.
    # The rows check excludes exactly these events and checks how they were stored.
    ("surrogates", WEBHOOK): frozenset({"200"}),
    ("surrogates", ACTION): frozenset({"200"}),
    ("non_finite_numbers", WEBHOOK): frozenset({"400"}),
    # An Action stores nothing: a verdict is as honest an answer as a refusal.
    ("non_finite_numbers", ACTION): frozenset({"200", "400"}),
    ("over_long_values", WEBHOOK): frozenset({"400"}),
    ("over_long_values", ACTION): frozenset({"200", "400"}),
    # Nobody is left to read an answer; the server log shows how it was treated.
    ("client_disconnect", WEBHOOK): frozenset({"disconnected"}),
    ("client_disconnect", ACTION): frozenset({"disconnected"}),
    # A canonical, valid token: shows that the token classes' 401s come from the defect sent.
    ("token_control", CLAIMS): frozenset({"200"}),
    ("token_nested_json", CLAIMS): frozenset({"401"}),
    ("token_non_canonical", CLAIMS): frozenset({"401"}),
    ("token_crit", CLAIMS): frozenset({"401"}),
    ("token_string_dates", CLAIMS): frozenset({"401"}),
    # To /bench/me, where the just-in-time fetch would put the sub into a REST path.
    ("token_path_in_sub", ME): frozenset({"401"}),
}
# The JWKS phase: a token naming a broken entry's kid, the good key meanwhile, and a new key
# published beside a broken entry.
HOSTILE_CLASSES = frozenset({cls for cls, _ in EXPECTED} | {"jwks_bad_documents"})
"""Every hostile class; each must appear in ``figures.by_class`` after a run."""
JWKS_PROBE = frozenset({"401"})
JWKS_CONTROL = frozenset({"200"})
JWKS_ROTATED = frozenset({"200"})

_TOP_DEPTH = 2000
_INNER_DEPTH = 10_000
# Deep enough for a RecursionError in json.loads (about 1,000), short enough that the token stays
# under the verifier's 16 KiB length limit and reaches the JSON decode.
_TOKEN_DEPTH = 5000
_LONG_EMAIL = "a" * 309 + "@example.com"  # 321 characters: over RFC 5321's 320
_TOKEN_SUB = "user_01FUZZTOKEN0000000000000"


def _nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b'"x"' + b"}" * depth


def _in_metadata(body: bytes, raw: bytes) -> bytes:
    """``body`` with its (first, empty) ``metadata`` object replaced by raw JSON text."""
    marker = b'"metadata":{}'
    if marker not in body:
        raise ValueError("the base payload has no empty metadata object")
    return body.replace(marker, raw, 1)


def _signed(kind: str, path: str, body: bytes, cls: str) -> Recipe:
    return Recipe(kind=kind, path=path, body=body, cls=cls, expect=EXPECTED[(cls, path)])


def _webhook_base() -> bytes:
    return encode(factories.user_created())


def _action_base() -> bytes:
    return encode(authentication_action())


def _signed_route_recipes(serial: Counter[str]) -> list[Recipe]:
    """Correctly signed bodies that reach past the signature check, one per variant."""
    recipes: list[Recipe] = []
    top = b"[" * _TOP_DEPTH + b"]" * _TOP_DEPTH
    for path, base in ((WEBHOOK, _webhook_base), (ACTION, _action_base)):
        recipes += [
            _signed("top_level_2000", path, top, "deep_nesting"),
            _signed(
                "metadata_10000",
                path,
                _in_metadata(base(), b'"metadata":' + _nested_object(_INNER_DEPTH)),
                "deep_nesting",
            ),
        ]
        for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
            body = _in_metadata(base(), b'"metadata":{},"fuzz_score":' + literal)
            recipes.append(_signed(literal.decode(), path, body, "non_finite_numbers"))
    # Each surrogate event has its own ids: it is expected to be stored, once.
    for variant in ("escaped_high", "escaped_low", "raw_bytes_ed_a0_80"):
        serial["surrogate"] += 1
        user_id = f"user_01FUZZSURROGATE{serial['surrogate']:09d}"
        event_id = f"event_01FUZZSURROGATE{serial['surrogate']:09d}"
        names: dict[str, Any] = {
            "escaped_high": {"first_name": "Ana\ud800"},
            "escaped_low": {"last_name": "\udfffDavis"},
            # A marker the ids do not contain, replaced by the raw bytes below.
            "raw_bytes_ed_a0_80": {"first_name": "RAWBYTESMARK"},
        }[variant]
        body = encode(factories.user_created(user_id, event_id=event_id, **names))
        action = encode(authentication_action(factories.user(**names)))
        if variant == "raw_bytes_ed_a0_80":
            # ED A0 80 is U+D800 encoded as if it were a character: not valid UTF-8.
            body = body.replace(b"RAWBYTESMARK", b"Ana\xed\xa0\x80")
            action = action.replace(b"RAWBYTESMARK", b"Ana\xed\xa0\x80")
        recipe = _signed(variant, WEBHOOK, body, "surrogates")
        recipe.stores = (event_id, user_id)
        recipes += [recipe, _signed(variant, ACTION, action, "surrogates")]
    long_id = "A" * 61
    recipes += [
        _signed(
            "event_id_66",
            WEBHOOK,
            encode(factories.user_created(event_id="event_" + long_id[:60])),
            "over_long_values",
        ),
        _signed(
            "data_id_66",
            WEBHOOK,
            encode(factories.user_created("user_" + long_id)),
            "over_long_values",
        ),
        _signed(
            "event_type_130",
            WEBHOOK,
            encode(factories.event("fuzz." + "x" * 125, factories.user())),
            "over_long_values",
        ),
        _signed(
            "email_321",
            WEBHOOK,
            encode(factories.user_created(email=_LONG_EMAIL)),
            "over_long_values",
        ),
        _signed(
            "action_id_67",
            ACTION,
            encode(authentication_action(action_id="action_" + long_id[:60])),
            "over_long_values",
        ),
        _signed(
            "user_id_66",
            ACTION,
            encode(authentication_action(factories.user("user_" + long_id))),
            "over_long_values",
        ),
        _signed(
            "email_321",
            ACTION,
            encode(user_registration_action(email=_LONG_EMAIL)),
            "over_long_values",
        ),
    ]
    return recipes


def _disconnect_recipes() -> list[Recipe]:
    """Signed deliveries of which only half the body is sent before the client leaves."""
    # Padded past one read, so the server is waiting for more body when the client goes.
    webhook = encode(factories.user_created()) + b" " * 65536
    action = encode(authentication_action()) + b" " * 65536
    return [
        _signed("half_body_then_close", WEBHOOK, webhook, "client_disconnect"),
        _signed("half_body_then_close", ACTION, action, "client_disconnect"),
    ]


def _resigned(header: str, payload: str, key: RSAKeyPair) -> str:
    """Sign exactly these two segments, as sent (canonical or not)."""
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('utf-8')))}"


def _token(kind: str, cls: str, token: str | bytes, path: str = CLAIMS) -> Recipe:
    raw = token if isinstance(token, bytes) else token.encode("utf-8")
    return Recipe(
        kind=kind,
        path=path,
        sign="none",
        authorization=b"Bearer " + raw,
        cls=cls,
        expect=EXPECTED[(cls, path)],
    )


def _token_recipes(tokens: TokenFactory) -> list[Recipe]:
    """Access tokens that are signed by the trusted key and wrong in one way each."""
    key = tokens.key
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    claims = tokens.claims(_TOKEN_SUB)

    header_json = json.dumps(header, separators=(",", ":")).encode()
    claims_json = json.dumps(claims, separators=(",", ":")).encode()
    nested_list = b"[" * _TOKEN_DEPTH + b"]" * _TOKEN_DEPTH
    nested_in = b',"x":' + nested_list + b"}"
    good = tokens.mint(_TOKEN_SUB)
    h, p, sig = good.split(".")
    middle = len(sig) // 2
    client = tokens.client_id
    return [
        _token("canonical", "token_control", good),
        _token(
            "header_nested",
            "token_nested_json",
            _resigned(b64url(header_json[:-1] + nested_in), p, key),
        ),
        _token("header_nested_list", "token_nested_json", _resigned(b64url(nested_list), p, key)),
        _token(
            "payload_nested",
            "token_nested_json",
            _resigned(h, b64url(claims_json[:-1] + nested_in), key),
        ),
        _token("signature_padded", "token_non_canonical", good + "=="),
        _token(
            "signature_bangs",
            "token_non_canonical",
            f"{h}.{p}.{sig[:middle]}!!!!{sig[middle:]}",
        ),
        _token(
            "signature_non_ascii",
            "token_non_canonical",
            f"{h}.{p}.{sig[:middle]}".encode() + b"\xc3\xa9" + sig[middle:].encode(),
        ),
        _token("header_padded_resigned", "token_non_canonical", _resigned(h + "==", p, key)),
        _token(
            "payload_bangs_resigned",
            "token_non_canonical",
            _resigned(h, p[: len(p) // 2] + "!!!!" + p[len(p) // 2 :], key),
        ),
        _token(
            "crit_unknown_extension",
            "token_crit",
            tokens.mint(_TOKEN_SUB, header={"crit": ["fuzz-ext"], "fuzz-ext": True}),
        ),
        _token("exp_string", "token_string_dates", tokens.mint(_TOKEN_SUB, exp="9999999999")),
        _token("iat_string", "token_string_dates", tokens.mint(_TOKEN_SUB, iat=str(claims["iat"]))),
        _token("nbf_string", "token_string_dates", tokens.mint(_TOKEN_SUB, nbf=str(claims["iat"]))),
        _token(
            "dot_dot_to_jwks",
            "token_path_in_sub",
            tokens.mint(f"../../sso/jwks/{client}"),
            ME,
        ),
        _token(
            "id_then_dot_dot",
            "token_path_in_sub",
            tokens.mint(f"user_01FUZZ/../../../sso/jwks/{client}"),
            ME,
        ),
        _token(
            "percent_encoded_dot_dot",
            "token_path_in_sub",
            tokens.mint(f"..%2F..%2Fsso%2Fjwks%2F{client}"),
            ME,
        ),
        _token("query_string", "token_path_in_sub", tokens.mint("user_01FUZZ?limit=1"), ME),
    ]


def hostile_recipes(tokens: TokenFactory, repeat: int) -> list[Recipe]:
    """Every hostile class, each variant ``repeat`` times (the JWKS phase is separate)."""
    serial: Counter[str] = Counter()
    recipes: list[Recipe] = []
    for _ in range(repeat):
        recipes += _signed_route_recipes(serial)
        recipes += _token_recipes(tokens)
        recipes += _disconnect_recipes()
    return recipes


async def _send_half_and_leave(base_url: str, recipe: Recipe, secrets: dict[str, str]) -> str:
    """Send the headers and half the body on a raw socket, then close it."""
    parts = urlsplit(base_url)
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [
        f"POST {recipe.path} HTTP/1.1".encode(),
        f"host: {parts.netloc}".encode(),
        f"content-length: {len(recipe.body)}".encode(),
        *(name + b": " + value for name, value in _headers(recipe, secrets)),
    ]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + recipe.body[: len(recipe.body) // 2])
    await writer.drain()
    # Give the server time to start reading the body, so the close lands in the middle of it.
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    return "disconnected"


def _jwks_documents(jwks: JWKSServer, rotated: RSAKeyPair) -> list[tuple[str, bytes, str]]:
    """(name, document, kid the probe token names) for each broken JWKS document."""
    good = jwks.key.jwk
    base = {"kty": "RSA", "use": "sig", "alg": "RS256", "e": "AQAB"}

    def document(*entries: dict[str, Any]) -> bytes:
        return json.dumps({"keys": list(entries)}).encode()

    nested = (
        b'{"keys":['
        + json.dumps(good).encode()
        + b',{"kty":"RSA","use":"sig","alg":"RS256","kid":"fuzz_nested","e":"AQAB","n":'
        + b"[" * _INNER_DEPTH
        + b"]" * _INNER_DEPTH
        + b"}]}"
    )
    return [
        ("entry_without_n", document(good, {**base, "kid": "fuzz_no_n"}), "fuzz_no_n"),
        ("n_is_1.5", document({**base, "kid": "fuzz_n_float", "n": 1.5}, good), "fuzz_n_float"),
        ("deeply_nested_entry", nested, "fuzz_nested"),
        (
            "broken_then_k2_then_new_k3",
            document({**base, "kid": "fuzz_rotation_broken"}, good, rotated.jwk),
            rotated.kid,
        ),
    ]


def _jwks_recipe(kind: str, token: str, expect: frozenset[str]) -> Recipe:
    return Recipe(
        kind=kind,
        path=CLAIMS,
        sign="none",
        authorization=b"Bearer " + token.encode(),
        cls="jwks_bad_documents",
        expect=expect,
    )


async def _spread(base_url: str, recipes: list[Recipe]) -> list[tuple[Recipe, str, str | None]]:
    """Send each recipe on its own connection at once, so they spread over the workers."""

    async def one(recipe: Recipe) -> tuple[Recipe, str, str | None]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
            try:
                response = await client.get(
                    recipe.path, headers=[(b"authorization", recipe.authorization or b"")]
                )
            except httpx.TransportError as exc:
                return recipe, type(exc).__name__, None
            return recipe, str(response.status_code), response.headers.get("x-bench-worker")

    return list(await asyncio.gather(*(one(recipe) for recipe in recipes)))


async def jwks_phase(
    base_url: str, jwks: JWKSServer, cooldown: float, probes: int, workers: int
) -> tuple[list[tuple[Recipe, str]], dict[str, Any]]:
    """Serve each broken JWKS document, make the workers refetch it, and check the answers.

    A token naming a kid the workers do not hold forces a refetch (once the cooldown has
    passed); it must get 401 when that kid is a broken entry, and 200 when it is the new key
    published beside a broken one. Tokens of the good key must keep verifying meanwhile.
    """
    rotated = RSAKeyPair.generate(kid="sso_oidc_key_pair_fuzz_k3")
    tokens = jwks.tokens
    results: list[tuple[Recipe, str]] = []
    answering: dict[str, int] = {}
    documents = _jwks_documents(jwks, rotated)
    try:
        for name, document, kid in documents:
            jwks.serve(name, document)
            await asyncio.sleep(cooldown + 0.3)  # past every worker's refetch cooldown
            if kid == rotated.kid:
                probe_kind, expect = f"{name}: token of k3", JWKS_ROTATED
                make_probe = functools.partial(tokens.mint, _TOKEN_SUB, key=rotated)
            else:
                probe_kind, expect = f"{name}: token naming the broken kid", JWKS_PROBE
                make_probe = functools.partial(tokens.mint, _TOKEN_SUB, kid=kid)
            answered: list[tuple[Recipe, str, str | None]] = []
            # Fresh connections land on whichever worker accepts them: send rounds of probes
            # until every worker has answered one (and so fetched this document), or give up.
            for _ in range(6):
                batch = [_jwks_recipe(probe_kind, make_probe(), expect) for _ in range(probes)]
                answered += await _spread(base_url, batch)
                if len({worker for _, _, worker in answered if worker}) >= workers:
                    break
            answering[name] = len({worker for _, _, worker in answered if worker})
            control = [
                _jwks_recipe(
                    f"{name}: token of the good key", tokens.mint(_TOKEN_SUB), JWKS_CONTROL
                )
                for _ in range(max(2, probes // 2))
            ]
            answered += await _spread(base_url, control)
            results += [(recipe, status) for recipe, status, _ in answered]
    finally:
        jwks.serve("normal")
    evidence = {
        "fetches_by_document": dict(jwks.fetches_by_document),
        "workers_answering": answering,
        "documents": [name for name, _, _ in documents],
    }
    return results, evidence


def _headers(recipe: Recipe, secrets: dict[str, str]) -> list[tuple[bytes, bytes]]:
    secret = secrets.get(recipe.path, "")
    now_ms = int(time.time() * 1000)
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"), *recipe.extra]
    signature: bytes | None = None
    signed_body = recipe.signed_body if recipe.signed_body is not None else recipe.body
    if recipe.sign in ("valid", "of_other"):
        signature = f"t={now_ms}, v1={compute_signature(now_ms, signed_body, secret)}".encode()
    elif recipe.sign == "wrong_secret":
        mac = compute_signature(now_ms, recipe.body, secret + "x")
        signature = f"t={now_ms}, v1={mac}".encode()
    elif recipe.sign == "forged":
        signature = f"t={now_ms}, v1={'ab' * 32}".encode()
    elif recipe.sign == "stale":
        stamp = now_ms + recipe.offset_s * 1000
        signature = f"t={stamp}, v1={compute_signature(stamp, recipe.body, secret)}".encode()
    elif recipe.sign == "seconds":
        stamp = now_ms // 1000
        signature = f"t={stamp}, v1={compute_signature(stamp, recipe.body, secret)}".encode()
    elif recipe.sign == "raw":
        signature = recipe.raw_header
    if signature is not None:
        headers.append((b"workos-signature", signature))
    if recipe.authorization is not None:
        headers.append((b"authorization", recipe.authorization))
    return headers


_TABLES = ("workos_users", "workos_events", "workos_user_tombstones", "bench_handler_calls")


def _rows_written(url: str, stored: dict[str, str]) -> dict[str, Any]:
    """The rows in every table the fuzz could reach, and which ones no input should have made.

    ``stored`` maps the event ids of the surrogate events answered 2xx to their user ids: those
    are the only rows allowed (the lead's decision stores such events after replacing the
    surrogates). Every other row, in any of the tables, counts as written by a refused input.
    """
    with psycopg.connect(url) as connection:
        counts = {
            table: int(
                (connection.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,))[0]  # noqa: S608
            )
            for table in _TABLES
        }
        ledger_rows = connection.execute(
            "SELECT id, status, event_type FROM workos_events"
        ).fetchall()
        ledger: dict[str, str] = {row[0]: row[1] for row in ledger_rows}
        users = {
            row[0]: (row[1] or "") + (row[2] or "")
            for row in connection.execute(
                "SELECT id, first_name, last_name FROM workos_users"
            ).fetchall()
        }
        calls = [row[0] for row in connection.execute("SELECT event_id FROM bench_handler_calls")]
    allowed_users = set(stored.values())
    by_refused_inputs = {
        "workos_events": sum(1 for event_id in ledger if event_id not in stored),
        "workos_users": sum(1 for user_id in users if user_id not in allowed_users),
        "workos_user_tombstones": counts["workos_user_tombstones"],
        "bench_handler_calls": sum(1 for event_id in calls if event_id not in stored),
    }
    surrogates = {
        event_id: {
            "ledger_status": ledger.get(event_id),
            "user_row": user_id in users,
            "replaced_with_fffd": "\ufffd" in users.get(user_id, ""),
        }
        for event_id, user_id in stored.items()
    }
    stored_right = all(
        row["ledger_status"] == "processed" and row["user_row"] and row["replaced_with_fffd"]
        for row in surrogates.values()
    )
    return {
        "rows": counts,
        "rows_by_refused_inputs": by_refused_inputs,
        "surrogate_events_answered_2xx": len(stored),
        "surrogate_events_stored_right": stored_right,
        "surrogate_ledger_rows": sum(1 for row in surrogates.values() if row["ledger_status"]),
        # What a refused input left in the ledger, to tell which class it came from.
        "ledger_rows_by_refused_inputs": [
            {"id": row[0][:80], "status": row[1], "event_type": row[2][:40]}
            for row in ledger_rows
            if row[0] not in stored
        ][:10],
    }


def _is_server_error(status: str) -> bool:
    return status.isdigit() and int(status) >= 500 and status != "503"


def _unexpected(recipe: Recipe, status: str) -> bool:
    if recipe.expect is not None:
        return status not in recipe.expect
    return status.startswith("2") or _is_server_error(status)


def _route(path: str) -> str:
    return {WEBHOOK: "webhook", ACTION: "action", ME: "current_user", CLAIMS: "claims"}[path]


def _log_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except FileNotFoundError:
        return 0


def _server_log(path: Path | None, offset: int) -> dict[str, Any]:
    """What the workers logged during the scenario: tracebacks and client disconnects."""
    if path is None or not path.exists():
        return {"read": False}
    with path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", "replace")
    lines = text.splitlines()
    # The last line of each traceback names the exception: what a reader needs first.
    exceptions: Counter[str] = Counter()
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            for after in lines[index + 1 :]:
                if after and not after.startswith((" ", "\t", "Traceback", "During", "The ")):
                    exceptions[after.split(":", 1)[0][:120]] += 1
                    break
    return {
        "read": True,
        "tracebacks": sum(exceptions.values()),
        "exceptions": dict(exceptions.most_common(15)),
        "client_disconnect_lines": sum("ClientDisconnect" in line for line in lines),
        "error_lines": sum(" ERROR " in line or line.startswith("ERROR") for line in lines),
    }


async def scenario_fuzz(
    base_url: str,
    db_url: str,
    *,
    requests: int,
    tokens: TokenFactory,
    webhook_secret: str,
    action_secret: str,
    jwks: JWKSServer | None = None,
    jwks_cooldown: float = 1.0,
    hostile_repeat: int = 2,
    server_log: Path | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Scenario 5: send the fuzzed requests; check the answers and that no row was written.

    ``jwks`` (the server the workers fetch keys from) enables the broken-JWKS phase; the app
    must run with ``jwks_cooldown`` as its refetch cooldown. ``server_log`` is read from its
    current end, to count the tracebacks the workers log meanwhile.
    """
    from .storm import reset_tables

    reset_tables(db_url)
    log_offset = _log_size(server_log)
    if jwks is not None:
        jwks.unexpected.clear()
    foreign = RSAKeyPair.generate(kid=tokens.key.kid)
    began = time.perf_counter()
    recipes = await asyncio.to_thread(generate, requests, tokens, foreign)
    hostile = hostile_recipes(tokens, hostile_repeat)
    generation_s = time.perf_counter() - began
    secrets = {WEBHOOK: webhook_secret, ACTION: action_secret}
    by_status: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    by_class: dict[str, dict[str, Counter[str]]] = {}
    expected_by_class: dict[str, dict[str, list[str]]] = {}
    unexpected_by_class: Counter[str] = Counter()
    unexpected_by_route: dict[str, Counter[str]] = {}
    accepted = 0  # 2xx answers to inputs that must be refused
    random_sent = 0
    stored: dict[str, str] = {}
    bad: list[dict[str, Any]] = []

    def count(recipe: Recipe, status: str) -> None:
        nonlocal random_sent, accepted
        by_status[status] += 1
        by_kind.setdefault(f"{recipe.path} {recipe.cls or 'random'}:{recipe.kind}", Counter())[
            status
        ] += 1
        cls = recipe.cls or "random (Hypothesis)"
        # The JWKS cases expect different answers on one route: one row per case.
        route = recipe.kind if recipe.cls == "jwks_bad_documents" else _route(recipe.path)
        by_class.setdefault(cls, {}).setdefault(route, Counter())[status] += 1
        expected_by_class.setdefault(cls, {})[route] = (
            sorted(recipe.expect) if recipe.expect is not None else ["refused, not 5xx but 503"]
        )
        if not recipe.cls and not status.startswith("not-sent"):
            random_sent += 1
        if recipe.stores is not None and status.startswith("2"):
            stored[recipe.stores[0]] = recipe.stores[1]
        if _unexpected(recipe, status):
            unexpected_by_class[cls] += 1
            unexpected_by_route.setdefault(cls, Counter())[route] += 1
            accepted += status.startswith("2")
            if len(bad) < 30:
                bad.append(
                    {"class": cls, "path": recipe.path, "kind": recipe.kind, "status": status}
                )

    clients = make_clients(base_url, 2, 32)
    queue = iter(enumerate([*hostile, *recipes]))

    async def worker() -> None:
        for index, recipe in queue:
            client = clients[index % len(clients)]
            if recipe.cls == "client_disconnect":
                try:
                    status = await _send_half_and_leave(base_url, recipe, secrets)
                except OSError as exc:
                    status = type(exc).__name__
                count(recipe, status)
                continue
            try:
                response = await client.request(
                    "GET" if recipe.path in (ME, CLAIMS) else "POST",
                    recipe.path,
                    content=None if recipe.path in (ME, CLAIMS) else recipe.body,
                    headers=_headers(recipe, secrets),
                )
            except (httpx.LocalProtocolError, ValueError) as exc:  # refused by the client library
                status = f"not-sent:{type(exc).__name__}"
            except httpx.TransportError as exc:
                status = type(exc).__name__
            else:
                status = str(response.status_code)
            count(recipe, status)

    sending = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        for client in clients:
            await client.aclose()
    sending_s = time.perf_counter() - sending
    jwks_evidence: dict[str, Any] = {}
    if jwks is not None:
        answered, jwks_evidence = await jwks_phase(
            base_url, jwks, jwks_cooldown, probes=8, workers=workers
        )
        for recipe, status in answered:
            count(recipe, status)
    jwks_s = time.perf_counter() - sending - sending_s
    database = _rows_written(db_url, stored)
    server_errors = {
        status: number for status, number in by_status.items() if _is_server_error(status)
    }
    # Transport errors would hide a crashed worker; only the oversized bodies may be cut short
    # (the server answers 413 before the client has finished sending).
    transport_errors = sum(
        number
        for kind, counter in by_kind.items()
        if not kind.endswith("oversized")
        for status, number in counter.items()
        if not status.isdigit() and not status.startswith("not-sent") and status != "disconnected"
    )
    upstream = list(jwks.unexpected) if jwks is not None else []
    log = _server_log(server_log, log_offset)
    checks = {
        "at_least_requested_count_sent": random_sent >= requests * 0.99,
        "no_5xx_except_503": not server_errors,
        "nothing_accepted": accepted == 0,
        "every_hostile_class_answered_as_expected": not any(
            number for cls, number in unexpected_by_class.items() if cls in HOSTILE_CLASSES
        ),
        "no_transport_errors": transport_errors == 0,
        "no_row_written": not any(database["rows_by_refused_inputs"].values()),
        "surrogate_events_stored_once_with_fffd": database["surrogate_events_stored_right"]
        and database["surrogate_ledger_rows"] == len(stored),
        "no_unexpected_request_to_workos": not upstream,
    }
    if jwks is not None:
        checks["every_bad_jwks_document_fetched"] = all(
            jwks_evidence["fetches_by_document"].get(name, 0) >= 1
            for name in jwks_evidence["documents"]
        )
    if log.get("read"):
        checks["no_traceback_in_server_log"] = log["tracebacks"] == 0
    return {
        "checks": checks,
        "figures": {
            "requests": sum(
                number for status, number in by_status.items() if not status.startswith("not-sent")
            ),
            "random_requests": random_sent,
            "hostile_requests": sum(by_status.values()) - random_sent,
            "generation_s": round(generation_s, 1),
            "sending_s": round(sending_s, 1),
            "jwks_phase_s": round(jwks_s, 1),
            "statuses": dict(sorted(by_status.items())),
            "documented_503": by_status.get("503", 0),
            "rows": database["rows"],
            "rows_by_refused_inputs": database["rows_by_refused_inputs"],
            "surrogate_events_stored": database["surrogate_ledger_rows"],
            "kinds": len(by_kind),
            "random_kinds": sum(1 for kind in by_kind if " random:" in kind),
            "by_class": {
                cls: {
                    route: {
                        "sent": sum(counter.values()),
                        "statuses": dict(sorted(counter.items())),
                        "expected": expected_by_class[cls][route],
                        "unexpected": unexpected_by_route.get(cls, Counter())[route],
                    }
                    for route, counter in sorted(routes.items())
                }
                for cls, routes in sorted(by_class.items())
            },
            "unexpected_by_class": dict(sorted(unexpected_by_class.items())),
            "examples_of_bad_answers": bad,
        },
        "evidence": {
            "by_kind": {kind: dict(counter) for kind, counter in sorted(by_kind.items())},
            "jwks": jwks_evidence,
            "unexpected_requests_to_workos": upstream[:20],
            "ledger_rows_by_refused_inputs": database["ledger_rows_by_refused_inputs"],
            "server_log": log,
        },
    }
