"""A small async client for the few WorkOS REST endpoints the package needs (users,
organizations, organization memberships, events).

One shared connection pool, timeouts, and retries: ``429`` waits for ``Retry-After``; 5xx and
network errors back off exponentially, capped. The API key travels only in the ``Authorization``
header and is never logged.

It is longer than most modules because every response shape is checked here, next to the
call that receives it, so no unchecked WorkOS answer leaves this module.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from .._clock import utcnow
from .._exceptions import InvalidEventError
from .._exceptions import WorkOSAPIError as WorkOSAPIError
from .._exceptions import WorkOSAuthenticationError as WorkOSAuthenticationError
from .._sync.events import (
    Organization,
    OrganizationMembership,
    User,
    check_snapshot,
)
from .._sync.untrusted_json import clean_json

logger = logging.getLogger("fastapi_workos_authkit")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Sleep = Callable[[float], Awaitable[None]]


MAX_ID_LENGTH = 128
"""The longest id accepted as a WorkOS id (real ones are ``<prefix>_<ULID>``, about 31)."""

_PLAUSIBLE_ID = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_ID_LENGTH}}}")


def is_plausible_id(value: object) -> bool:
    """Whether ``value`` could be a WorkOS id: letters, digits and underscores, 1 to 128 of them.

    Real ids are ``<prefix>_<ULID>``; the exact shape is not demanded, since test fixtures and
    emulators use shorter ones. Anything else (a ``/``, a ``..``, a ``%``, a space, a non-ASCII
    letter) is input that must never reach a REST path. The one rule, shared by the token
    dependencies (a token's ``sub``) and the REST client (every id in a path).
    """
    return isinstance(value, str) and _PLAUSIBLE_ID.fullmatch(value) is not None


def _id_segment(kind: str, value: str) -> str:
    """``value`` as one REST path segment: checked, then percent-encoded.

    The check refuses everything the encoding would have to change, so the encoding is a second
    wall: if the rule is ever widened, an id still cannot add a segment or a query to the path.
    """
    if not is_plausible_id(value):
        # The value is untrusted input: say what is wrong with it, not what it is.
        raise WorkOSAPIError(
            f"Refusing to put an implausible {kind} id in a WorkOS REST path ({len(value)} "
            f"characters): ids are letters, digits and underscores, at most {MAX_ID_LENGTH}"
        )
    return quote(value, safe="")


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
        """``GET /user_management/users/<id>``; ``None`` when WorkOS answers 404.

        Raises:
            WorkOSAPIError: ``user_id`` is not a plausible id (no request is sent), WorkOS
                could not be asked, or it answered with something that is not a user object.
        """
        path = f"/user_management/users/{_id_segment('user', user_id)}"
        response = await self._request("GET", path, allow_404=True)
        if response is None:
            return None
        return _user(_decode(response, path), path)

    async def list_users(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        order: str = "asc",
        keepalive: Keepalive | None = None,
    ) -> Page[User]:
        """One page of ``GET /user_management/users``, oldest first by default."""
        params = _list_params(after, limit, order)
        path = "/user_management/users"
        body = await self._json(path, params, keepalive)
        raw = _list_data(body, path)
        users = [_user(item, f"{path} (item {index})") for index, item in enumerate(raw)]
        return Page(data=users, after=_list_after(body, path), raw=raw)

    async def list_organizations(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        order: str = "asc",
        keepalive: Keepalive | None = None,
    ) -> Page[Organization]:
        """One page of ``GET /organizations``, oldest first by default.

        Raises:
            WorkOSAPIError: ``after`` is not a plausible id, WorkOS could not be asked, or an
                item is not an organization the mirror can store.
        """
        path = "/organizations"
        params = _list_params(after, limit, order)
        body = await self._json(path, params, keepalive)
        raw = _list_data(body, path)
        items = [
            _snapshot(Organization, "organization", item, f"{path} (item {index})")
            for index, item in enumerate(raw)
        ]
        return Page(data=items, after=_list_after(body, path), raw=raw)

    async def get_organization(self, organization_id: str) -> Organization | None:
        """``GET /organizations/<id>``; ``None`` when WorkOS answers 404.

        Raises:
            WorkOSAPIError: the id is not plausible (no request is sent), WorkOS could not be
                asked, or it answered with something that is not an organization.
        """
        path = f"/organizations/{_id_segment('organization', organization_id)}"
        response = await self._request("GET", path, allow_404=True)
        if response is None:
            return None
        return _snapshot(Organization, "organization", _decode(response, path), path)

    async def list_organization_memberships(
        self,
        *,
        organization_id: str | None = None,
        user_id: str | None = None,
        statuses: Sequence[str] = ("active", "inactive", "pending"),
        after: str | None = None,
        limit: int = 100,
        order: str = "asc",
        keepalive: Keepalive | None = None,
    ) -> Page[OrganizationMembership]:
        """One page of ``GET /user_management/organization_memberships``.

        WorkOS requires ``organization_id`` or ``user_id`` (or both). ``statuses`` is sent
        comma-joined and asks for every status by default: without it WorkOS lists only active
        memberships, and a mirror needs the inactive and pending ones too.

        Raises:
            ValueError: neither ``organization_id`` nor ``user_id`` was given.
            WorkOSAPIError: an id is not plausible (no request is sent), WorkOS could not be
                asked, or an item is not a membership the mirror can store.
        """
        if organization_id is None and user_id is None:
            raise ValueError(
                "list_organization_memberships needs organization_id or user_id: WorkOS refuses "
                "to list the memberships of every organization at once"
            )
        path = "/user_management/organization_memberships"
        params = _list_params(after, limit, order)
        if organization_id is not None:
            params["organization_id"] = _id_param("organization", organization_id)
        if user_id is not None:
            params["user_id"] = _id_param("user", user_id)
        if statuses:
            params["statuses"] = ",".join(statuses)
        body = await self._json(path, params, keepalive)
        raw = _list_data(body, path)
        items = [
            _snapshot(OrganizationMembership, "membership", item, f"{path} (item {index})")
            for index, item in enumerate(raw)
        ]
        return Page(data=items, after=_list_after(body, path), raw=raw)

    async def get_organization_membership(
        self, membership_id: str
    ) -> OrganizationMembership | None:
        """``GET /user_management/organization_memberships/<id>``; ``None`` on 404.

        Raises:
            WorkOSAPIError: the id is not plausible (no request is sent), WorkOS could not be
                asked, or it answered with something that is not a membership.
        """
        segment = _id_segment("organization membership", membership_id)
        path = f"/user_management/organization_memberships/{segment}"
        response = await self._request("GET", path, allow_404=True)
        if response is None:
            return None
        return _snapshot(OrganizationMembership, "membership", _decode(response, path), path)

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
        # Each event's own shape is the pipeline's to judge (`sync_events` records an event it
        # cannot parse and moves on); the envelope around them is ours.
        raw = _list_data(body, "/events")
        return Page(data=raw, after=_list_after(body, "/events"), raw=raw)

    async def _json(
        self, path: str, params: dict[str, str | int], keepalive: Keepalive | None = None
    ) -> dict[str, Any]:
        response = await self._request("GET", path, params=params, keepalive=keepalive)
        assert response is not None
        return _decode(response, path)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        allow_404: bool = False,
        keepalive: Keepalive | None = None,
        json_body: Any = None,
        retry: bool = True,
    ) -> httpx.Response | None:
        # ``retry=False`` sends once: for a call whose retry could do it twice (a create).
        attempts = self._retry.attempts if retry else 1
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, params=params, json=json_body)
            except httpx.TransportError as exc:
                if attempt >= attempts:
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
            if not retryable or attempt >= attempts:
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


# -- checking what a 2xx carries -------------------------------------------------------------
# A proxy's HTML error page, a captive portal or an API change can answer 200 with anything.
# Each is turned into a `WorkOSAPIError` that says what was wrong, so a request gets its 503
# and a recovery job a clear error. The messages never quote the body: it may hold user data.


def _decode(response: httpx.Response, path: str) -> dict[str, Any]:
    """The response's JSON object, or `WorkOSAPIError` if it is not one."""
    status = response.status_code
    content_type = response.headers.get("content-type", "none").split(";")[0].strip()
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WorkOSAPIError(
            f"WorkOS answered {status} to GET {path} with a body that is not JSON "
            f"(content-type {content_type}, {len(response.content)} bytes)",
            status_code=status,
        ) from exc
    if not isinstance(body, dict):
        raise WorkOSAPIError(
            f"WorkOS answered {status} to GET {path} with JSON {type(body).__name__}, "
            "not an object",
            status_code=status,
        )
    return body


def _user(item: object, where: str) -> User:
    """A user object from WorkOS, held to the same rules as a user in a webhook event
    (`_snapshot`): lone surrogates replaced; a non-finite number, nesting past the limit, or an
    id or email longer than its column a `WorkOSAPIError` rather than a database error later."""
    return _snapshot(User, "user", item, where)


def _id_param(kind: str, value: str) -> str:
    """An id sent as a query parameter: held to the plausible-id rule like a path segment."""
    _id_segment(kind, value)
    return value


def _list_params(after: str | None, limit: int, order: str) -> dict[str, str | int]:
    # ``after`` is WorkOS's own opaque cursor (the last id of the page before), sent as an
    # encoded query parameter: it is passed on as it came.
    params: dict[str, str | int] = {"limit": limit, "order": order}
    if after:
        params["after"] = after
    return params


def _snapshot(model: type[M], what: str, item: object, where: str) -> M:
    """An object of ``model`` from WorkOS, held to the rules of the same object in a webhook.

    As for users (`_user`): lone surrogates replaced, anything unstorable (non-finite numbers,
    nesting past the limit, values longer than their columns, fields the mirror needs missing)
    a `WorkOSAPIError` that names the problem and never quotes the body.
    """
    cleaned, problems = clean_json(item)
    if problems:
        raise WorkOSAPIError(
            f"WorkOS answered GET {where} with {_a(what)} that cannot be stored: "
            + "; ".join(sorted(problems))
        )
    try:
        snapshot = model.model_validate(cleaned)
    except ValidationError as exc:
        raise WorkOSAPIError(
            f"WorkOS answered GET {where} with something that is not {_a(what)} object: "
            f"{_problems(exc)}"
        ) from None  # the ValidationError's text quotes the input
    try:
        check_snapshot(snapshot)
    except InvalidEventError as exc:
        # Its message names fields and limits, never values.
        raise WorkOSAPIError(
            f"WorkOS answered GET {where} with {_a(what)} that cannot be stored: {exc}"
        ) from None
    return snapshot


def _a(word: str) -> str:
    # "an organization", but "a user": the words named here never start with a vowel sound
    # spelled "u" ("a user"), so "u" is left out.
    return f"an {word}" if word[0] in "aeio" else f"a {word}"


def _problems(exc: ValidationError) -> str:
    """Where and what, without pydantic's ``input_value=...`` (it would quote the body)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'the body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _list_data(body: dict[str, Any], path: str) -> list[dict[str, Any]]:
    data = body.get("data")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise WorkOSAPIError(
            f"WorkOS answered GET {path} with 'data' of type {type(data).__name__}, not a list"
        )
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise WorkOSAPIError(
                f"WorkOS answered GET {path} with item {index} of 'data' of type "
                f"{type(item).__name__}, not an object"
            )
    return data


def _list_after(body: dict[str, Any], path: str) -> str | None:
    metadata = body.get("list_metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise WorkOSAPIError(
            f"WorkOS answered GET {path} with 'list_metadata' of type "
            f"{type(metadata).__name__}, not an object"
        )
    after = metadata.get("after")
    if after is not None and not isinstance(after, str):
        raise WorkOSAPIError(
            f"WorkOS answered GET {path} with a 'list_metadata.after' cursor of type "
            f"{type(after).__name__}, not a string"
        )
    return after or None
