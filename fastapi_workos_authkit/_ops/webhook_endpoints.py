"""WorkOS webhook endpoints from code: list, set up, delete; and the event types an app needs.

The same operations back ``fastapi-workos-authkit webhooks ...`` and ``doctor``; a deploy script
or a preview-environment hook can call them directly::

    result = await setup_webhook_endpoint(authkit, "https://pr-42.example.com/workos/webhook")
    if result.secret is not None:  # only when the endpoint was created
        store_secret(result.secret)

`needed_event_types` is the one place that decides which event types an app needs, so that
``webhooks setup`` and ``doctor`` agree (``additional_event_types`` count for both). Names are
explicit (``user.created``...), never wildcards: WorkOS routes webhooks by exact name. The
functions given ``authkit`` read only its `AppProfile` (`ProfileSource`): the facade is never
imported here.

The signing secret comes back only from the create call. That call is never retried: a retry
after a lost answer would make a second endpoint and lose the first one's secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .._config import AuthKitSettings
from .._exceptions import WebhookSetupError as WebhookSetupError
from .._recovery.workos_api import (
    WorkOSAPIError,
    WorkOSClient,
    _decode,
    _id_segment,
    _list_after,
    _list_data,
)
from .._sync.mirror import KINDS
from .profile import AppProfile, ProfileSource

__all__ = [
    "CreatedWebhookEndpoint",
    "EventNeed",
    "SetupPlan",
    "SetupResult",
    "WebhookEndpoint",
    "WebhookSetupError",
    "create_webhook_endpoint",
    "delete_webhook_endpoint",
    "delete_webhook_endpoints",
    "endpoints_for_url",
    "event_needs",
    "list_webhook_endpoints",
    "needed_event_types",
    "plan_setup",
    "same_url",
    "setup_webhook_endpoint",
    "update_webhook_endpoint",
    "webhook_path",
]

ENDPOINTS = "/webhook_endpoints"
USER_EVENT_TYPES = ("user.created", "user.updated", "user.deleted")


# -- what the app needs ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventNeed:
    """Why an app needs one event type: its handlers, the table it mirrors, the settings."""

    event_type: str
    handlers: tuple[str, ...] = ()
    """``module.function`` of each handler registered for the type."""
    mirrored: str | None = None
    """The mirrored kind whose table the type changes (``user``, ``organization``...)."""
    additional: bool = False
    """Listed in ``additional_event_types``."""

    def reason(self) -> str:
        """Who needs the type, in words: the handlers first, since they are what never runs."""
        parts = [f"handler {name}" for name in self.handlers]
        if self.mirrored:
            parts.append(f"the {self.mirrored} table (mirrored)")
        if self.additional:
            parts.append("additional_event_types")
        return ", ".join(parts)


def needed_event_types(authkit: ProfileSource, extra: Iterable[str] = ()) -> dict[str, EventNeed]:
    """Every event type ``authkit`` needs delivered, by name, with the reasons.

    ``user.created``, ``user.updated``, ``user.deleted``; the types of every mirrored kind; every
    type with a registered handler; ``additional_event_types``; and ``extra`` (``--events``).
    """
    return event_needs(authkit.app_profile(), extra)


def event_needs(profile: AppProfile, extra: Iterable[str] = ()) -> dict[str, EventNeed]:
    """`needed_event_types` of an app described by ``profile``."""
    by_type: dict[str, dict[str, Any]] = {}

    def need(event_type: str) -> dict[str, Any]:
        return by_type.setdefault(event_type, {"handlers": [], "mirrored": None, "extra": False})

    # What the Events API catch-up asks for, so that webhooks and the catch-up agree.
    for event_type in profile.event_types_in_play:
        need(event_type)
    for event_type in USER_EVENT_TYPES:
        need(event_type)["mirrored"] = "user"
    for kind in KINDS.values():
        if kind.name in profile.mirrored_kinds:
            for event_type in kind.event_types:
                need(event_type)["mirrored"] = kind.name
    for event_type, names in profile.handler_names.items():
        need(event_type)["handlers"] = list(names)
    for event_type in (*profile.settings.additional_event_types, *extra):
        need(event_type)["extra"] = True
    for event_type in by_type:
        if not event_type or "*" in event_type:
            raise WebhookSetupError(
                f"{event_type!r} is not an event type: WorkOS routes webhooks by exact name, so "
                "list each one (user.created, user.updated...), without wildcards"
            )
    return {
        name: EventNeed(name, tuple(v["handlers"]), v["mirrored"], v["extra"])
        for name, v in sorted(by_type.items())
    }


def webhook_path(settings: AuthKitSettings) -> str:
    """The path of the app's webhook route: ``{prefix}/webhook``."""
    return f"{settings.prefix}/webhook"


