"""The JWKS key source: the signing keys of one JWKS URL, cached, refreshed and throttled.

Keys come from the providers' JWKS URLs through an async httpx client. They are cached for a
TTL; once it passes, a known ``kid`` is still served from the cache at once while one refresh
runs in the background (stale-while-revalidate), so no request waits on WorkOS for a key it
already has. The background is the app lifespan's task group (`LifespanTasks`); without a
lifespan on the loop, the request that finds the cache stale refreshes it inline, and the
others keep being served from the cache meanwhile. An unknown ``kid`` triggers one refetch
behind a lock, throttled by a cooldown so a flood of random ``kid`` values costs at most one
fetch per cooldown; cached keys keep being served when a refetch fails. A JWKS document is read
entry by entry: an entry that cannot be a key is skipped and logged, the others are kept; a
document that cannot be read at all, or holds no usable key, is a failed refresh. A failed
refresh, whatever WorkOS answered, is logged and never raised. Token verification itself is in
`tokens`.

Everything here is anyio. The refresh lock and the HTTP client belong to one event loop each
(a lock's waiters and a connection live on the loop that made them), so both are made again when
a source is used from another loop: a test client without a lifespan runs each request on a
fresh loop, a test suite runs many loops in one process, and two threads may each run one.
"""

from __future__ import annotations

import json
import logging
import re

import anyio
import anyio.lowlevel
import httpx
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

from .._config import Clock, TokenSettings
from .._exceptions import InvalidTokenError, KeysUnavailableError
from .._lifespan_tasks import LifespanTasks
from .._per_loop import PerLoop

logger = logging.getLogger("fastapi_workos_authkit")

ALGORITHM = "RS256"
"""The only signing algorithm accepted: WorkOS signs access tokens with RS256."""

COLD_RETRY_SECONDS = 5.0
"""While no key was ever fetched, refetches are at most this far apart (or the cooldown)."""


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


class _Revalidation:
    """One stale-while-revalidate refresh: the loop it runs on, its cancel scope and its end."""

    __slots__ = ("done", "scope", "token")

    def __init__(self, token: anyio.lowlevel.EventLoopToken) -> None:
        self.token = token
        self.done = anyio.Event()
        # Made before the refresh starts, so that `aclose` can cancel one not yet running.
        self.scope = anyio.CancelScope()


