"""AuthKit access tokens (RS256 JWTs): the JWKS key source, verification and the token cache.

Nothing here knows about HTTP requests; `dependencies` maps the exceptions to RFC 6750 answers.

* Keys come from the providers' JWKS URLs through an async httpx client. They are cached for a
  TTL; once it passes, a known ``kid`` is still served from the cache at once while one refresh
  runs in the background (stale-while-revalidate), so no request waits on WorkOS for a key it
  already has. An unknown ``kid`` triggers one refetch behind a lock, throttled by a cooldown so
  a flood of random ``kid`` values costs at most one fetch per cooldown; cached keys keep being
  served when a refetch fails.
  A JWKS document is read entry by entry: an entry that cannot be a key is skipped and logged,
  the others are kept; a document that cannot be read at all, or holds no usable key, is a
  failed refresh. A failed refresh, whatever WorkOS answered, is logged and never raised.
* A token is parsed strictly before anything else: three segments of canonical, unpadded
  base64url (python-jose is lenient, and a lenient decoder makes many strings of one token),
  UTF-8 JSON objects of bounded depth, no ``crit`` header (RFC 7515 §4.1.11: we implement no
  extension, so a token that demands one is refused).
* Signatures are checked by python-jose's ``cryptography`` backend key, over the exact bytes
  parsed above. The algorithm is pinned to RS256 here and never taken from the token.
* Claims are checked against an injectable clock with a bounded leeway; ``exp``, ``iat`` and
  ``nbf`` must be finite JSON numbers (not strings, not booleans: JSON parsers accept ``NaN``
  and ``Infinity``, and an infinite ``exp`` would never expire).
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
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._config import MAX_LEEWAY as MAX_LEEWAY  # re-exported: declared with the option
from .._config import Clock, TokenSettings, default_token_settings
from .._exceptions import ConfigurationError
from .._exceptions import InvalidTokenError as InvalidTokenError
from .._exceptions import KeysUnavailableError as KeysUnavailableError
from .providers import AuthProvider

logger = logging.getLogger("fastapi_workos_authkit")

ALGORITHM = "RS256"
"""The only signing algorithm accepted: WorkOS signs access tokens with RS256."""

COLD_RETRY_SECONDS = 5.0
"""While no key was ever fetched, refetches are at most this far apart (or the cooldown)."""

_MAX_TOKEN_LENGTH = 16 * 1024  # WorkOS tokens are ~1 KiB; refuse to parse megabytes of junk


NumericDate = Annotated[float, Field(strict=True)]
"""A JWT NumericDate: a JSON number (an int or a float), never a string or a boolean.

