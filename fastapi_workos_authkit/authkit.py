"""`AuthKit`: one object an app configures, registers handlers on, and mounts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
import httpx
from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine

from . import reconcile
from .actions import (
    MAX_SYNC_ACTION_HANDLERS,
    ActionHandler,
    ActionRegistry,
    ActionType,
    SyncHandlerSlots,
    UnhandledActionPolicy,
    add_action_route,
    check_action_options,
)
from .config import ONE_MIB, Clock, Settings
from .database import create_tables, make_engine
from .dependencies import (
    ClaimsDependency,
    CurrentUserDependency,
    OptionalUserDependency,
    RequireOrganization,
    RequirePermissions,
    RequireRoles,
    UserStore,
)
from .errors import ConfigurationError
from .handlers import EventHandler, HandlerRegistry
from .pipeline import EventPipeline
from .providers import AuthProvider, ProviderLike, coerce_providers, workos_providers
from .reconcile import EventsPoller
from .tokens import TokenOptions, TokenVerifier
from .webhooks import add_webhook_route
from .workos_api import WorkOSClient

logger = logging.getLogger("fastapi_workos_authkit")

H = TypeVar("H", bound=Callable[..., Any])
R = TypeVar("R", RequirePermissions, RequireRoles, RequireOrganization)


class AuthKit:
    """WorkOS AuthKit for one FastAPI app.

    Every option falls back to the environment, and nothing is demanded at construction: each
    feature asks for the secret it needs when it is mounted or used, with an error that names the
    variable and where to find its value.

    Args:
        client_id: WorkOS client id (``WORKOS_CLIENT_ID``), needed for tokens and the JWKS.
        api_key: WorkOS API key (``WORKOS_API_KEY``), needed for REST calls only.
        webhook_secret: Webhook signing secret (``WORKOS_WEBHOOK_SECRET``).
        action_secret: Actions signing secret (``WORKOS_ACTION_SECRET``).
        api_hostname: The AuthKit host tokens are issued by (``WORKOS_API_HOSTNAME``,
            default ``api.workos.com``).
        api_base_url: Where REST and JWKS calls go (default ``https://api.workos.com``, also with
            a custom ``api_hostname``); point it at a local fake in tests.
        engine: A SQLAlchemy engine to use; takes precedence over ``database_url``.
        database_url: Database URL (``AUTHKIT_DATABASE_URL``, default a SQLite file
            ``./workos_authkit.db``). ``postgresql://`` URLs use psycopg 3.
        pool_size: Steady connections of the engine AuthKit builds from a PostgreSQL
            ``database_url`` (``AUTHKIT_POOL_SIZE``, default 5); ignored with ``engine=``.
        max_overflow: Burst connections above ``pool_size`` of that engine
            (``AUTHKIT_MAX_OVERFLOW``, default 10); ignored with ``engine=``.
        read_pool_size: Connections of the ``current_user`` read pool, used on PostgreSQL when
            AuthKit builds the engine (``AUTHKIT_READ_POOL_SIZE``, default 5). A process opens
            at most `max_connections_per_process` connections in all.
        additional_event_types: Event types to pull from the Events API besides ``user.*`` and
            the types that have handlers.
        log_level: Level for the ``fastapi_workos_authkit`` logger (name or number).
        webhook_tolerance: Accepted clock skew of webhook signatures, in seconds (180).
        action_tolerance: Accepted clock skew of Action signatures, in seconds (30).
        prefix: Path prefix of the router (``/workos``).
        max_body_size: Largest accepted request body, in bytes (1 MiB).
        clock: Returns the current Unix time in seconds; injectable for tests.
        action_timeout: Time budget of an Action handler, in seconds (5). Past it the endpoint
            answers 504, logs an error and rolls back the handler's writes; WorkOS then applies
            the endpoint's fallback.
        unhandled_action: The verdict for an Action type with no handler, ``"deny"`` (default)
            or ``"allow"``; each such request is logged at WARNING.
        max_sync_action_handlers: How many sync Action handlers may run at once (20), counting
            those still running past ``action_timeout`` (a thread cannot be stopped). When all
            are busy the endpoint answers 503 at once rather than pile up threads and database
            connections.
        http_transport: The httpx transport for every call to WorkOS (REST and JWKS); tests pass
            a mock or an ASGI transport to a fake WorkOS.
        token_leeway: Clock skew tolerated on access-token ``exp``/``nbf``/``iat``, in seconds
            (10; at most 300).
        jwks_cache_ttl: How long fetched signing keys are trusted before a refresh, in seconds
            (600).
        jwks_refetch_cooldown: The least time between two JWKS fetches, in seconds (30): an
            unknown ``kid`` triggers a refetch, a flood of them at most one per cooldown.
        token_cache_size: How many verified access tokens are remembered until their ``exp``
            (10,000; 0 turns the cache off).
        extra_providers: More trusted token issuers besides the client's two WorkOS ones, as
            `AuthProvider` objects or seed-shaped dicts (for example `custom_domain_providers`
            for a custom auth domain). They are verified and emitted by `auth_config_providers`.
        events_poll_interval: Run `sync_events` every this many seconds from the lifespan
            (``None``, the default, runs no poller; see the reconciliation guide).
        events_range_start: Where the very first `sync_events` run starts: a ``timedelta``
            before now (default 30 days, all WorkOS keeps) or an aware ``datetime``. Later runs
            continue from their own cursor.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        api_key: str | None = None,
        webhook_secret: str | None = None,
        action_secret: str | None = None,
        api_hostname: str | None = None,
        api_base_url: str | None = None,
        engine: Engine | None = None,
        database_url: str | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        read_pool_size: int | None = None,
        additional_event_types: Iterable[str] = (),
        log_level: int | str | None = None,
        webhook_tolerance: float = 180.0,
        action_tolerance: float = 30.0,
        prefix: str = "/workos",
        max_body_size: int = ONE_MIB,
        clock: Clock = time.time,
        http_transport: httpx.AsyncBaseTransport | None = None,
        action_timeout: float = 5.0,
        unhandled_action: UnhandledActionPolicy = "deny",
        max_sync_action_handlers: int = MAX_SYNC_ACTION_HANDLERS,
        token_leeway: float = 10.0,
        jwks_cache_ttl: float = 600.0,
        jwks_refetch_cooldown: float = 30.0,
        token_cache_size: int = 10_000,
        extra_providers: Iterable[ProviderLike] = (),
        events_poll_interval: float | None = None,
        events_range_start: datetime | timedelta = timedelta(days=30),
    ) -> None:
        self.settings = Settings.resolve(
            client_id=client_id,
            api_key=api_key,
            webhook_secret=webhook_secret,
            action_secret=action_secret,
            api_hostname=api_hostname,
            api_base_url=api_base_url,
            database_url=database_url,
            additional_event_types=additional_event_types,
            log_level=log_level,
            webhook_tolerance=webhook_tolerance,
            action_tolerance=action_tolerance,
            prefix=prefix,
            max_body_size=max_body_size,
            pool_size=pool_size,
            max_overflow=max_overflow,
            read_pool_size=read_pool_size,
        )
        if self.settings.log_level is not None:
            logger.setLevel(self.settings.log_level)
        self.clock = clock
        self.http_transport = http_transport
        self._engine = engine
        self._owns_engine = engine is None
        if events_poll_interval is not None and events_poll_interval <= 0:
            raise ConfigurationError("events_poll_interval must be a positive number of seconds.")
        if isinstance(events_range_start, datetime) and events_range_start.tzinfo is None:
            raise ConfigurationError("events_range_start must be an aware datetime (UTC).")
        self.events_poll_interval = events_poll_interval
        self.events_range_start = events_range_start
        self.events_poller: EventsPoller | None = None
        self._workos_api: WorkOSClient | None = None
        self.handlers = HandlerRegistry()
        self.pipeline = EventPipeline(lambda: self.engine, self.handlers)
        check_action_options(action_timeout, unhandled_action)
        self.action_timeout = float(action_timeout)
        self.sync_action_slots = SyncHandlerSlots(max_sync_action_handlers)
        """Bounds the sync Action handler threads, those past ``action_timeout`` included."""
        self.unhandled_action: UnhandledActionPolicy = unhandled_action
        self.action_handlers = ActionRegistry()
        self.token_options = TokenOptions(
            token_leeway=float(token_leeway),
            jwks_cache_ttl=float(jwks_cache_ttl),
            jwks_refetch_cooldown=float(jwks_refetch_cooldown),
            token_cache_size=token_cache_size,
        )
        self.extra_providers = coerce_providers(extra_providers)
        self._token_verifier: TokenVerifier | None = None
        self.users = UserStore(self)
        self._requirements: dict[tuple[type, Any], Any] = {}
        # Stable objects, so `app.dependency_overrides[authkit.current_user]` works.
        self.current_user = CurrentUserDependency(self)
        """Dependency: the caller's synced `WorkOSUser` (401 without a valid token)."""
        self.optional_user = OptionalUserDependency(self)
        """Dependency: like `current_user`, but ``None`` when no token is sent."""
        self.claims = ClaimsDependency(self)
        """Dependency: the verified `AccessTokenClaims`, without a database read."""

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created on first use from ``database_url`` if none was given."""
        if self._engine is None:
            url = self.settings.database_url
            if _is_sqlite(url):
                self._engine = make_engine(url)
            else:
                self._engine = make_engine(
                    url,
                    pool_size=self.settings.pool_size,
                    max_overflow=self.settings.max_overflow,
                )
        return self._engine

    @property
    def max_connections_per_process(self) -> int | None:
        """The most PostgreSQL connections this process opens through AuthKit.

        ``pool_size + max_overflow`` of the engine AuthKit built, plus ``read_pool_size`` when
        ``current_user`` reads on its own pool (see the deployment guide's connection budget).
        ``None`` when it is not AuthKit's to know: an ``engine=`` of the app's (its own
        ``pool_size + max_overflow`` is the budget) or SQLite (no server connections).
        """
        if not self._owns_engine or _is_sqlite(self.settings.database_url):
            return None
        engine_pool = self.settings.pool_size + self.settings.max_overflow
        return engine_pool + self.users.read_pool_size()

    @property
    def owns_engine(self) -> bool:
        """Whether AuthKit builds the engine itself from ``database_url`` (no ``engine=`` given).

        Only then is it known to carry no ``connect_args``, ``creator`` or connect hooks of the
        app's, so the async PostgreSQL reader (which opens connections from the URL alone) may
        be chosen automatically; see `UserStore`.
        """
        return self._owns_engine

    def providers(self) -> list[AuthProvider]:
        """The trusted token issuers: the client's two WorkOS providers, then the extra ones.

        The JWKS URL is built from ``api_base_url``, so the defaults give exactly the seed's URLs
        and a test's fake WorkOS serves the keys.
        """
        client_id = self.settings.require_client_id("access-token verification")
        base = workos_providers(client_id, self.settings.api_hostname, self.settings.api_base_url)
        return [*base, *self.extra_providers]

    def auth_config_providers(self) -> list[dict[str, str]]:
        """`providers` in the seed's shape (``type, issuer, algorithm, jwks, applicationID``)."""
        return [provider.as_dict() for provider in self.providers()]

    @property
    def token_verifier(self) -> TokenVerifier:
        """The access-token verifier, built on first use from `providers` (needs the client id)."""
        if self._token_verifier is None:
            self._token_verifier = TokenVerifier(
                self.providers(),
                transport=self.http_transport,
                clock=self.clock,
                options=self.token_options,
            )
        return self._token_verifier

    def require_permissions(self, *permissions: str) -> RequirePermissions:
        """Dependency: 403 ``insufficient_scope`` unless the token grants every permission."""
        if not permissions:
            raise TypeError("require_permissions() needs at least one permission slug")
        return self._requirement(RequirePermissions, permissions)

    def require_roles(self, *roles: str) -> RequireRoles:
        """Dependency: 403 ``insufficient_scope`` unless the token has one of ``roles``."""
        if not roles:
            raise TypeError("require_roles() needs at least one role slug")
        return self._requirement(RequireRoles, roles)

    def require_organization(self, organization_id: str | None = None) -> RequireOrganization:
        """Dependency: 403 unless the session is scoped to an organization (this one, if given)."""
        return self._requirement(RequireOrganization, organization_id)

    def _requirement(self, kind: type[R], argument: Any) -> R:
        # The same arguments give the same object, so it can be a key of dependency_overrides.
        key = (kind, argument)
        if key not in self._requirements:
            self._requirements[key] = kind(self, argument)
        found: R = self._requirements[key]
        return found

    @property
    def workos_api(self) -> WorkOSClient:
        """The WorkOS REST client (created on first use; needs the API key)."""
        if self._workos_api is None:
            self._workos_api = WorkOSClient(
                base_url=self.settings.api_base_url,
                api_key=self.settings.require_api_key("calls to the WorkOS REST API"),
                transport=self.http_transport,
            )
        return self._workos_api

    @workos_api.setter
    def workos_api(self, client: WorkOSClient) -> None:
        # Tests inject a client with their own retry policy and sleep; shutdown closes it.
        self._workos_api = client

    async def sync_events(self, **options: Any) -> reconcile.SyncEventsResult:
        """Catch up from the Events API; see `reconcile.sync_events` for the options."""
        return await reconcile.sync_events(self, **options)

    async def backfill_users(self, **options: Any) -> reconcile.BackfillResult:
        """Copy every WorkOS user into the users table; see `reconcile.backfill_users`."""
        return await reconcile.backfill_users(self, **options)

    async def replay_failed(self, **options: Any) -> reconcile.ReplayResult:
        """Process failed ledger events again; see `reconcile.replay_failed`."""
        return await reconcile.replay_failed(self, **options)

    async def prune(self, **options: Any) -> reconcile.PruneResult:
        """Delete old processed ledger rows and tombstones; see `reconcile.prune`."""
        return await reconcile.prune(self, **options)

    async def sync_status(self, **options: Any) -> reconcile.SyncStatus:
        """Ledger counts, cursors, recent failures and leases; see `reconcile.sync_status`."""
        return await reconcile.sync_status(self, **options)

    def on(self, event_type: str) -> Callable[[H], H]:
        """Register a handler for ``event_type``; use as ``@authkit.on("user.created")``.

        The handler is called as ``handler(session, event)``, sync or async, inside the same
        transaction as the sync: if it raises, nothing is committed and the delivery is retried.
        Any event type may be handled; several handlers per type run in registration order.
        For user events the handlers follow the effective change to the user table (see the
        concepts guide): a ``user.updated`` that inserts a new row runs ``user.created``
        handlers, and an event that changes nothing runs none.
        """
        if not isinstance(event_type, str) or not event_type:
            raise TypeError("on() needs an event type such as 'user.created'")

        def register(handler: H) -> H:
            self.handlers.add(event_type, handler)
            return handler

        return register

    def add_handler(self, event_type: str, handler: EventHandler) -> None:
        """Register ``handler`` for ``event_type`` without the decorator syntax."""
        self.on(event_type)(handler)

    def action(self, action_type: ActionType) -> Callable[[H], H]:
        """Register the handler deciding ``action_type``: ``@authkit.action("user_registration")``.

        ``action_type`` is ``"user_registration"`` or ``"authentication"``; one handler each.
        The handler is called as ``handler(session, action, response)`` and returns
        ``response.allow()`` or ``response.deny(message)``. Sync handlers run in a worker thread,
        async ones on the event loop. The session is committed after a verdict and rolled back
        if the handler raises, runs past ``action_timeout`` or returns no verdict. See the
        Actions guide for the failure modes.
        """

        def register(handler: H) -> H:
            self.action_handlers.add(action_type, handler)
            return handler

        return register

    def add_action_handler(self, action_type: ActionType, handler: ActionHandler) -> None:
        """Register ``handler`` for ``action_type`` without the decorator syntax."""
        self.action(action_type)(handler)

    def router(self, *, webhooks: bool = True, actions: bool | None = None) -> APIRouter:
        """Build the router to mount with ``app.include_router(authkit.router())``.

        Register Action handlers before calling this: whether the Actions route is mounted is
        decided here.

        Args:
            webhooks: Mount ``POST {prefix}/webhook``. It needs the webhook secret, so this
                raises `ConfigurationError` at start-up when it is missing; an app that only
                uses Actions passes ``webhooks=False``.
            actions: Mount ``POST {prefix}/action``. ``None`` (default) mounts it when at least
                one Action handler is registered. It needs the action secret, so this raises
                `ConfigurationError` at start-up when it is missing.
        """
        router = APIRouter(prefix=self.settings.prefix, tags=["WorkOS"])
        if webhooks:
            add_webhook_route(router, self)
        if actions or (actions is None and self.action_handlers):
            add_action_route(router, self)
        return router

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Start-up and shutdown: ``FastAPI(lifespan=authkit.lifespan)``.

        Creates missing tables. An app with its own lifespan nests it:
        ``async with authkit.lifespan(app): yield``.
        """
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """What the lifespan does on start-up; call it yourself if you cannot use the lifespan."""
        await anyio.to_thread.run_sync(create_tables, self.engine)
        await self.users.open()
        if self.events_poll_interval is not None and self.events_poller is None:
            self.settings.require_api_key("the Events API poller (events_poll_interval)")
            self.events_poller = EventsPoller(self.sync_events, self.events_poll_interval)
            self.events_poller.start()
        if self.settings.client_id:
            # Warm the signing keys so the first request does not wait; a failure only warns
            # (the app starts, and the keys are fetched on the first token instead).
            await self.token_verifier.preload()

    async def shutdown(self) -> None:
        """What the lifespan does on shutdown: stop the poller, close the WorkOS client."""
        if self.events_poller is not None:
            await self.events_poller.stop()
            self.events_poller = None
        if self._workos_api is not None:
            await self._workos_api.aclose()
            self._workos_api = None
        if self._token_verifier is not None:
            await self._token_verifier.aclose()
        await self.users.aclose()


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")
