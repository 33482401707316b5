"""Configuration: every option of `AuthKit`, declared once in `AuthKitSettings`.

Each field carries its type, default, environment variable and meaning. An explicit value (a
keyword of `AuthKit` or of `AuthKitSettings`) wins over the environment, which wins over the
default. ``pydantic-settings`` does the reading and the type checks; the rules that need words
(a positive tolerance, a prefix shape) are validators here, and every failure becomes one
`ConfigurationError` naming the option.

The module is longer than most because it is the one place every option is written down: two
dozen fields, each with its documentation, and the rules of their values.

Nothing here is demanded when `AuthKit` is constructed. Each feature asks for the value it needs
through one of the ``require_*`` methods when it is mounted or used, so an app that never receives
webhooks never needs a webhook secret.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from ._clock import Clock as Clock  # re-exported: feature modules import it from here
from ._exceptions import ConfigurationError

DEFAULT_API_HOSTNAME = "api.workos.com"
DEFAULT_API_BASE_URL = "https://api.workos.com"
DEFAULT_DATABASE_URL = "sqlite:///./workos_authkit.db"
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 5
DEFAULT_READ_POOL_SIZE = 5
ONE_MIB = 1024 * 1024
MAX_LEEWAY = 300.0
"""The most clock skew `token_leeway` may allow, in seconds."""

ENV_PREFIX = "AUTHKIT_"
"""Options without a ``WORKOS_*`` variable of their own read ``AUTHKIT_<OPTION NAME>``."""

UnhandledActionPolicy = Literal["deny", "allow"]
OptionalKind = Literal["organization", "organization_membership", "session"]
"""A kind an app may turn off (``AuthKit(mirror=...)``); users are always mirrored."""

OPTIONAL_KINDS: frozenset[OptionalKind] = frozenset(
    {"organization", "organization_membership", "session"}
)
"""Every kind besides users: mirrored by default, each can be turned off."""
"""The verdict for an Action type that has no handler."""

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


def _positive(value: float) -> bool:
    return value > 0  # False for NaN too


# The rules that need words, with the message naming the option; ``{value}`` is the value given.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "webhook_tolerance": (_positive, "webhook_tolerance must be a positive number of seconds."),
    "action_tolerance": (_positive, "action_tolerance must be a positive number of seconds."),
    "action_timeout": (_positive, "action_timeout must be a positive number of seconds."),
    "jwks_cache_ttl": (_positive, "jwks_cache_ttl must be a positive number of seconds."),
    "jwks_timeout": (
        lambda value: _positive(value) and not math.isinf(value),
        "jwks_timeout must be a positive, finite number of seconds.",
    ),
    "events_poll_interval": (
        lambda value: value is None or _positive(value),
        "events_poll_interval must be a positive number of seconds.",
    ),
    "jwks_refetch_cooldown": (
        lambda value: value >= 0,
        "jwks_refetch_cooldown must be 0 or more seconds.",
    ),
    "user_not_found_ttl": (
        lambda value: value >= 0,
        "user_not_found_ttl must be 0 or more seconds.",
    ),
    "token_leeway": (
        lambda value: 0 <= value <= MAX_LEEWAY,
        f"token_leeway must be between 0 and {MAX_LEEWAY:.0f} seconds (got {{value}}).",
    ),
    "max_body_size": (_positive, "max_body_size must be a positive number of bytes."),
    "token_cache_size": (lambda value: value >= 0, "token_cache_size must be 0 or more."),
    "prefix": (
        lambda value: not value or (value.startswith("/") and not value.endswith("/")),
        "prefix must start with '/' and not end with '/' (got {value!r}).",
    ),
    "events_range_start": (
        lambda value: not isinstance(value, datetime) or value.tzinfo is not None,
        "events_range_start must be an aware datetime (UTC).",
    ),
}

_SECRET_FIELDS = frozenset({"api_key", "webhook_secret", "action_secret"})
_EMPTY_IS_UNSET = ("client_id", "api_key", "webhook_secret", "action_secret")
_EMPTY_IS_DEFAULT = ("api_hostname", "api_base_url", "database_url")


class _Environment(EnvSettingsSource):
    """The environment, where an option with a variable of its own is read from that one only.

    ``validate_by_name`` (so that ``AuthKitSettings(client_id=...)`` works) would otherwise also
    read ``AUTHKIT_CLIENT_ID``: a second, undocumented name for the same option.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value, key, is_complex = super().get_field_value(field, field_name)
        if field.validation_alias is not None and key == field_name:
            return None, key, is_complex
        return value, key, is_complex


