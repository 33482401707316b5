"""Scenario 5: fuzzed requests against the webhook, Action and authenticated endpoints.

Hypothesis generates *recipes* (what to send and how to sign it); each recipe is signed when it
is sent, so a request meant to carry a valid signature is not made stale by generation time.
Nothing generated is a validly signed, well-formed event: every request must be refused, with
no 5xx other than the documented 503, and nothing may be written to any table.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastapi_workos_authkit.signatures import compute_signature
from fastapi_workos_authkit.testing import encode, factories
from fastapi_workos_authkit.testing.actions import (
    authentication_action,
    user_registration_action,
)
from fastapi_workos_authkit.testing.tokens import RSAKeyPair, TokenFactory, tamper_header

from .load import make_clients

WEBHOOK = "/workos/webhook"
ACTION = "/workos/action"
ME = "/bench/me"
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
        value = draw(_JSON)
        recipe.body = json.dumps(value).encode()
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


def _rows_written(url: str) -> dict[str, int]:
    tables = [
        "workos_users",
        "workos_events",
        "workos_user_tombstones",
        "bench_handler_calls",
    ]
    counts: dict[str, int] = {}
    with psycopg.connect(url) as connection:
        for table in tables:
            row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
            counts[table] = int(row[0]) if row else 0
    return counts


async def scenario_fuzz(
    base_url: str,
    db_url: str,
    *,
    requests: int,
    tokens: TokenFactory,
    webhook_secret: str,
    action_secret: str,
) -> dict[str, Any]:
    """Scenario 5: send the fuzzed requests; check the answers and that no row was written."""
    from .storm import reset_tables

    reset_tables(db_url)
    foreign = RSAKeyPair.generate(kid=tokens.key.kid)
    began = time.perf_counter()
    recipes = await asyncio.to_thread(generate, requests, tokens, foreign)
    generation_s = time.perf_counter() - began
    secrets = {WEBHOOK: webhook_secret, ACTION: action_secret}
    by_status: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    bad: list[dict[str, Any]] = []
    clients = make_clients(base_url, 2, 32)
    queue = iter(enumerate(recipes))

    async def worker() -> None:
        for index, recipe in queue:
            client = clients[index % len(clients)]
            try:
                response = await client.request(
                    "GET" if recipe.path == ME else "POST",
                    recipe.path,
                    content=None if recipe.path == ME else recipe.body,
                    headers=_headers(recipe, secrets),
                )
            except (httpx.LocalProtocolError, ValueError) as exc:  # refused by the client library
                status = f"not-sent:{type(exc).__name__}"
            except httpx.TransportError as exc:
                status = type(exc).__name__
            else:
                status = str(response.status_code)
            by_status[status] += 1
            by_kind.setdefault(f"{recipe.path} {recipe.kind}", Counter())[status] += 1
            unexpected = status.startswith("2") or (
                status.isdigit() and int(status) >= 500 and status != "503"
            )
            if unexpected and len(bad) < 20:
                bad.append({"path": recipe.path, "kind": recipe.kind, "status": status})

    sending = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        for client in clients:
            await client.aclose()
    sending_s = time.perf_counter() - sending
    rows = _rows_written(db_url)
    server_errors = {
        status: count
        for status, count in by_status.items()
        if status.isdigit() and int(status) >= 500 and status != "503"
    }
    # Transport errors would hide a crashed worker; only the oversized bodies may be cut short
    # (the server answers 413 before the client has finished sending).
    transport_errors = sum(
        count
        for kind, counter in by_kind.items()
        if not kind.endswith("oversized")
        for status, count in counter.items()
        if not status.isdigit() and not status.startswith("not-sent")
    )
    accepted = sum(count for status, count in by_status.items() if status.startswith("2"))
    sent = sum(count for status, count in by_status.items() if not status.startswith("not-sent"))
    return {
        "checks": {
            "at_least_requested_count_sent": sent >= requests * 0.99,
            "no_5xx_except_503": not server_errors,
            "nothing_accepted": accepted == 0,
            "no_transport_errors": transport_errors == 0,
            "no_row_written": not any(rows.values()),
        },
        "figures": {
            "requests": sent,
            "generation_s": round(generation_s, 1),
            "sending_s": round(sending_s, 1),
            "statuses": dict(sorted(by_status.items())),
            "documented_503": by_status.get("503", 0),
            "rows": rows,
            "kinds": len(by_kind),
            "examples_of_bad_answers": bad,
        },
        "evidence": {"by_kind": {kind: dict(counter) for kind, counter in sorted(by_kind.items())}},
    }
