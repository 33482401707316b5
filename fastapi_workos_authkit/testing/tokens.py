"""Mint real AuthKit access tokens for tests, and serve their JWKS as WorkOS would.

```python
keys = RSAKeyPair.generate()
tokens = TokenFactory(client_id="client_123", key=keys)
jwks = FakeJWKS(tokens, api_base_url="https://api.workos.test")
authkit = AuthKit(client_id="client_123", api_base_url="https://api.workos.test",
                  http_transport=jwks.transport())
headers = {"Authorization": f"Bearer {tokens.mint(sub='user_01ABC')}"}
```

Tokens are signed with real RS256 keys, so they go through the production verifier unchanged.
The helpers for attacks (``alg: none``, HS256 with the public key as secret, a foreign key under
a known ``kid``) exist so an app can check that its own routes refuse them too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .._config import Clock


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _json_b64(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class RSAKeyPair:
    """An RSA signing key with its key id; `jwk` is the public half as WorkOS publishes it."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    kid: str

    @classmethod
    def generate(cls, kid: str | None = None, *, bits: int = 2048) -> RSAKeyPair:
        """A fresh key pair (about 50 ms: share one per test session when you can)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(private_key=key, kid=kid or f"sso_oidc_key_pair_{uuid.uuid4().hex[:20]}")

    def with_kid(self, kid: str) -> RSAKeyPair:
        """The same key under another key id."""
        return RSAKeyPair(private_key=self.private_key, kid=kid)

    @property
    def jwk(self) -> dict[str, str]:
        """The public key as a JWK: ``kty, use, alg, kid, n, e``."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        }

    @property
    def public_pem(self) -> bytes:
        """The public key in PEM form (what an HS256 key-confusion attack uses as its secret)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, signing_input: bytes) -> bytes:
        """An RS256 (PKCS#1 v1.5, SHA-256) signature."""
        return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


@cache
def default_key_pair() -> RSAKeyPair:
    """One key pair per process, so test suites do not pay for RSA key generation each time."""
    return RSAKeyPair.generate(kid="sso_oidc_key_pair_test")


def encode_rs256(claims: dict[str, Any], key: RSAKeyPair, header: dict[str, Any]) -> str:
    """Sign ``claims`` with ``key`` under exactly ``header`` (no field is added)."""
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


class TokenFactory:
    """Mints RS256 access tokens with the claims AuthKit issues, signed by a test key.

    Args:
        client_id: The WorkOS client id; the default issuer is
            ``https://<api_hostname>/user_management/<client_id>``.
        key: The signing key (a shared per-process key by default).
        api_hostname: The issuer host.
        clock: Returns Unix seconds; ``iat`` and ``exp`` are computed from it.
        lifetime: Seconds from ``iat`` to ``exp`` (WorkOS uses 5 minutes).
    """

    def __init__(
        self,
        client_id: str,
        *,
        key: RSAKeyPair | None = None,
        api_hostname: str = "api.workos.com",
        clock: Clock = time.time,
        lifetime: int = 300,
    ) -> None:
        self.client_id = client_id
        self.key = key or default_key_pair()
        self.issuer = f"https://{api_hostname}/user_management/{client_id}"
        self.clock = clock
        self.lifetime = lifetime

    def jwks(self, *extra: RSAKeyPair) -> dict[str, list[dict[str, str]]]:
        """The JWKS publishing this factory's key (and ``extra`` keys)."""
        return {"keys": [self.key.jwk, *(k.jwk for k in extra)]}

    def claims(
        self,
        sub: str = "user_01HXYZTESTUSER000000000000",
        *,
        org_id: str | None = None,
        role: str | None = None,
        roles: list[str] | None = None,
        permissions: list[str] | None = None,
        sid: str | None = None,
        expired: bool = False,
        not_yet_valid: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims `mint` signs; ``extra`` adds or overrides claims (``None`` removes one).

        ``org_id``, ``role``, ``roles`` and ``permissions`` are left out unless given, as in a
        token of a session with no organization; ``sid`` defaults to a fresh session id.
        """
        now = int(self.clock())
        iat = now
        if expired:
            iat = now - self.lifetime - 3600
        if not_yet_valid:
            iat = now + 3600
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "sid": sid or "session_01" + secrets.token_hex(12).upper(),
            "jti": "01" + secrets.token_hex(12).upper(),
            "iat": iat,
            "exp": iat + self.lifetime,
        }
        if not_yet_valid:
            claims["nbf"] = iat
        organization_claims = {
            "org_id": org_id,
            "role": role,
            "roles": roles,
            "permissions": permissions,
        }
        claims.update({name: v for name, v in organization_claims.items() if v is not None})
        claims.update(extra)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(
        self,
        sub: str = "user_01HXYZTESTUSER000000000000",
        *,
        key: RSAKeyPair | None = None,
        kid: str | None = None,
        header: dict[str, Any] | None = None,
        org_id: str | None = None,
        role: str | None = None,
        roles: list[str] | None = None,
        permissions: list[str] | None = None,
        sid: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed RS256 access token.

        Args:
            sub: The user id.
            org_id: The organization the session is scoped to (the ``org_id`` claim); left
                out by default, as for a user signed in without an organization.
            role: The caller's role slug in ``org_id`` (``role``), as WorkOS signed it.
            roles: Every role slug of the caller in ``org_id`` (``roles``).
            permissions: The permission slugs of those roles (``permissions``).
            sid: The session id (``sid``); a fresh ``session_01...`` id by default. Pass the id
                of a mirrored session to test what happens when it is revoked.
            key: Sign with this key instead (a foreign key, for attacks and rotation).
            kid: Put this ``kid`` in the header (by default the signing key's); pass ``""`` to
                leave the header without one.
            header: Extra header fields (or overrides, ``None`` removes one).
            claims: Passed to `claims`: ``expired``, ``not_yet_valid``, ``aud=...``,
                ``iss=...``, any other claim (``None`` removes one).
        """
        signer = key or self.key
        full_header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
        chosen_kid = signer.kid if kid is None else kid
        if chosen_kid:
            full_header["kid"] = chosen_kid
        full_header.update(header or {})
        full_header = {name: value for name, value in full_header.items() if value is not None}
        signed = self.claims(
            sub, org_id=org_id, role=role, roles=roles, permissions=permissions, sid=sid, **claims
        )
        return encode_rs256(signed, signer, full_header)

    def alg_none(self, sub: str = "user_01HXYZTESTUSER000000000000", **claims: Any) -> str:
        """An unsigned token with ``alg: none`` (must be refused)."""
        header = {"alg": "none", "typ": "JWT", "kid": self.key.kid}
        return f"{_json_b64(header)}.{_json_b64(self.claims(sub, **claims))}."

    def hs256_with_public_key(
        self, sub: str = "user_01HXYZTESTUSER000000000000", **claims: Any
    ) -> str:
        """An HS256 token whose HMAC secret is the public key's PEM (key confusion; refuse it)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.key.kid}
        signing_input = f"{_json_b64(header)}.{_json_b64(self.claims(sub, **claims))}"
        mac = hmac.new(self.key.public_pem, signing_input.encode("ascii"), hashlib.sha256)
        return f"{signing_input}.{b64url(mac.digest())}"


def tamper_header(token: str, **changes: Any) -> str:
    """``token`` with header fields changed (``None`` removes one), keeping the old signature."""
    header_segment, rest = token.split(".", 1)
    header = json.loads(base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4)))
    header.update(changes)
    header = {name: value for name, value in header.items() if value is not None}
    return f"{_json_b64(header)}.{rest}"


Handler = Callable[[httpx.Request], httpx.Response]


class FakeJWKS:
    """Serves a JWKS at ``{api_base_url}/sso/jwks/{client_id}``, as WorkOS does.

    Flip `down` to simulate an outage (503), change `keys` to rotate, and read `requests` to
    count fetches. Requests to other paths go to ``fallback`` (404 when there is none), so a
    test can serve users beside the keys.

    Args:
        keys: The published keys: key pairs, or a `TokenFactory` (its key).
        client_id: The client id in the path (the factory's by default).
        api_base_url: The base URL the app's `AuthKit` was given.
        fallback: Handles every other request.
    """

    def __init__(
        self,
        keys: TokenFactory | Iterable[RSAKeyPair],
        *,
        client_id: str | None = None,
        api_base_url: str = "https://api.workos.com",
        fallback: Handler | None = None,
    ) -> None:
        if isinstance(keys, TokenFactory):
            client_id = client_id or keys.client_id
            keys = [keys.key]
        if not client_id:
            raise ValueError("FakeJWKS needs the client id (or a TokenFactory)")
        self.keys: list[RSAKeyPair] = list(keys)
        self.url = httpx.URL(f"{api_base_url.rstrip('/')}/sso/jwks/{client_id}")
        self.fallback = fallback
        self.down = False
        self.requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (the `httpx.MockTransport` handler)."""
        if request.url.host == self.url.host and request.url.path == self.url.path:
            self.requests += 1
            if self.down:
                return httpx.Response(503, json={"message": "Service Unavailable"})
            return httpx.Response(200, json={"keys": [key.jwk for key in self.keys]})
        if self.fallback is not None:
            return self.fallback(request)
        return httpx.Response(404, json={"message": "Not Found"})

    def transport(self) -> httpx.MockTransport:
        """An httpx transport to pass as ``AuthKit(http_transport=...)``."""
        return httpx.MockTransport(self.handle)
