"""Configuration: explicit options first, then the environment, then defaults.

Nothing here is demanded when `AuthKit` is constructed. Each feature asks for the value it needs
through one of the ``require_*`` methods when it is mounted or used, so an app that never receives
webhooks never needs a webhook secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import ConfigurationError

DEFAULT_API_HOSTNAME = "api.workos.com"
DEFAULT_API_BASE_URL = "https://api.workos.com"
DEFAULT_DATABASE_URL = "sqlite:///./workos_authkit.db"
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_READ_POOL_SIZE = 5
ONE_MIB = 1024 * 1024

# Where each value lives in the WorkOS dashboard; the error for a missing value says so.
_WHERE_TO_FIND = {
    "WORKOS_CLIENT_ID": (
        "copy the Client ID from the WorkOS dashboard (API Keys page, 'Client ID')"
    ),
    "WORKOS_API_KEY": (
        "create or copy a secret key (sk_...) on the WorkOS dashboard's API Keys page"
    ),
    "WORKOS_WEBHOOK_SECRET": (
        "copy the signing secret from the WorkOS dashboard: Webhooks, open your endpoint "
        "(URL ending in /workos/webhook), 'Signing secret'"
    ),
    "WORKOS_ACTION_SECRET": (
        "copy the signing secret from the WorkOS dashboard: Authentication, Actions, open "
        "your action endpoint (URL ending in /workos/action), 'Signing secret'"
    ),
}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _missing(variable: str, option: str, feature: str) -> ConfigurationError:
    return ConfigurationError(
        f"{variable} is not set, and {feature} needs it: {_WHERE_TO_FIND[variable]}, then set "
        f"{variable} in the environment or pass AuthKit({option}=...)."
    )


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one `AuthKit` instance.

    Every secret may be ``None``; ask for one with the matching ``require_*`` method, which raises
    `ConfigurationError` naming the variable and where to find its value.
    """

    client_id: str | None = None
    api_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    action_secret: str | None = field(default=None, repr=False)
    api_hostname: str = DEFAULT_API_HOSTNAME
    api_base_url: str = DEFAULT_API_BASE_URL
    database_url: str = DEFAULT_DATABASE_URL
    additional_event_types: tuple[str, ...] = ()
    log_level: int | None = None
    webhook_tolerance: float = 180.0
    action_tolerance: float = 30.0
    prefix: str = "/workos"
    max_body_size: int = ONE_MIB
    pool_size: int = DEFAULT_POOL_SIZE
    max_overflow: int = DEFAULT_MAX_OVERFLOW
    read_pool_size: int = DEFAULT_READ_POOL_SIZE

    @classmethod
    def resolve(
        cls,
        *,
        client_id: str | None = None,
        api_key: str | None = None,
        webhook_secret: str | None = None,
        action_secret: str | None = None,
        api_hostname: str | None = None,
        api_base_url: str | None = None,
        database_url: str | None = None,
        additional_event_types: Iterable[str] = (),
        log_level: int | str | None = None,
        webhook_tolerance: float = 180.0,
        action_tolerance: float = 30.0,
        prefix: str = "/workos",
        max_body_size: int = ONE_MIB,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        read_pool_size: int | None = None,
    ) -> Settings:
        """Merge explicit options with the ``WORKOS_*`` / ``AUTHKIT_*`` environment variables."""
        hostname = api_hostname or _env("WORKOS_API_HOSTNAME") or DEFAULT_API_HOSTNAME
        if webhook_tolerance <= 0 or action_tolerance <= 0:
            raise ConfigurationError("Signature tolerances must be positive numbers of seconds.")
        if max_body_size <= 0:
            raise ConfigurationError("max_body_size must be a positive number of bytes.")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ConfigurationError(
                f"prefix must start with '/' and not end with '/' (got {prefix!r})."
            )
        sizes = (
            _count("pool_size", pool_size, "AUTHKIT_POOL_SIZE", DEFAULT_POOL_SIZE, 1),
            _count("max_overflow", max_overflow, "AUTHKIT_MAX_OVERFLOW", DEFAULT_MAX_OVERFLOW, 0),
            _count(
                "read_pool_size",
                read_pool_size,
                "AUTHKIT_READ_POOL_SIZE",
                DEFAULT_READ_POOL_SIZE,
                1,
            ),
        )
        return cls(
            client_id=client_id or _env("WORKOS_CLIENT_ID"),
            api_key=api_key or _env("WORKOS_API_KEY"),
            webhook_secret=webhook_secret or _env("WORKOS_WEBHOOK_SECRET"),
            action_secret=action_secret or _env("WORKOS_ACTION_SECRET"),
            api_hostname=hostname,
            # The REST API and the JWKS live on api.workos.com even when tokens are issued by a
            # custom auth domain, so the base URL does not follow api_hostname.
            api_base_url=(api_base_url or DEFAULT_API_BASE_URL).rstrip("/"),
            database_url=database_url or _env("AUTHKIT_DATABASE_URL") or DEFAULT_DATABASE_URL,
            additional_event_types=tuple(additional_event_types),
            log_level=_level(log_level),
            webhook_tolerance=float(webhook_tolerance),
            action_tolerance=float(action_tolerance),
            prefix=prefix,
            max_body_size=max_body_size,
            pool_size=sizes[0],
            max_overflow=sizes[1],
            read_pool_size=sizes[2],
        )

    def require_client_id(self, feature: str) -> str:
        """Return the client id, or raise a `ConfigurationError` that explains how to set it."""
        return self._require(self.client_id, "WORKOS_CLIENT_ID", "client_id", feature)

    def require_api_key(self, feature: str) -> str:
        """Return the API key, or raise a `ConfigurationError` that explains how to set it."""
        return self._require(self.api_key, "WORKOS_API_KEY", "api_key", feature)

    def require_webhook_secret(self, feature: str = "the webhook endpoint") -> str:
        """Return the webhook signing secret, or raise a helpful `ConfigurationError`."""
        return self._require(
            self.webhook_secret, "WORKOS_WEBHOOK_SECRET", "webhook_secret", feature
        )

    def require_action_secret(self, feature: str = "the Actions endpoint") -> str:
        """Return the Actions signing secret, or raise a helpful `ConfigurationError`."""
        return self._require(self.action_secret, "WORKOS_ACTION_SECRET", "action_secret", feature)

    @staticmethod
    def _require(value: str | None, variable: str, option: str, feature: str) -> str:
        if not value:
            raise _missing(variable, option, feature)
        return value


def _count(option: str, value: int | None, variable: str, default: int, least: int) -> int:
    """A connection count: the explicit option, else the environment variable, else the default."""
    if value is None:
        raw = _env(variable)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{variable} must be a whole number (got {raw!r}).") from None
    if value < least:
        raise ConfigurationError(
            f"{option} must be at least {least} (got {value}); set it with AuthKit({option}=...) "
            f"or {variable}."
        )
    return value


def _level(level: int | str | None) -> int | None:
    if level is None or isinstance(level, int):
        return level
    resolved = logging.getLevelName(level.upper())
    if not isinstance(resolved, int):
        raise ConfigurationError(f"Unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR.")
    return resolved


Clock = Callable[[], float]
"""A function returning the current time as Unix seconds; injectable for tests."""
