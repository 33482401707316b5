"""AuthKit access tokens (RS256 JWTs): the JWKS key source, verification and the token cache.

Nothing here knows about HTTP requests; `dependencies` maps the exceptions to RFC 6750 answers.

* Keys come from the providers' JWKS URLs through an async httpx client. They are cached for a
  TTL; once it passes, a known ``kid`` is still served from the cache at once while one refresh
  runs in the background (stale-while-revalidate), so no request waits on WorkOS for a key it
  already has. An unknown ``kid`` triggers one refetch behind a lock, throttled by a cooldown so
  a flood of random ``kid`` values costs at most one fetch per cooldown; cached keys keep being
  served when a refetch fails.
* Signatures are checked by python-jose with its ``cryptography`` backend. The algorithm is
  pinned to RS256 here and never taken from the token.
* Claims are checked against an injectable clock with a bounded leeway; ``exp``, ``iat`` and
  ``nbf`` must be finite numbers (JSON parsers accept ``NaN`` and ``Infinity``, and an infinite
  ``exp`` would never expire).
* A verified token is remembered, keyed by its exact string, until its ``exp``: the hot path
  of an authenticated request is one dict lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from jose import jwk, jws
from jose.backends.base import Key
from jose.exceptions import JOSEError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import Clock
from .errors import AuthKitError, ConfigurationError
from .providers import AuthProvider

logger = logging.getLogger("fastapi_workos_authkit")

ALGORITHM = "RS256"
"""The only signing algorithm accepted: WorkOS signs access tokens with RS256."""

MAX_LEEWAY = 300.0
"""The largest accepted clock leeway, in seconds; more would make ``exp`` meaningless."""

COLD_RETRY_SECONDS = 5.0
"""While no key was ever fetched, refetches are at most this far apart (or the cooldown)."""

_MAX_TOKEN_LENGTH = 16 * 1024  # WorkOS tokens are ~1 KiB; refuse to parse megabytes of junk


class InvalidTokenError(AuthKitError):
    """The access token is malformed, badly signed, expired, or not issued for this app.

    The message is safe to send to the client as an RFC 6750 ``error_description``: it says what
    was wrong, never what the token contained.
    """


class KeysUnavailableError(AuthKitError):
    """No signing key could be obtained because the JWKS endpoint is unreachable (answer 503)."""


class Actor(BaseModel):
    """The ``act`` claim: the admin impersonating the user, if anyone."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sub: str


class AccessTokenClaims(BaseModel):
    """The verified claims of an AuthKit access token. Unknown claims are kept (``extra``).

    Attributes:
        sub: The WorkOS user id (``user_...``).
        sid: The session id (``session_...``).
        org_id: The organization the session is scoped to, if any.
        role: The user's role slug in that organization.
        roles: Every role slug, when several roles are enabled.
        permissions: The permission slugs granted by the roles.
        entitlements: Entitlements of the organization.
        feature_flags: Feature flags enabled for the user.
        act: Who is impersonating the user, if anyone.
        exp: Expiry, in Unix seconds.
        iat: Issued at, in Unix seconds.
        jti: The token's unique id.
        iss: The issuer (one of the configured providers).
    """

    # allow_inf_nan=False: Python's json module reads NaN and Infinity, and `now > NaN` is
    # always False, so either would make a token that never expires.
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    sub: str = Field(min_length=1)
    sid: str | None = None
    org_id: str | None = None
    role: str | None = None
    roles: list[str] = Field(default_factory=list)
    permissions: list[str] = Field(default_factory=list)
    entitlements: list[str] = Field(default_factory=list)
    feature_flags: list[str] = Field(default_factory=list)
    act: Actor | None = None
    exp: float
    iat: float | None = None
    nbf: float | None = None
    jti: str | None = None
    iss: str
    aud: str | list[str] | None = None