class AuthKitSettings(BaseSettings):
    """Every option of `AuthKit`, with its environment variable, default and meaning.

    ``AuthKit(client_id=...)`` builds one from its keywords; ``AuthKit(AuthKitSettings(...))``
    takes a ready one. Explicit values win over the environment, the environment over the
    defaults. An invalid value raises `ConfigurationError` naming the option.

    The configuration guide lists every field with its environment variable (a test keeps that
    table and this class in step): the ``WORKOS_*`` names of the WorkOS SDKs for the client id,
    the secrets and the hosts, ``AUTHKIT_DATABASE_URL``, and ``AUTHKIT_<OPTION>`` for the rest.

    Every secret may be ``None``; ask for one with the matching ``require_*`` method, which raises
    `ConfigurationError` naming the variable and where to find its value. Secrets are `SecretStr`,
    so they never show in a ``repr``, a log line or a dump.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=False,
    )

    client_id: str | None = Field(
        None,
        validation_alias=AliasChoices("WORKOS_CLIENT_ID"),
        description="The WorkOS client id (`client_...`): the JWKS URL, the token issuer and "
        "audience.",
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("WORKOS_API_KEY"),
        description="A secret key (`sk_...`) for the REST API.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("WORKOS_WEBHOOK_SECRET"),
        description="The webhook endpoint's signing secret.",
    )
    action_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("WORKOS_ACTION_SECRET"),
        description="The Actions endpoint's signing secret (a different one).",
    )
    api_hostname: str = Field(
        DEFAULT_API_HOSTNAME,
        validation_alias=AliasChoices("WORKOS_API_HOSTNAME"),
        description="The host tokens are issued by; set it for a custom auth domain.",
    )
    api_base_url: str = Field(
        DEFAULT_API_BASE_URL,
        validation_alias=AliasChoices("WORKOS_API_BASE_URL"),
        # The REST API and the JWKS live on api.workos.com even when tokens are issued by a
        # custom auth domain, so the base URL does not follow api_hostname.
        description="Where REST and JWKS calls go (a custom `api_hostname` does not move it); "
        "tests and emulators point it elsewhere.",
    )
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("AUTHKIT_DATABASE_URL"),
        description="`postgresql://` and `postgres://` URLs use psycopg 3; ignored with `engine=`.",
    )
    pool_size: int = Field(
        DEFAULT_POOL_SIZE,
        description="PostgreSQL: connections the engine keeps open (SQLAlchemy `pool_size`); "
        "ignored with `engine=`.",
    )
    max_overflow: int = Field(
        DEFAULT_MAX_OVERFLOW,
        description="PostgreSQL: connections the engine may open beyond `pool_size` under load "
        "(SQLAlchemy `max_overflow`); ignored with `engine=`.",
    )
    read_pool_size: int = Field(
        DEFAULT_READ_POOL_SIZE,
        description="PostgreSQL: connections of the async read pool `current_user` reads users "
        "through (SQLite reads on one thread and opens none).",
    )
    additional_event_types: tuple[str, ...] = Field(
        (),
        description="Event types the reconciler pulls from the Events API besides `user.*` and "
        "the handled ones (from the environment: a JSON list).",
    )
    webhook_tolerance: float = Field(
        180.0, description="Seconds of clock skew accepted on webhook signatures, both ways."
    )
    action_tolerance: float = Field(30.0, description="The same for Action requests.")
    prefix: str = Field(
        "/workos",
        description="Path prefix of the router: `{prefix}/webhook`, `{prefix}/action`.",
    )
    max_body_size: int = Field(
        ONE_MIB,
        description="Largest request body in bytes; larger ones get 413 without being buffered.",
    )
    create_tables: bool = Field(
        True,
        description="Create the missing `workos_*` tables at start-up (lifespan and command "
        "line); `False` when migrations own the schema.",
    )
    mirror: frozenset[OptionalKind] = Field(
        OPTIONAL_KINDS,
        description="The kinds mirrored besides users: `organization`, "
        "`organization_membership`, `session` (all by default). A kind left out changes no "
        "table; its events only run their own type's handlers.",
    )
    action_timeout: float = Field(
        5.0,
        description="Seconds an Action handler may take; past it the endpoint answers 504 and "
        "WorkOS applies the fallback.",
    )
    unhandled_action: UnhandledActionPolicy = Field(
        "deny",
        description='The verdict for an Action type with no handler: `"deny"` or `"allow"`.',
    )
    max_sync_action_handlers: int = Field(
        20,
        description="Sync Action handlers allowed to run at once (including ones past "
        "`action_timeout`); beyond it a request waits for a slot within its own "
        "`action_timeout`, and answers 503 at once when overrun handlers hold every slot.",
    )
    token_leeway: float = Field(
        10.0,
        description="Seconds of clock skew tolerated on access-token `exp`/`nbf`/`iat` (at "
        "most 300).",
    )
    jwks_cache_ttl: float = Field(
        600.0, description="Seconds fetched signing keys are trusted before a refresh."
    )
    jwks_refetch_cooldown: float = Field(
        30.0,
        description="Least seconds between two JWKS fetches (an unknown `kid` triggers one).",
    )
    jwks_timeout: float = Field(5.0, description="Timeout of one JWKS request, in seconds.")
    token_cache_size: int = Field(
        10_000,
        description="Verified access tokens remembered until they expire (0 turns the cache off).",
    )
    reject_revoked_sessions: bool = Field(
        True,
        description="`current_user` and every dependency built on it refuse (401) a token whose "
        "`sid` names a session mirrored as revoked: a sign-out takes effect at once.",
    )
    user_not_found_ttl: float = Field(
        5.0,
        description="Seconds a 404 from WorkOS for an unsynced user is remembered: meanwhile "
        "its tokens get 401 without a WorkOS call (0 turns it off).",
    )
    events_poll_interval: float | None = Field(
        None,
        description="Run the Events API catch-up every this many seconds from the lifespan "
        "(needs `api_key`); `None` runs no poller.",
    )
    events_range_start: timedelta | datetime = Field(
        timedelta(days=30),
        # A number is a duration (seconds), not a Unix timestamp.
        union_mode="left_to_right",
        description="Where the very first catch-up starts: a `timedelta` before now (from the "
        "environment: seconds or an ISO 8601 duration) or an aware `datetime`.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, then the environment (see `_Environment`), then the defaults."""
        return init_settings, _Environment(settings_cls), dotenv_settings, file_secret_settings

    # --- validation: the rules that need words -------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _as_configuration_error(
        cls, data: Any, handler: ValidatorFunctionWrapHandler
    ) -> AuthKitSettings:
        # One error type for every bad option, whichever way it was given; ConfigurationError is
        # not a ValueError, so pydantic lets it through unwrapped.
        try:
            settings: AuthKitSettings = handler(data)
        except ValidationError as exc:
            raise _configuration_error(exc) from None
        return settings

    @field_validator(*_EMPTY_IS_UNSET, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator(*_EMPTY_IS_DEFAULT, mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator(*_RULES)
    @classmethod
    def _follows_its_rule(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        allowed, message = _RULES[info.field_name]
        if not allowed(value):
            raise ValueError(message.format(value=value))
        return value

    @field_validator("max_sync_action_handlers", mode="before")
    @classmethod
    def _whole_slots(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():  # from the environment
            value = int(value)
        # A bool is an int to Python, and 2.5 would be rounded by a lax int: refuse both.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("max_sync_action_handlers must be a whole number, at least 1.")
        return value

    @field_validator("pool_size", "max_overflow", "read_pool_size", mode="before")
    @classmethod
    def _connection_count(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        name = info.field_name
        least = 0 if name == "max_overflow" else 1
        how = f"set it with AuthKit({name}=...) or {cls.environment_variable(name)}"
        if isinstance(value, str):  # from the environment
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"{name} must be a whole number (got {value!r}); {how}.") from None
        # A bool is an int to Python, and 2.5 would be rounded by a lax int: refuse both.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number (got {value!r}); {how}.")
        if value < least:
            raise ValueError(f"{name} must be at least {least} (got {value}); {how}.")
        return value

    @field_validator("events_range_start", mode="before")
    @classmethod
    def _seconds_are_a_duration(cls, value: Any) -> Any:
        # From the environment a number arrives as text, which pydantic would read as a Unix
        # timestamp; here it means seconds before now, like a number given in code.
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except (ValueError, OverflowError):
                return value
        return value

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def from_options(cls, **options: Any) -> AuthKitSettings:
        """Build from keyword options (``None`` means "not given": the environment, then the
        default), refusing an unknown keyword with a `TypeError` that names it."""
        cls.check_names(options)
        given = {name: value for name, value in options.items() if value is not None}
        try:
            return cls(**given)
        except SettingsError as exc:  # an environment value that is not even parseable
            raise ConfigurationError(str(exc)) from None

    def replace(self, **options: Any) -> AuthKitSettings:
        """A copy with ``options`` changed, validated again; the environment is not re-read."""
        type(self).check_names(options)
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update({name: value for name, value in options.items() if value is not None})
        return type(self).model_validate(values)

    @classmethod
    def check_names(cls, options: dict[str, Any]) -> None:
        """Raise `TypeError` naming the first keyword that is not an option."""
        for name in options:
            if name not in cls.model_fields:
                raise TypeError(
                    f"AuthKit() got an unexpected keyword argument {name!r}: it is not an "
                    "option (see AuthKitSettings, or the configuration guide, for the list)."
                )

    # --- slices and secrets -----------------------------------------------------------------------

    def token_settings(self) -> TokenSettings:
        """The slice the access-token verifier uses."""
        return TokenSettings(
            token_leeway=self.token_leeway,
            jwks_cache_ttl=self.jwks_cache_ttl,
            jwks_refetch_cooldown=self.jwks_refetch_cooldown,
            jwks_timeout=self.jwks_timeout,
            token_cache_size=self.token_cache_size,
        )

    def require_client_id(self, feature: str) -> str:
        """Return the client id, or raise a `ConfigurationError` that explains how to set it."""
        return _require(self.client_id, "WORKOS_CLIENT_ID", "client_id", feature)

    def require_api_key(self, feature: str) -> str:
        """Return the API key, or raise a `ConfigurationError` that explains how to set it."""
        return _require(_reveal(self.api_key), "WORKOS_API_KEY", "api_key", feature)

    def require_webhook_secret(self, feature: str = "the webhook endpoint") -> str:
        """Return the webhook signing secret, or raise a helpful `ConfigurationError`."""
        return _require(
            _reveal(self.webhook_secret), "WORKOS_WEBHOOK_SECRET", "webhook_secret", feature
        )

    def require_action_secret(self, feature: str = "the Actions endpoint") -> str:
        """Return the Actions signing secret, or raise a helpful `ConfigurationError`."""
        return _require(
            _reveal(self.action_secret), "WORKOS_ACTION_SECRET", "action_secret", feature
        )

    @classmethod
    def environment_variable(cls, name: str) -> str:
        """The environment variable option ``name`` is read from."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            first = alias.choices[0]
            assert isinstance(first, str)
            return first
        return f"{ENV_PREFIX}{name.upper()}"


@dataclass(frozen=True)
class TokenSettings:
    """The options the access-token verifier uses, cut from `AuthKitSettings` (see there)."""

    token_leeway: float
    jwks_cache_ttl: float
    jwks_refetch_cooldown: float
    jwks_timeout: float
    token_cache_size: int


def default_token_settings() -> TokenSettings:
    """The defaults of `AuthKitSettings`, without reading the environment."""
    return AuthKitSettings.model_construct().token_settings()


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _require(value: str | None, variable: str, option: str, feature: str) -> str:
    if not value:
        raise ConfigurationError(
            f"{variable} is not set; it is needed for {feature}: {_WHERE_TO_FIND[variable]}, then "
            f"set {variable} in the environment or pass AuthKit({option}=...)."
        )
    return value


def _configuration_error(error: ValidationError) -> ConfigurationError:
    by_alias = {
        AuthKitSettings.environment_variable(name).lower(): name
        for name in AuthKitSettings.model_fields
    }
    lines = []
    for detail in error.errors(include_url=False):
        where = str(detail["loc"][0]) if detail["loc"] else ""
        name = by_alias.get(where.lower(), where)
        if detail["type"] == "value_error":
            # Our own validators' messages name the option and say what is allowed.
            lines.append(str(detail["ctx"]["error"]))
            continue
        shown = "" if name in _SECRET_FIELDS else f" (got {detail['input']!r})"
        variable = (
            AuthKitSettings.environment_variable(name)
            if name in AuthKitSettings.model_fields
            else None
        )
        source = f" or {variable}" if variable else ""
        lines.append(f"{name}: {detail['msg']}{shown}; set it with AuthKit({name}=...){source}.")
    return ConfigurationError(" ".join(lines))
