"""`AppProfile`: what the operations tooling reads of an app, and nothing more.

``doctor`` and the webhook-endpoint commands check and configure a deployment; they need the
app's settings, its database, its WorkOS client and a description of what it listens to (the
event types in play, its handlers by name, whether it decides Actions), not the facade itself.
`AuthKit.app_profile` builds one; the public functions (`run_doctor`, `needed_event_types`,
`setup_webhook_endpoint`...) take any `ProfileSource`, which the app's `AuthKit` is, so an app
keeps calling ``run_doctor(authkit)`` while this package never imports the facade back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine

from .._config import AuthKitSettings, Clock
from .._recovery.workos_api import WorkOSClient
from .._sync.handlers import HandlerRegistry

__all__ = ["AppProfile", "ProfileSource", "handler_name", "handler_names"]


@dataclass(frozen=True)
class AppProfile:
    """The collaborators of ``doctor`` and the webhook-endpoint operations, built by `AuthKit`.

    The descriptions (event types, handler names, Action handlers) are taken when the profile is
    built; the engine, the WorkOS client, the JWKS URLs and the connection count are getters,
    because building them can fail or open resources, and not every operation needs them.

    Attributes:
        settings: The app's options (secrets are read for whether they are set, never shown).
        engine: Returns the engine (created on first use; may raise for a bad URL or driver).
        workos_api: Returns the WorkOS REST client (created on first use; needs the API key).
        jwks_urls: Returns the JWKS URL of every trusted token issuer (needs the client id).
        http_transport: The httpx transport for calls to WorkOS (``None``: the network).
        clock: The current Unix time in seconds.
        max_connections_per_process: Returns the most PostgreSQL connections one process opens
            (``None`` when it is not counted: SQLite, or an engine of the app's).
        event_types_in_play: What the Events API catch-up asks for: the types of every mirrored
            kind, every handled type and ``additional_event_types``.
        mirrored_kinds: The kinds whose tables the app keeps (``user``, ``organization``...).
        handler_names: ``module.function`` of each event handler, by event type.
        has_action_handlers: Whether an Action handler is registered (so the Action secret is
            required).
    """

    settings: AuthKitSettings
    engine: Callable[[], Engine]
    workos_api: Callable[[], WorkOSClient]
    jwks_urls: Callable[[], Sequence[str]]
    http_transport: httpx.AsyncBaseTransport | None
    clock: Clock
    max_connections_per_process: Callable[[], int | None]
    event_types_in_play: tuple[str, ...]
    mirrored_kinds: frozenset[str]
    handler_names: Mapping[str, tuple[str, ...]]
    has_action_handlers: bool


class ProfileSource(Protocol):
    """Anything that describes an app as an `AppProfile`: the app's `AuthKit`."""

    def app_profile(self) -> AppProfile:
        """The app's profile, taken now."""
        ...


def handler_name(handler: Any) -> str:
    """``module.function`` of a handler, as ``doctor`` and ``webhooks setup`` name it."""
    module = getattr(handler, "__module__", None) or "?"
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    return f"{module}.{name}"


def handler_names(handlers: HandlerRegistry) -> dict[str, tuple[str, ...]]:
    """The names of the handlers of every handled event type, in registration order."""
    types = sorted(handlers.event_types())
    return {t: tuple(handler_name(h) for h in handlers.for_type(t)) for t in types}