@dataclass(frozen=True)
class TokenOptions:
    """Tuning of the verifier. Every value is an `AuthKit` option of the same name.

    Attributes:
        token_leeway: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds (0-300).
        jwks_cache_ttl: How long a fetched JWKS is trusted before a refresh, in seconds.
        jwks_refetch_cooldown: The least time between two JWKS fetches, in seconds: a flood of
            unknown ``kid`` values costs at most one fetch per cooldown.
        token_cache_size: How many verified tokens are remembered (least recently used go first);
            0 disables the cache.
        jwks_timeout: Timeout of one JWKS request, in seconds.
    """

    token_leeway: float = 10.0
    jwks_cache_ttl: float = 600.0
    jwks_refetch_cooldown: float = 30.0
    token_cache_size: int = 10_000
    jwks_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.token_leeway <= MAX_LEEWAY:
            raise ConfigurationError(
                f"token_leeway must be between 0 and {MAX_LEEWAY:.0f} seconds "
                f"(got {self.token_leeway})."
            )
        if self.jwks_cache_ttl <= 0 or self.jwks_refetch_cooldown < 0 or self.jwks_timeout <= 0:
            raise ConfigurationError(
                "jwks_cache_ttl and jwks_timeout must be positive and jwks_refetch_cooldown "
                "must not be negative (seconds)."
            )
        if self.token_cache_size < 0:
            raise ConfigurationError("token_cache_size must be 0 or more.")