Lax validation would read ``"9999999999"`` or ``true`` as a time; RFC 7519 §2 says a number.
"""


class _JWKSDocumentError(Exception):
    """A JWKS response could not be used: not JSON, no ``keys`` list, or no usable key.

    Raised inside the key source only; a refresh that meets it is logged and counted as failed.
    """


class _SkippedEntry(Exception):
    """One JWKS entry that yields no RS256 key; ``broken`` when it claims to be one."""

    def __init__(self, kid: str | None, reason: str, *, broken: bool) -> None:
        super().__init__(reason)
        self.kid = kid
        self.reason = reason
        self.broken = broken


# A JWK's n and e (RFC 7518 §6.3.1): base64url. The document comes from WorkOS, not a client, so
# padding is tolerated here; other characters would be silently dropped by python-jose's decoder.
_JWK_NUMBER = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_MAX_LOGGED_KID = 64  # a kid is logged (repr) to say which entry; bound what an entry can print


def _read_entry(entry: object) -> tuple[str, Key]:
    """The ``(kid, key)`` of one JWKS entry, or `_SkippedEntry` saying why it has none.

    Only the public members ``n`` and ``e`` are handed to python-jose, as base64url strings
    checked here: given anything else it raises ``TypeError`` or ``ValueError`` from deep
    inside, and given a private member (``d``) it would build a private key.
    """
    if not isinstance(entry, dict):
        raise _SkippedEntry(None, "the entry is not a JSON object", broken=True)
    raw_kid = entry.get("kid")
    kid = raw_kid[:_MAX_LOGGED_KID] if isinstance(raw_kid, str) else None
    if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
        raise _SkippedEntry(kid, "not an RSA signing key", broken=False)
    if entry.get("alg", ALGORITHM) != ALGORITHM:
        raise _SkippedEntry(kid, f"not an {ALGORITHM} key", broken=False)
    if not isinstance(raw_kid, str) or not raw_kid:
        raise _SkippedEntry(kid, "the entry has no 'kid'", broken=True)
    for member in ("n", "e"):
        value = entry.get(member)
        if not isinstance(value, str) or not _JWK_NUMBER.fullmatch(value):
            raise _SkippedEntry(
                kid, f"'{member}' is missing or not a base64url string", broken=True
            )
    public = {"kty": "RSA", "kid": raw_kid, "n": entry["n"], "e": entry["e"]}
    try:
        key = jwk.construct(public, ALGORITHM)
    except (JOSEError, ValueError, TypeError) as exc:
        # The numbers decode but make no RSA key (a modulus of a few bits, e < 3...).
        raise _SkippedEntry(kid, f"not a valid RSA public key ({exc})", broken=True) from None
    return raw_kid, key


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
    exp: NumericDate
    iat: NumericDate | None = None
    nbf: NumericDate | None = None
    jti: str | None = None
    iss: str
    aud: str | list[str] | None = None


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
        options: TokenSettings,
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
        self._background = loop.create_task(self._refresh_or_warn())

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
            except (httpx.HTTPError, _JWKSDocumentError) as exc:
                reason = str(exc) if isinstance(exc, _JWKSDocumentError) else type(exc).__name__
                logger.warning(
                    "could not fetch the JWKS from %s (%s); %s",
                    self.url,
                    reason,
                    f"keeping {len(self._keys)} cached key(s)" if self._keys else "no key cached",
                )
                return False
            changed = keys.keys() != self._keys.keys()
            self._keys = keys
            self._fetched_at = self._clock()
            return changed

    async def _refresh_or_warn(self, *, force: bool = False) -> bool:
        """`refresh` for callers nobody awaits for an answer: start-up and the background task.

        `refresh` already turns every failure of WorkOS or of its document into a warning. This
        also catches what nobody foresaw, so that start-up still completes and a background task
        never ends with an exception that nobody retrieves; the traceback is logged.
        """
        try:
            return await self.refresh(force=force)
        except Exception:
            logger.warning(
                "the JWKS refresh from %s failed unexpectedly; %s",
                self.url,
                f"keeping {len(self._keys)} cached key(s)" if self._keys else "no key cached",
                exc_info=True,
            )
            return False

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
        return self._read_document(response.content)

    def _read_document(self, content: bytes) -> dict[str, Key]:
        """The usable RS256 keys of a JWKS document, entry by entry.

        Raises:
            _JWKSDocumentError: the document is not a JWKS, or holds no usable key.
        """
        try:
            body = json.loads(content.decode("utf-8"))
        except (ValueError, RecursionError):
            # ValueError: not UTF-8, or not JSON. RecursionError: nested too deep to parse.
            raise _JWKSDocumentError("the response is not a JSON document") from None
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise _JWKSDocumentError("the response has no 'keys' list")
        keys: dict[str, Key] = {}
        for position, entry in enumerate(body["keys"]):
            try:
                kid, key = _read_entry(entry)
            except _SkippedEntry as skipped:
                # A key of another kind (EC, encryption) is normal; a broken RSA entry is not.
                # Either way the other entries are kept, so one bad entry never blocks rotation.
                logger.log(
                    logging.WARNING if skipped.broken else logging.DEBUG,
                    "skipping JWKS entry %d (kid %r) from %s: %s",
                    position,
                    skipped.kid,
                    self.url,
                    skipped.reason,
                )
                continue
            keys[kid] = key
        if not keys:
            raise _JWKSDocumentError("the document holds no usable RS256 signing key")
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
        options: Leeway, cache and JWKS tuning, cut from `AuthKitSettings` (its defaults when
            ``None``).
    """

    def __init__(
        self,
        providers: Iterable[AuthProvider],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock,
        options: TokenSettings | None = None,
    ) -> None:
        self.options = options or default_token_settings()
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
        """Fetch every JWKS now (start-up); failures are logged at WARNING, never raised."""
        for source in self.key_sources:
            await source._refresh_or_warn(force=True)

    async def verify(self, token: str) -> AccessTokenClaims:
        """Verify ``token`` and return its claims; cached tokens cost one dict lookup.

        Raises:
            InvalidTokenError: the token must be refused (answer 401 ``invalid_token``).
            KeysUnavailableError: the keys cannot be fetched (answer 503).
        """
        claims = self.cache.get(token)
        if claims is not None:
            return claims
        parsed = _parse(token)
        header = parsed.header
        if header.get("alg") != ALGORITHM:
            raise InvalidTokenError(f"The token must be signed with {ALGORITHM}")
        if "crit" in header:
            # RFC 7515 §4.1.11: a recipient that does not understand a listed extension must
            # refuse the token. We implement none, so any crit (even a malformed one) is refused.
            raise InvalidTokenError(
                "The token header lists critical extensions (crit), and none is supported"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("The token header has no key id (kid)")
        issuer = parsed.payload.get("iss")
        source = self._source_for_issuer.get(issuer) if isinstance(issuer, str) else None
        if source is None:
            raise InvalidTokenError("The token was not issued by a trusted issuer")
        key = await source.get_key(kid)
        # Pinned: the key was built for RS256, whatever the header says, and chosen by kid. It
        # checks the exact bytes parsed above, so what is verified is what is read.
        if not key.verify(parsed.signing_input, parsed.signature):
            raise InvalidTokenError("The token signature is invalid")
        claims = self._check_claims(parsed.payload)
        # Only a canonical token string reaches this line (see _parse): one token, one entry.
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


# Three non-empty segments of the base64url alphabet (RFC 4648 §5), without padding. ASCII only:
# str.isalnum() and \w would let other scripts' letters and digits through.
_COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def _b64decode(segment: str) -> bytes:
    """Decode canonical, unpadded base64url (RFC 7515 §2); anything else raises ValueError.

    The caller has checked the alphabet. A length of 4n+1 cannot be base64 at all, and the
    spare low bits of the last character must be zero: re-encoding the bytes must give the
    segment back, or two different strings would decode to one value.
    """
    if len(segment) % 4 == 1:
        raise ValueError("truncated base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("non-canonical base64url")
    return data


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        # RFC 7515 and 7519 say UTF-8; json.loads(bytes) would also guess UTF-16 and UTF-32.
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        # ValueError covers UnicodeDecodeError and bad JSON; RecursionError is deeply nested
        # JSON, which the stdlib parser cannot read (a token is at most 16 KiB, enough for
        # thousands of levels).
        raise InvalidTokenError(f"The token {part} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidTokenError(f"The token {part} is not a JSON object")
    return value


@dataclass(frozen=True)
class _ParsedToken:
    """A compact JWS, decoded but not yet verified."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: str) -> _ParsedToken:
    """Decode a compact JWS strictly: the signature and the claims are not checked here.

    Every refusal happens before any key lookup and before the verified-token cache, so a
    string that is not exactly one canonical token costs neither a JWKS fetch nor a cache entry.
    """
    if len(token) > _MAX_TOKEN_LENGTH:
        raise InvalidTokenError("The token is too long")
    match = _COMPACT_JWS.fullmatch(token)
    if match is None:
        if token.count(".") == 2 and all(token.split(".")):
            raise InvalidTokenError(
                "The token is not valid base64url (only A-Z a-z 0-9 - _, without padding)"
            )
        raise InvalidTokenError("The token is not a signed JWT (header.payload.signature)")
    header_segment, payload_segment, signature_segment = match.groups()
    try:
        header_bytes = _b64decode(header_segment)
        payload_bytes = _b64decode(payload_segment)
        signature = _b64decode(signature_segment)
    except (binascii.Error, ValueError):
        raise InvalidTokenError("The token is not canonical base64url") from None
    return _ParsedToken(
        header=_json_object(header_bytes, "header"),
        payload=_json_object(payload_bytes, "payload"),
        signing_input=f"{header_segment}.{payload_segment}".encode("ascii"),
        signature=signature,
    )
