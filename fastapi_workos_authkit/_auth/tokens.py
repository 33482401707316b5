"""AuthKit access tokens (RS256 JWTs): verification and the token cache; keys come from `jwks`.

Nothing here knows about HTTP requests; `dependencies` maps the exceptions to RFC 6750 answers.

* Keys come from `jwks.JWKSKeySource`, one per provider's JWKS URL.
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

import base64
import binascii
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._config import MAX_LEEWAY as MAX_LEEWAY  # re-exported: declared with the option
from .._config import Clock, TokenSettings, default_token_settings
from .._exceptions import ConfigurationError
from .._exceptions import InvalidTokenError as InvalidTokenError
from .._exceptions import KeysUnavailableError as KeysUnavailableError
from .._lifespan_tasks import LifespanTasks
from .jwks import ALGORITHM, JWKSKeySource
from .providers import AuthProvider

logger = logging.getLogger("fastapi_workos_authkit")

_MAX_TOKEN_LENGTH = 16 * 1024  # WorkOS tokens are ~1 KiB; refuse to parse megabytes of junk


NumericDate = Annotated[float, Field(strict=True)]
"""A JWT NumericDate: a JSON number (an int or a float), never a string or a boolean.

Lax validation would read ``"9999999999"`` or ``true`` as a time; RFC 7519 §2 says a number.
"""


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
        tasks: The app lifespan's task group, where stale keys are refreshed in the background
            (see `JWKSKeySource.revalidate`).
    """

    def __init__(
        self,
        providers: Iterable[AuthProvider],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock,
        options: TokenSettings | None = None,
        tasks: LifespanTasks | None = None,
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
                    provider.jwks,
                    transport=transport,
                    clock=clock,
                    options=self.options,
                    tasks=tasks,
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
        """Stop the JWKS refreshes under way and close the JWKS connection pools."""
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