class JWKSKeySource:
    """The signing keys of one JWKS URL: cached, refreshed, throttled, served stale on outage.

    Args:
        url: The JWKS URL.
        transport: The httpx transport (``None`` for the network).
        clock: Returns Unix seconds; drives the TTL and the cooldown.
        options: TTL, cooldown and timeout.
        tasks: Where the stale-while-revalidate refresh runs: the app lifespan's task group.
            ``None``, or no lifespan running on the loop, refreshes in the request instead.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport | None,
        clock: Clock,
        options: TokenSettings,
        tasks: LifespanTasks | None = None,
    ) -> None:
        self.url = url
        self._transport = transport
        self._clock = clock
        self._options = options
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._tasks = tasks
        # Per event loop, made again on another loop (see the module's docstring).
        self._lock = PerLoop(anyio.Lock)
        self._http = PerLoop(self._new_client)
        self._revalidation: _Revalidation | None = None  # the latest stale-while-revalidate
        self.fetches = 0
        """How many times the JWKS was requested (for tests and metrics)."""

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently cached."""
        return frozenset(self._keys)

    async def get_key(self, kid: str) -> Key:
        """The key for ``kid``, fetching or refreshing the JWKS when needed.

        A cached key is returned at once, even past the TTL: a stale cache starts one refresh in
        the background (see `revalidate`; outside a lifespan this request makes it). Only an
        unknown ``kid``, or a source that never fetched anything, waits for a fetch.

        Raises:
            InvalidTokenError: no key has this ``kid``, even after a (throttled) refetch.
            KeysUnavailableError: no key was ever fetched and the JWKS cannot be reached.
        """
        key = self._keys.get(kid)
        if key is not None:
            if self._fetched_at is None or (
                self._clock() - self._fetched_at >= self._options.jwks_cache_ttl
            ):
                await self.revalidate()
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

    async def revalidate(self) -> None:
        """Refresh a stale cache, once, without making requests wait for it.

        Inside the app's lifespan the refresh is started in the lifespan's task group and this
        returns at once. Without one on this loop (a bare ``TestClient(app)``, a script) nothing
        outlives the request, so this request refreshes inline, while the requests arriving
        meanwhile are served from the cache. Either way one refresh runs at a time per loop,
        within the same cooldown as every fetch, so a stale cache under load costs at most one
        fetch per cooldown; while it runs (or fails), the cached keys keep being served.
        """
        token = anyio.lowlevel.current_token()
        running = self._revalidation
        # One on another loop does not count: that loop may have ended without finishing it.
        if running is not None and running.token == token and not running.done.is_set():
            return
        attempted = self._attempted_at
        if (
            attempted is not None
            and self._clock() - attempted < self._options.jwks_refetch_cooldown
        ):
            return  # throttled: refresh() would return at once, so spare the task
        revalidation = _Revalidation(token)
        self._revalidation = revalidation

        async def run() -> None:
            await self._revalidate(revalidation)

        if self._tasks is None or not self._tasks.start_soon(run, name=f"jwks refresh {self.url}"):
            await run()

    async def _revalidate(self, revalidation: _Revalidation) -> None:
        try:
            with revalidation.scope:
                await self._refresh_or_warn()
        finally:
            revalidation.done.set()

    @property
    def refreshing(self) -> bool:
        """Whether a stale-while-revalidate refresh is under way (see `revalidate`)."""
        revalidation = self._revalidation
        return revalidation is not None and not revalidation.done.is_set()

    async def wait_for_refresh(self) -> None:
        """Wait until the stale-while-revalidate refresh, if any, has finished (tests, shutdown).

        Only a refresh running on the caller's event loop can be waited for; one on another
        loop (another thread's) is not.
        """
        revalidation = self._revalidation
        if revalidation is not None and revalidation.token == anyio.lowlevel.current_token():
            await revalidation.done.wait()

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS unless a fetch was attempted within the cooldown; True if keys changed.

        One fetch at a time: concurrent callers wait for the running fetch and reuse its result.
        A failed fetch keeps the cached keys and is logged at WARNING.
        """
        lock = self._lock.get()
        attempted_before = self._attempted_at
        async with lock:
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

    def _new_client(self) -> httpx.AsyncClient:
        # No connection is kept between fetches: they are minutes apart (an idle connection
        # would be closed by then anyway), and a connection belongs to the loop that opened it
        # ("Event loop is closed" on the next one). So the client of another loop holds
        # nothing open, and is simply left behind.
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self._options.jwks_timeout,
            headers={"User-Agent": "fastapi-workos-authkit"},
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def _refresh_or_warn(self, *, force: bool = False) -> bool:
        """`refresh` for callers nobody awaits for an answer: start-up and the background task.

        `refresh` already turns every failure of WorkOS or of its document into a warning. This
        also catches what nobody foresaw, so that start-up still completes and a background
        refresh never ends with an exception (which would reach the lifespan's task group);
        the traceback is logged.
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
        client = self._http.get()
        self.fetches += 1
        response = await client.get(self.url)
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
        """Stop a stale-while-revalidate refresh and close the HTTP connection pool.

        Only what belongs to the caller's event loop can be stopped and closed; what another
        loop made is dropped.
        """
        token = anyio.lowlevel.current_token()
        revalidation = self._revalidation
        if revalidation is not None and revalidation.token == token:
            revalidation.scope.cancel()
            await revalidation.done.wait()
        client = self._http.forget()
        if client is not None:
            await client.aclose()