def _path(url: str) -> str:
    return urlsplit(url).path.rstrip("/")


def _url_key(url: str) -> tuple[str, str, str]:
    # Scheme, host and path, with the trailing slash and the query removed.
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def same_url(a: str, b: str) -> bool:
    """Whether two endpoint URLs are the same, ignoring a trailing slash and the query."""
    return _url_key(a) == _url_key(b)


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebhookSetupError(
            f"{url!r} is not an absolute http(s) URL: give the full address WorkOS will POST "
            "to, such as https://app.example.com/workos/webhook"
        )


# -- the REST operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEndpoint:
    """A WorkOS webhook endpoint, without its secret (only the create call returns that)."""

    id: str
    endpoint_url: str
    status: str
    events: tuple[str, ...]
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether WorkOS delivers to it."""
        return self.status == "enabled"


@dataclass(frozen=True)
class CreatedWebhookEndpoint:
    """A new endpoint and its signing secret (shown once by WorkOS: store it now)."""

    endpoint: WebhookEndpoint
    secret: str = field(repr=False)


def _endpoint(item: object, where: str) -> WebhookEndpoint:
    if not isinstance(item, dict):
        raise WorkOSAPIError(f"WorkOS answered {where} with something that is not an object")
    events = item.get("events")
    ok = (
        isinstance(item.get("id"), str)
        and isinstance(item.get("endpoint_url"), str)
        and isinstance(item.get("status"), str)
        and isinstance(events, list)
        and all(isinstance(e, str) for e in events)
    )
    if not ok:
        raise WorkOSAPIError(
            f"WorkOS answered {where} with something that is not a webhook endpoint (it needs "
            "a string id, endpoint_url and status, and a list of events)"
        )
    assert isinstance(events, list)
    return WebhookEndpoint(
        id=item["id"],
        endpoint_url=item["endpoint_url"],
        status=item["status"],
        events=tuple(events),
        created_at=item.get("created_at"),
        updated_at=item.get("updated_at"),
    )


async def list_webhook_endpoints(client: WorkOSClient) -> list[WebhookEndpoint]:
    """Every webhook endpoint of the environment (``GET /webhook_endpoints``, every page)."""
    endpoints: list[WebhookEndpoint] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100}
        if after:
            params["after"] = after
        body = await client._json(ENDPOINTS, params)
        items = _list_data(body, ENDPOINTS)
        endpoints += [_endpoint(item, f"GET {ENDPOINTS}") for item in items]
        after = _list_after(body, ENDPOINTS)
        if not items or after is None:
            return endpoints


async def create_webhook_endpoint(
    client: WorkOSClient, url: str, events: Sequence[str]
) -> CreatedWebhookEndpoint:
    """``POST /webhook_endpoints``, sent once (never retried); returns the endpoint and secret."""
    _check_url(url)
    response = await client._request(
        "POST",
        ENDPOINTS,
        json_body={"endpoint_url": url, "events": sorted(events)},
        retry=False,
    )
    assert response is not None
    body = _decode(response, ENDPOINTS)
    secret = body.get("secret")
    if not isinstance(secret, str) or not secret:
        raise WorkOSAPIError(
            f"WorkOS created the endpoint {body.get('id')!r} but sent no signing secret: delete "
            "it in the dashboard (or with webhooks delete) and set it up again"
        )
    return CreatedWebhookEndpoint(_endpoint(body, f"POST {ENDPOINTS}"), secret)


async def update_webhook_endpoint(
    client: WorkOSClient,
    endpoint_id: str,
    *,
    endpoint_url: str | None = None,
    status: Literal["enabled", "disabled"] | None = None,
    events: Sequence[str] | None = None,
) -> WebhookEndpoint:
    """``PATCH /webhook_endpoints/<id>`` with the fields given (the secret is not returned)."""
    path = f"{ENDPOINTS}/{_id_segment('webhook endpoint', endpoint_id)}"
    change: dict[str, Any] = {}
    if endpoint_url is not None:
        _check_url(endpoint_url)
        change["endpoint_url"] = endpoint_url
    if status is not None:
        change["status"] = status
    if events is not None:
        change["events"] = sorted(events)
    response = await client._request("PATCH", path, json_body=change)
    assert response is not None
    return _endpoint(_decode(response, path), f"PATCH {path}")


async def delete_webhook_endpoint(client: WorkOSClient, endpoint_id: str) -> None:
    """``DELETE /webhook_endpoints/<id>``; an endpoint already gone is not an error."""
    path = f"{ENDPOINTS}/{_id_segment('webhook endpoint', endpoint_id)}"
    await client._request("DELETE", path, allow_404=True)


def endpoints_for_url(endpoints: Iterable[WebhookEndpoint], url: str) -> list[WebhookEndpoint]:
    """The endpoints whose URL is ``url`` (see `same_url`)."""
    return [e for e in endpoints if same_url(e.endpoint_url, url)]


# -- setup and delete ------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupPlan:
    """What `setup_webhook_endpoint` will do: create, update, or nothing."""

    action: Literal["create", "update", "none"]
    url: str
    events: tuple[str, ...]
    """The full set the endpoint will be subscribed to."""
    endpoint: WebhookEndpoint | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    enable: bool = False
    """The endpoint exists but is disabled, and will be enabled."""

    def describe(self) -> list[str]:
        """The difference, in lines, for a confirmation prompt."""
        if self.action == "create":
            return [f"create an endpoint for {self.url}", *(f"  + {t}" for t in self.events)]
        if self.action == "none" or self.endpoint is None:
            return [f"{self.url} is already enabled and subscribed to exactly what it needs"]
        lines = [f"update endpoint {self.endpoint.id} ({self.url})"]
        if self.enable:
            lines.append(f"  status: {self.endpoint.status} -> enabled")
        lines += [f"  + {t}" for t in self.added]
        lines += [f"  - {t}" for t in self.removed]
        return lines


def plan_setup(endpoints: Sequence[WebhookEndpoint], url: str, events: Iterable[str]) -> SetupPlan:
    """Compare the endpoints with what ``url`` needs; refuse when several share the URL."""
    _check_url(url)
    wanted = tuple(sorted(set(events)))
    matching = endpoints_for_url(endpoints, url)
    if len(matching) > 1:
        ids = ", ".join(e.id for e in matching)
        raise WebhookSetupError(
            f"{len(matching)} webhook endpoints share the URL {url} ({ids}): WorkOS delivers "
            "each event to every one of them. Delete the extra ones (webhooks delete --url, or "
            "the dashboard), then run setup again."
        )
    if not matching:
        return SetupPlan("create", url, wanted)
    endpoint = matching[0]
    added = tuple(sorted(set(wanted) - set(endpoint.events)))
    removed = tuple(sorted(set(endpoint.events) - set(wanted)))
    enable = not endpoint.enabled
    action: Literal["update", "none"] = "update" if added or removed or enable else "none"
    return SetupPlan(action, url, wanted, endpoint, added, removed, enable)


@dataclass(frozen=True)
class SetupResult:
    """What `setup_webhook_endpoint` did; ``secret`` is set only when it created the endpoint."""

    plan: SetupPlan
    endpoint: WebhookEndpoint | None
    applied: bool
    secret: str | None = field(default=None, repr=False)


async def setup_webhook_endpoint(
    authkit: ProfileSource,
    url: str,
    *,
    events: Iterable[str] = (),
    confirm: Callable[[SetupPlan], bool] | None = None,
) -> SetupResult:
    """Create the endpoint for ``url``, or update the one with that URL, so that it is enabled
    and subscribed to exactly what ``authkit`` needs (`needed_event_types`, plus ``events``).

    ``confirm`` is asked before any change; answering ``False`` changes nothing
    (``applied=False``). Raises `WebhookSetupError` when several endpoints share the URL.
    """
    profile = authkit.app_profile()
    client = profile.workos_api()
    wanted = event_needs(profile, events)
    plan = plan_setup(await list_webhook_endpoints(client), url, wanted)
    if plan.action == "none":
        return SetupResult(plan, plan.endpoint, applied=True)
    if confirm is not None and not confirm(plan):
        return SetupResult(plan, plan.endpoint, applied=False)
    if plan.action == "create":
        created = await create_webhook_endpoint(client, url, plan.events)
        return SetupResult(plan, created.endpoint, applied=True, secret=created.secret)
    assert plan.endpoint is not None
    endpoint = await update_webhook_endpoint(
        client,
        plan.endpoint.id,
        status="enabled" if plan.enable else None,
        events=plan.events if plan.added or plan.removed else None,
    )
    return SetupResult(plan, endpoint, applied=True)


async def delete_webhook_endpoints(
    authkit: ProfileSource,
    url: str,
    *,
    confirm: Callable[[list[WebhookEndpoint]], bool] | None = None,
) -> list[WebhookEndpoint]:
    """Delete every endpoint whose URL is ``url``; returns those deleted (none if declined)."""
    client = authkit.app_profile().workos_api()
    matching = endpoints_for_url(await list_webhook_endpoints(client), url)
    if not matching or (confirm is not None and not confirm(matching)):
        return []
    for endpoint in matching:
        await delete_webhook_endpoint(client, endpoint.id)
    return matching