class JWKSKeySource:
    """The signing keys of one JWKS URL: cached, refreshed, throttled, served stale on outage.

    Args:
        url: The JWKS URL.
        transport: The httpx transport (``None`` for the network).
        clock: Returns Unix seconds; drives the TTL and the cooldown.
        options: TTL, cooldown and timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None,
        clock: Clock,
        options: TokenOptions,
    ) -> None:
        self.url = url
        self._transport = transport
        self._clock = clock
        self._options = options
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._lock: asyncio.Lock | None = None
        # The running stale-while-revalidate refresh; kept so it is not garbage-collected.
        self._background: asyncio.Task[bool] | None = None
        self._http: httpx.AsyncClient | None = None
        self.fetches = 0
        """How many times the JWKS was requested (for tests and metrics)."""

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently cached."""
        return frozenset(self._keys)

    async def get_key(self, kid: str) -> Key:
        """The key for ``kid``, fetching or refreshing the JWKS when needed.

        A cached key is returned at once, even past the TTL: a stale cache starts one refresh in
        the background (see `refresh_in_background`). Only an unknown ``kid``, or a source that
        never fetched anything, waits for a fetch.

        Raises:
            InvalidTokenError: no key has this ``kid``, even after a (throttled) refetch.
            KeysUnavailableError: no key was ever fetched and the JWKS cannot be reached.
        """
        key = self._keys.get(kid)
        if key is not None:
            if self._fetched_at is None or (
                self._clock() - self._fetched_at >= self._options.jwks_cache_ttl
            ):
                self.refresh_in_background()
            return key
        await self.refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fetched_at is None:
            raise KeysUnavailableError(
                "The token signing keys could not be fetched from WorkOS; try again shortly"
            )
        raise InvalidTokenError("The token is signed with an unknown key (kid)")

    def refresh_in_background(self) -> None:
        """Start a `refresh` on the running loop unless one is already under way.

        The refresh keeps the same cooldown, so a stale cache under load still costs at most one
        fetch per cooldown; while it runs (or fails), the cached keys keep being served.
        """
        loop = asyncio.get_running_loop()
        task = self._background
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        attempted = self._attempted_at
        if (
            attempted is not None
            and self._clock() - attempted < self._options.jwks_refetch_cooldown
        ):
            return  # throttled: refresh() would return at once, so spare the task
        self._background = loop.create_task(self.refresh())

    @property
    def refreshing(self) -> bool:
        """Whether a background refresh is under way."""
        return self._background is not None and not self._background.done()

    async def wait_for_refresh(self) -> None:
        """Wait until the background refresh, if any, has finished (tests, shutdown)."""
        task = self._background
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS unless a fetch was attempted within the cooldown; True if keys changed.

        One fetch at a time: concurrent callers wait for the running fetch and reuse its result.
        A failed fetch keeps the cached keys and is logged at WARNING.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        attempted_before = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted_before:
                return False  # another caller fetched while we waited: use its result
            now = self._clock()
            cooldown = self._options.jwks_refetch_cooldown
            if not self._keys:
                # Nothing cached yet: every request is failing, so retry sooner (still throttled).
                cooldown = min(cooldown, COLD_RETRY_SECONDS)
            if not force and self._attempted_at is not None and now - self._attempted_at < cooldown:
                return False
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError, JOSEError) as exc:
                logger.warning(
                    "could not fetch the JWKS from %s (%s); %s",
                    self.url,
                    type(exc).__name__,
                    f"keeping {len(self._keys)} cached key(s)" if self._keys else "no key cached",
                )
                return False
            changed = keys.keys() != self._keys.keys()
            self._keys = keys
            self._fetched_at = self._clock()
            return changed

    async def _fetch(self) -> dict[str, Key]:
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._options.jwks_timeout,
                headers={"User-Agent": "fastapi-workos-authkit"},
            )
        self.fetches += 1
        response = await self._http.get(self.url)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise ValueError("The JWKS response has no 'keys' list")
        keys: dict[str, Key] = {}
        for entry in body["keys"]:
            if not isinstance(entry, dict):
                continue
            kid = entry.get("kid")
            # Only RSA signing keys can verify an RS256 token; anything else is skipped.
            if (
                not isinstance(kid, str)
                or entry.get("kty") != "RSA"
                or entry.get("use", "sig") != "sig"
                or entry.get("alg", ALGORITHM) != ALGORITHM
            ):
                continue
            keys[kid] = jwk.construct(entry, ALGORITHM)
        if not keys:
            raise ValueError("The JWKS holds no RS256 signing key")
        return keys

    async def aclose(self) -> None:
        """Stop a background refresh and close the HTTP connection pool."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class VerifiedTokenCache:
    """Verified claims by exact token string, least recently used evicted, expiring at ``exp``."""

    def __init__(self, size: int, clock: Clock, leeway: float) -> None:
        self._size = size
        self._clock = clock
        self._leeway = leeway
        self._entries: OrderedDict[str, AccessTokenClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> AccessTokenClaims | None:
        """The claims of ``token`` if it was verified and has not expired since."""
        claims = self._entries.get(token)
        if claims is None:
            return None
        if self._clock() > claims.exp + self._leeway:
            self._entries.pop(token, None)
            return None
        self._entries.move_to_end(token)
        return claims

    def put(self, token: str, claims: AccessTokenClaims) -> None:
        """Remember ``claims`` for ``token``, evicting the least recently used entry if full."""
        if self._size == 0:
            return
        self._entries[token] = claims
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every verified token."""
        self._entries.clear()


def _issuer_forms(issuer: str) -> tuple[str, str]:
    bare = issuer.rstrip("/")
    return bare, bare + "/"


