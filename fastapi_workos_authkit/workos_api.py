"""A small async client for the few WorkOS REST endpoints the package needs (users, events).

One shared connection pool, timeouts, and retries: ``429`` waits for ``Retry-After``; 5xx and
network errors back off exponentially, capped. The API key travels only in the ``Authorization``
header and is never logged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import anyio
import httpx

from ._clock import utcnow
from .errors import AuthKitError
from .events import User

logger = logging.getLogger("fastapi_workos_authkit")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class WorkOSAPIError(AuthKitError):
    """WorkOS answered with an error we do not retry (or retries ran out)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WorkOSAuthenticationError(WorkOSAPIError):
    """WorkOS refused the API key (401/403): check ``WORKOS_API_KEY``."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a WorkOS list endpoint, with the cursor for the next one."""

    data: list[T]
    after: str | None
    raw: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff base and cap, and the longest ``Retry-After`` honoured."""

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter for retry number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


@dataclass(frozen=True)
class Keepalive:
    """Work to do while the client waits to retry: ``callback`` runs before each slice of the
    wait, and no slice is longer than ``interval`` seconds.

    A job holding a lease passes one that renews the lease, so a long ``Retry-After`` (up to two
    minutes) or a 5xx storm never outlasts it.
    """

    interval: float
    callback: Callable[[], Awaitable[None]]


class WorkOSClient:
    """Async WorkOS REST client bound to one base URL and API key.

    Args:
        base_url: ``https://api.workos.com`` or a local fake.
        api_key: The secret key (``sk_...``); only ever sent as a bearer token.
        transport: An httpx transport, for tests (``httpx.MockTransport``, respx, ASGI).
        timeout: Per-request timeout in seconds.
        retry: The retry policy.
        sleep: The coroutine used to wait between retries; injectable so tests do not sleep.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "fastapi-workos-authkit"},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> WorkOSClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def get_user(self, user_id: str) -> User | None:
        """``GET /user_management/users/<id>``; ``None`` when WorkOS answers 404."""
        response = await self._request("GET", f"/user_management/users/{user_id}", allow_404=True)
        if response is None:
            return None
        return User.model_validate(response.json())

    async def list_users(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        order: str = "asc",
        keepalive: Keepalive | None = None,
    ) -> Page[User]:
        """One page of ``GET /user_management/users``, oldest first by default."""
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if after:
            params["after"] = after
        body = await self._json("/user_management/users", params, keepalive)
        raw = list(body.get("data") or [])
        users = [User.model_validate(item) for item in raw]
        return Page(data=users, after=(body.get("list_metadata") or {}).get("after"), raw=raw)

    async def list_events(
        self,
        *,
        events: Sequence[str],
        after: str | None = None,
        range_start: datetime | None = None,
        limit: int = 100,
        keepalive: Keepalive | None = None,
    ) -> Page[dict[str, Any]]:
        """One page of ``GET /events`` for ``events``, in ascending order.

        Events are returned as raw dicts so the pipeline can keep the exact payload; parse them
        with `parse_event`. ``events`` is sent comma-joined, as WorkOS's OpenAPI spec encodes it.
        ``Page.after`` is ``None`` on the last page.
        """
        params: dict[str, str | int] = {
            "events": ",".join(sorted(events)),
            "limit": limit,
            "order": "asc",
        }
        if after:
            params["after"] = after
        elif range_start is not None:
            params["range_start"] = range_start.isoformat().replace("+00:00", "Z")
        body = await self._json("/events", params, keepalive)
        raw = list(body.get("data") or [])
        return Page(data=raw, after=(body.get("list_metadata") or {}).get("after"), raw=raw)

    async def _json(
        self, path: str, params: dict[str, str | int], keepalive: Keepalive | None = None
    ) -> dict[str, Any]:
        response = await self._request("GET", path, params=params, keepalive=keepalive)
        assert response is not None
        body = response.json()
        if not isinstance(body, dict):
            raise WorkOSAPIError(f"WorkOS answered {path} with a non-object body")
        return body

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        allow_404: bool = False,
        keepalive: Keepalive | None = None,
    ) -> httpx.Response | None:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, params=params)
            except httpx.TransportError as exc:
                if attempt >= self._retry.attempts:
                    raise WorkOSAPIError(
                        f"WorkOS is unreachable ({type(exc).__name__}) after {attempt} attempts"
                    ) from exc
                delay = self._retry.delay(attempt)
                logger.warning(
                    "WorkOS %s %s failed (%s); retrying in %.1fs",
                    method,
                    path,
                    type(exc).__name__,
                    delay,
                )
                await self._wait(delay, keepalive)
                continue
            status = response.status_code
            if status < 400:
                return response
            if status == 404 and allow_404:
                return None
            if status in (401, 403):
                raise WorkOSAuthenticationError(
                    f"WorkOS refused the API key ({status}) for {method} {path}: check "
                    "WORKOS_API_KEY (a secret key sk_... from the dashboard's API Keys page)",
                    status_code=status,
                )
            retryable = status == 429 or status >= 500
            if not retryable or attempt >= self._retry.attempts:
                raise WorkOSAPIError(
                    f"WorkOS answered {status} to {method} {path}", status_code=status
                )
            retry_after = self._retry_after(response) if status == 429 else None
            delay = self._retry.delay(attempt) if retry_after is None else retry_after
            logger.warning(
                "WorkOS answered %s to %s %s; retrying in %.1fs", status, method, path, delay
            )
            await self._wait(delay, keepalive)

    async def _wait(self, delay: float, keepalive: Keepalive | None) -> None:
        if keepalive is None:
            await self._sleep(delay)
            return
        remaining = delay
        while True:
            await keepalive.callback()
            step = min(remaining, keepalive.interval)
            await self._sleep(step)
            remaining -= step
            if remaining <= 0:
                return

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
            except (TypeError, ValueError):
                return None
        return min(max(seconds, 0.0), self._retry.max_retry_after)