class TokenVerifier:
    """Verifies AuthKit access tokens against a list of providers.

    The issuer allow-list, the JWKS URLs and the audience all come from ``providers``; each
    issuer is accepted with and without a trailing slash. A token usually carries no ``aud``;
    when it does, it must name one of the providers' ``applicationID`` values (the client id),
    and a token with an ``aud`` is refused if no provider declares one.

    Args:
        providers: The trusted providers (see `auth_config_providers`).
        transport: The httpx transport for JWKS requests.
        clock: Returns Unix seconds.
        options: Leeway, cache and JWKS tuning.
    """

    def __init__(
        self,
        providers: Iterable[AuthProvider],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock,
        options: TokenOptions | None = None,
    ) -> None:
        self.options = options or TokenOptions()
        self.providers = tuple(providers)
        if not self.providers:
            raise ConfigurationError("At least one auth-config provider is needed to verify tokens")
        self.audiences = frozenset(
            p.application_id for p in self.providers if p.application_id is not None
        )
        """The accepted ``aud`` values: every provider's ``applicationID``."""
        self._clock = clock
        sources: dict[str, JWKSKeySource] = {}
        self._source_for_issuer: dict[str, JWKSKeySource] = {}
        for provider in self.providers:
            source = sources.get(provider.jwks)
            if source is None:
                source = JWKSKeySource(
                    provider.jwks, transport=transport, clock=clock, options=self.options
                )
                sources[provider.jwks] = source
            for form in _issuer_forms(provider.issuer):
                self._source_for_issuer.setdefault(form, source)
        self.key_sources = tuple(sources.values())
        self.cache = VerifiedTokenCache(
            self.options.token_cache_size, clock, self.options.token_leeway
        )

    @property
    def issuers(self) -> frozenset[str]:
        """Every accepted ``iss`` value."""
        return frozenset(self._source_for_issuer)

    async def preload(self) -> None:
        """Fetch every JWKS now (start-up); failures are logged, not raised."""
        for source in self.key_sources:
            await source.refresh(force=True)

    async def verify(self, token: str) -> AccessTokenClaims:
        """Verify ``token`` and return its claims; cached tokens cost one dict lookup.

        Raises:
            InvalidTokenError: the token must be refused (answer 401 ``invalid_token``).
            KeysUnavailableError: the keys cannot be fetched (answer 503).
        """
        claims = self.cache.get(token)
        if claims is not None:
            return claims
        header, unverified = _parse(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError(f"The token must be signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("The token header has no key id (kid)")
        issuer = unverified.get("iss")
        source = self._source_for_issuer.get(issuer) if isinstance(issuer, str) else None
        if source is None:
            raise InvalidTokenError("The token was not issued by a trusted issuer")
        key = await source.get_key(kid)
        try:
            # Pinned: only RS256 is allowed, whatever the header says, with the key chosen by kid.
            payload = jws.verify(token, key, algorithms=[ALGORITHM])
        except JOSEError:
            raise InvalidTokenError("The token signature is invalid") from None
        claims = self._check_claims(_json_object(payload, "payload"))
        self.cache.put(token, claims)
        return claims

    def _check_claims(self, raw: dict[str, Any]) -> AccessTokenClaims:
        for required in ("sub", "exp", "iss"):
            if required not in raw:
                raise InvalidTokenError(f"The token has no '{required}' claim")
        try:
            claims = AccessTokenClaims.model_validate(raw)
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            raise InvalidTokenError(f"The token has invalid claims: {', '.join(fields)}") from None
        if claims.iss not in self._source_for_issuer:
            raise InvalidTokenError("The token was not issued by a trusted issuer")
        if claims.aud is not None:
            audiences = [claims.aud] if isinstance(claims.aud, str) else claims.aud
            if self.audiences.isdisjoint(audiences):
                raise InvalidTokenError("The token was issued for another application (aud)")
        now = self._clock()
        leeway = self.options.token_leeway
        if now > claims.exp + leeway:
            raise InvalidTokenError("The token has expired")
        for name in ("nbf", "iat"):
            moment = getattr(claims, name)
            if moment is not None and moment > now + leeway:
                raise InvalidTokenError("The token is not yet valid")
        return claims

    async def aclose(self) -> None:
        """Close the JWKS connection pools."""
        for source in self.key_sources:
            await source.aclose()


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidTokenError(f"The token {part} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidTokenError(f"The token {part} is not a JSON object")
    return value


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode the header and the (still unverified) payload of a compact JWS."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidTokenError("The token is too long")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidTokenError("The token is not a signed JWT (header.payload.signature)")
    try:
        header_bytes, payload_bytes = _b64decode(parts[0]), _b64decode(parts[1])
    except (binascii.Error, ValueError):
        raise InvalidTokenError("The token is not valid base64url") from None
    return _json_object(header_bytes, "header"), _json_object(payload_bytes, "payload")
