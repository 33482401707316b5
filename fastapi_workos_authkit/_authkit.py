"""`AuthKit`: one object an app configures, registers handlers on, and mounts.

Longer than 400 lines on purpose: it is the one facade, and each of its public methods carries
the docstring the API reference renders; the work itself lives in the feature modules, which
each receive only their collaborators from here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
import httpx
from fastapi import APIRouter, FastAPI
from fastapi.openapi.models import OAuth2
from sqlalchemy import Engine

from ._auth.dependencies import (
    AccessTokenBearer,
    BearerAuth,
    ClaimsDependency,
    CurrentMembershipDependency,
    CurrentOrganizationDependency,
    CurrentUserDependency,
    OptionalUserDependency,
    OrganizationStore,
    RequireOrganization,
    RequirePermissions,
    RequireRoles,
    UserStore,
)
from ._auth.providers import AuthProvider, ProviderLike, coerce_providers, workos_providers
from ._auth.tokens import TokenVerifier
from ._config import AuthKitSettings, Clock
from ._lifespan_tasks import LifespanTasks
from ._ops.profile import AppProfile, handler_names
from ._recovery.backfill import backfill_memberships, backfill_organizations, backfill_users
from ._recovery.events_sync import event_types_in_play, sync_events
from ._recovery.poller import EventsPoller
from ._recovery.prune import DEFAULT_SESSION_RETENTION, prune
from ._recovery.reconcile_results import (
    BackfillResult,
    ProgressCallback,
    PruneResult,
    ReplayResult,
    SyncEventsResult,
    SyncStatus,
)
from ._recovery.recovery import DEFAULT_RETENTION, Recovery
from ._recovery.replay import replay_failed
from ._recovery.status import sync_status
from ._recovery.workos_api import WorkOSClient
from ._routes.actions import (
    ActionHandler,
    ActionRegistry,
    ActionType,
    SyncHandlerSlots,
    add_action_route,
)
from ._routes.openapi_responses import document_auth_responses
from ._routes.swagger import TOKEN_PATH, add_swagger_token_route, authorization_url, oauth2_scheme
from ._routes.webhooks import add_webhook_route
from ._sync.database import create_tables as create_package_tables
from ._sync.database import make_engine
from ._sync.handlers import EventHandler, HandlerRegistry
from ._sync.pipeline import EventPipeline

H = TypeVar("H", bound=Callable[..., Any])

_OVERRIDABLE = frozenset(
    {
        "client_id",
        "api_key",
        "webhook_secret",
        "action_secret",
        "api_base_url",
        "api_hostname",
        "database_url",
        "create_tables",
        "token_leeway",
        "jwks_cache_ttl",
        "jwks_refetch_cooldown",
        "jwks_timeout",
        "token_cache_size",
    }
)
"""The options `AuthKit.override` may change: those read when used, not when built."""
R = TypeVar("R", RequirePermissions, RequireRoles, RequireOrganization)


class AuthKit:
    """WorkOS AuthKit for one FastAPI app.

    The options are the fields of `AuthKitSettings`: pass them as keywords
    (``AuthKit(client_id=..., webhook_secret=...)``), or pass a ready `AuthKitSettings`, or both
    (the keywords then change that object's values). Each option falls back to its environment
    variable, then to its default; the configuration guide lists them all. Nothing is demanded
    at construction: each feature asks for the secret it needs when it is mounted or used, with
    an error that names the variable and where to find its value. An invalid value raises
    `ConfigurationError` naming the option, an unknown keyword `TypeError`.

    Args:
        settings: The options, as one object; ``None`` builds it from ``options`` and the
            environment.
        engine: A SQLAlchemy engine to use; takes precedence over ``database_url``.
        clock: Returns the current Unix time in seconds; injectable for tests.
        http_transport: The httpx transport for every call to WorkOS (REST and JWKS); tests pass
            a mock or an ASGI transport to a fake WorkOS.
        extra_providers: More trusted token issuers besides the client's two WorkOS ones, as
            `AuthProvider` objects or seed-shaped dicts (for example `custom_domain_providers`
            for a custom auth domain). They are verified and emitted by `auth_config_providers`.
        **options: Any field of `AuthKitSettings` (``client_id``, ``webhook_secret``,
            ``prefix``, ``action_timeout``...). ``None`` means "not given".
    """

    def __init__(
        self,
        settings: AuthKitSettings | None = None,
        *,
        engine: Engine | None = None,
        clock: Clock = time.time,
        http_transport: httpx.AsyncBaseTransport | None = None,
        extra_providers: Iterable[ProviderLike] = (),
        **options: Any,
    ) -> None:
        if settings is None:
            settings = AuthKitSettings.from_options(**options)
        elif options:
            settings = settings.replace(**options)
        self.settings: AuthKitSettings = settings
        """The options of this instance (read-only)."""
        self.clock = clock
        self.http_transport = http_transport
        self._engine = engine
        self._owns_engine = engine is None
        self.events_poller: EventsPoller | None = None
        self._workos_api: WorkOSClient | None = None
        self.handlers = HandlerRegistry()
        self.pipeline = EventPipeline(lambda: self.engine, self.handlers, mirror=settings.mirror)
        self._recovery = Recovery(
            engine=lambda: self.engine,
            pipeline=self.pipeline,
            workos=lambda: self.workos_api,
            clock=clock,
            handled_event_types=self.handlers.event_types,
            additional_event_types=tuple(self.settings.additional_event_types),
            events_range_start=settings.events_range_start,
            max_connections_per_process=lambda: self.max_connections_per_process,
        )
        self.sync_action_slots = SyncHandlerSlots(settings.max_sync_action_handlers)
        """Bounds the sync Action handler threads, those past ``action_timeout`` included."""
        self.action_handlers = ActionRegistry()
        self.extra_providers = coerce_providers(extra_providers)
        self._token_verifier: TokenVerifier | None = None
        # The lifespan's task group, for the JWKS refreshes no request should wait for. Kept
        # here, not in the verifier: `override` rebuilds the verifier while a lifespan runs.
        self._lifespan_tasks = LifespanTasks()
        self.users = UserStore(
            engine=lambda: self.engine,
            owns_engine=self._owns_engine,
            pipeline=self.pipeline,
            workos_api=self._workos_api_if_configured,
            clock=clock,
            not_found_ttl=settings.user_not_found_ttl,
            read_pool_size=settings.read_pool_size,
            # Without the sessions table there is nothing to check: keep the plain user read.
            reject_revoked_sessions=settings.reject_revoked_sessions
            and "session" in settings.mirror,
        )
        self.organizations = OrganizationStore(
            engine=lambda: self.engine,
            pipeline=self.pipeline,
            workos_api=self._workos_api_if_configured,
            clock=clock,
            not_found_ttl=settings.user_not_found_ttl,
        )
        self._auth = BearerAuth(
            verifier=lambda: self.token_verifier, users=self.users, organizations=self.organizations
        )
        self._requirements: dict[tuple[type, Any], Any] = {}
        # Set by `swagger_ui_oauth`: the OAuth2 scheme every dependency then declares.
        self._security_model: OAuth2 | None = None
        # Stable objects, so `app.dependency_overrides[authkit.current_user]` works.
        self.current_user = CurrentUserDependency(self._auth)
        """Dependency: the caller's synced `WorkOSUser` (401 without a valid token)."""
        self.optional_user = OptionalUserDependency(self._auth)
        """Dependency: like `current_user`, but ``None`` when no token is sent."""
        self.claims = ClaimsDependency(self._auth)
        """Dependency: the verified `AccessTokenClaims`, without a database read."""
        self.current_organization = CurrentOrganizationDependency(self._auth)
        """Dependency: the `WorkOSOrganization` the caller's token is scoped to (``org_id``);
        403 without one, or when it was deleted or cannot be fetched."""
        self.current_membership = CurrentMembershipDependency(self._auth)
        """Dependency: the caller's active `WorkOSOrganizationMembership` in the token's
        organization; 403 when there is none, or it is not active."""

    @property
    def events_poll_interval(self) -> float | None:
        """``settings.events_poll_interval``: seconds between two poller runs, or ``None``."""
        return self.settings.events_poll_interval

    @property
    def events_range_start(self) -> datetime | timedelta:
        """``settings.events_range_start``: where the very first `sync_events` run starts."""
        return self.settings.events_range_start

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

    def app_profile(self) -> AppProfile:
        """What `run_doctor` and the webhook-endpoint functions read of this app, taken now.

        The event types in play, the handlers by name and whether Action handlers exist are
        read when it is built; the engine, the WorkOS client, the JWKS URLs and the connection
        count stay getters, built on first use as here. Apps rarely need it: those functions
        take the `AuthKit` and call this themselves.
        """
        return AppProfile(
            settings=self.settings,
            engine=lambda: self.engine,
            workos_api=lambda: self.workos_api,
            jwks_urls=lambda: sorted({provider.jwks for provider in self.providers()}),
            http_transport=self.http_transport,
            clock=self.clock,
            max_connections_per_process=lambda: self.max_connections_per_process,
            event_types_in_play=tuple(event_types_in_play(self._recovery)),
            mirrored_kinds=self.pipeline.mirrored,
            handler_names=handler_names(self.handlers),
            has_action_handlers=bool(self.action_handlers),
        )

    @property
    def token_verifier(self) -> TokenVerifier:
        """The access-token verifier, built on first use from `providers` (needs the client id)."""
        if self._token_verifier is None:
            self._token_verifier = TokenVerifier(
                self.providers(),
                transport=self.http_transport,
                clock=self.clock,
                options=self.settings.token_settings(),
                tasks=self._lifespan_tasks,
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
            requirement = kind(self._auth, argument)
            if self._security_model is not None:
                requirement.model = self._security_model
            self._requirements[key] = requirement
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

    def _api_key_if_set(self) -> str | None:
        key = self.settings.api_key
        return None if key is None else key.get_secret_value()

    def _workos_api_if_configured(self) -> WorkOSClient | None:
        # The just-in-time fetch treats a missing API key as "not synced yet", not as an error.
        return self.workos_api if self.settings.api_key is not None else None

    async def sync_events(
        self,
        *,
        progress: ProgressCallback | None = None,
        lease_ttl: float = 60.0,
        restart_from: datetime | timedelta | None = None,
    ) -> SyncEventsResult:
        """Catch up from the Events API: process every event of the types in play since the
        job's own cursor, each once, through the same pipeline as webhooks.

        Args:
            progress: Called with a `Progress` after every page.
            lease_ttl: Seconds the ``sync_events`` lease lasts without renewal; another
                instance may take it over after that.
            restart_from: Forget the cursor and start again from this moment (an aware
                ``datetime``, or a ``timedelta`` before now); the ledger skips what was
                already processed.

        The cursor, the event types it was advanced for, poison events and failures are
        described in `fastapi_workos_authkit._recovery.events_sync.sync_events`.
        """
        return await sync_events(
            self._recovery, progress=progress, lease_ttl=lease_ttl, restart_from=restart_from
        )

    async def backfill_users(
        self,
        *,
        run_handlers: bool = True,
        restart: bool = False,
        progress: ProgressCallback | None = None,
        lease_ttl: float = 60.0,
    ) -> BackfillResult:
        """Copy every WorkOS user into the users table, oldest first, a page per transaction.

        Args:
            run_handlers: Run the ``user.created`` / ``user.updated`` handlers of each
                inserted or refreshed row, in the page's transaction.
            restart: Ignore the cursor an interrupted run left, and start from the first user.
            progress: Called with a `Progress` after every page.
            lease_ttl: Seconds the ``backfill_users`` lease lasts without renewal.

        See `fastapi_workos_authkit._recovery.backfill.backfill_users` for resuming and failures.
        """
        return await backfill_users(
            self._recovery,
            run_handlers=run_handlers,
            restart=restart,
            progress=progress,
            lease_ttl=lease_ttl,
        )

    async def backfill_organizations(
        self,
        *,
        run_handlers: bool = True,
        restart: bool = False,
        progress: ProgressCallback | None = None,
        lease_ttl: float = 60.0,
    ) -> BackfillResult:
        """Copy every WorkOS organization into ``workos_organizations``, a page per
        transaction, with the contract of `backfill_users` (lease ``backfill_organizations``).

        Raises `ConfigurationError` if organizations are not mirrored (``AuthKit(mirror=...)``).
        See `fastapi_workos_authkit._recovery.backfill.backfill_organizations`.
        """
        return await backfill_organizations(
            self._recovery,
            run_handlers=run_handlers,
            restart=restart,
            progress=progress,
            lease_ttl=lease_ttl,
        )

    async def backfill_memberships(
        self,
        *,
        run_handlers: bool = True,
        restart: bool = False,
        progress: ProgressCallback | None = None,
        lease_ttl: float = 60.0,
    ) -> BackfillResult:
        """Copy every WorkOS organization membership, of every status, into
        ``workos_organization_memberships``, listed organization by organization, with the
        contract of `backfill_users` (lease ``backfill_memberships``).

        Raises `ConfigurationError` if memberships are not mirrored (``AuthKit(mirror=...)``).
        See `fastapi_workos_authkit._recovery.backfill.backfill_memberships`.
        """
        return await backfill_memberships(
            self._recovery,
            run_handlers=run_handlers,
            restart=restart,
            progress=progress,
            lease_ttl=lease_ttl,
        )

    async def replay_failed(
        self, *, limit: int | None = None, progress: ProgressCallback | None = None
    ) -> ReplayResult:
        """Process the failed ledger events again, oldest first, through the pipeline.

        Args:
            limit: Replay at most this many (all by default).
            progress: Called with a `Progress` after every event.
        """
        return await replay_failed(self._recovery, limit=limit, progress=progress)

    async def prune(
        self,
        *,
        ledger_retention: timedelta = DEFAULT_RETENTION,
        tombstone_retention: timedelta = DEFAULT_RETENTION,
        session_retention: timedelta = DEFAULT_SESSION_RETENTION,
    ) -> PruneResult:
        """Delete processed ledger rows and tombstones older than their retention periods
        (30 days by default, at least 3), never past what `sync_events` may still replay, and
        sessions that ended or expired more than ``session_retention`` ago (7 days by default,
        at least 3).

        See `fastapi_workos_authkit._recovery.prune.prune`.
        """
        return await prune(
            self._recovery,
            ledger_retention=ledger_retention,
            tombstone_retention=tombstone_retention,
            session_retention=session_retention,
        )

    async def sync_status(self, *, failures: int = 10) -> SyncStatus:
        """Ledger counts by status, the cursors, the ``failures`` latest failures and the
        leases."""
        return await sync_status(self._recovery, failures=failures)

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

    def router(
        self, *, webhooks: bool = True, actions: bool | None = None, swagger: bool = False
    ) -> APIRouter:
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
            swagger: Mount ``POST {prefix}/swagger/token``, the token URL of Swagger UI's
                Authorize button (see `swagger_ui_oauth`). It exchanges a sign-in code at
                WorkOS, so it needs the client id, and this raises `ConfigurationError` at
                start-up when it is missing; the API key is added as ``client_secret`` when
                one is set.
        """
        router = APIRouter(prefix=self.settings.prefix, tags=["WorkOS"])
        settings = self.settings
        if webhooks:
            settings.require_webhook_secret()  # missing: fail now, at start-up
            add_webhook_route(
                router,
                # Read on every delivery, so that `override` re-points a mounted app.
                secret=lambda: self.settings.require_webhook_secret(),
                tolerance=settings.webhook_tolerance,
                max_body_size=settings.max_body_size,
                clock=self.clock,
                pipeline=self.pipeline,
            )
        if actions or (actions is None and self.action_handlers):
            settings.require_action_secret()
            add_action_route(
                router,
                secret=lambda: self.settings.require_action_secret(),
                tolerance=settings.action_tolerance,
                max_body_size=settings.max_body_size,
                clock=self.clock,
                engine=lambda: self.engine,
                handlers=self.action_handlers,
                slots=self.sync_action_slots,
                timeout=settings.action_timeout,
                unhandled=settings.unhandled_action,
            )
        if swagger:
            settings.require_client_id("Swagger UI sign-in (router(swagger=True))")
            add_swagger_token_route(
                router,
                client_id=lambda: self.settings.require_client_id("Swagger UI sign-in"),
                api_key=self._api_key_if_set,
                api_base_url=lambda: self.settings.api_base_url,
                transport=lambda: self.http_transport,
            )
        return router

    def swagger_ui_oauth(
        self, *, scopes: Sequence[str] = (), token_url: str | None = None
    ) -> dict[str, Any]:
        """Turn on Swagger UI sign-in: ``FastAPI(swagger_ui_init_oauth=authkit.swagger_ui_oauth())``
        (with ``app.include_router(authkit.router(swagger=True))``).

        Returns the ``initOAuth`` options of Swagger UI (the client id, PKCE on), and makes the
        OpenAPI security scheme of every dependency of this instance an OAuth2
        authorization-code flow: its ``authorizationUrl`` is WorkOS's
        ``{api_base_url}/user_management/authorize?provider=authkit`` and its ``tokenUrl`` the
        exchange route that ``router(swagger=True)`` mounts. The Authorize button of ``/docs``
        then signs in through AuthKit; requests still carry ``Authorization: Bearer <token>``,
        so API clients sending their own token are unaffected.

        Register ``https://<your app>/docs/oauth2-redirect`` (FastAPI's
        ``swagger_ui_oauth2_redirect_url``) as a redirect URI in the WorkOS dashboard.

        Args:
            scopes: OAuth2 scopes to ask for; AuthKit needs none.
            token_url: The exchange route's URL as the browser reaches it; defaults to
                ``{prefix}/swagger/token`` (give the full path when the app is mounted under a
                ``root_path``).

        Raises `ConfigurationError` when the client id is not set.
        """
        client_id = self.settings.require_client_id("Swagger UI sign-in (swagger_ui_oauth)")
        self._security_model = oauth2_scheme(
            authorization_url=authorization_url(self.settings.api_base_url),
            token_url=token_url or f"{self.settings.prefix}{TOKEN_PATH}",
            scopes=scopes,
        )
        for dependency in [*vars(self).values(), *self._requirements.values()]:
            if isinstance(dependency, AccessTokenBearer):
                dependency.model = self._security_model
        init: dict[str, Any] = {"clientId": client_id, "usePkceWithAuthorizationCodeGrant": True}
        if scopes:
            init["scopes"] = " ".join(scopes)
        return init

    def document_responses(self, app: FastAPI) -> bool:
        """Add the 401, 403 and 503 answers to the OpenAPI schema of ``app``'s routes that use
        ``current_user``, ``optional_user``, ``claims`` or a ``require_*`` dependency.

        The lifespan does it on start-up; call it yourself when you build the schema without
        running the lifespan (a script exporting ``openapi.json``, say). Answers a route
        documents itself are kept. Returns False if it was already done for this app.
        """
        return document_auth_responses(app)

    @asynccontextmanager
    async def override(
        self,
        *,
        engine: Engine | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> AsyncIterator[AuthKit]:
        """Point this instance at other credentials, a database and a transport for a while.

        For tests of an app that builds its `AuthKit` at import (``authkit = AuthKit()`` at
        module level): ``async with authkit.override(**workos_authkit_options):`` re-points
        it at the testing kit's fake WorkOS and a fresh database, with no private attribute.
        The routes already mounted read the webhook and Action secrets on every request, and
        the token verifier, the WorkOS client and the user cache are rebuilt on first use, so
        the mounted app follows. On exit, what was built meanwhile is closed (and an engine
        made from ``database_url`` disposed), and the previous configuration comes back.

        Args:
            engine: The engine to use meanwhile; takes precedence over ``database_url``.
            http_transport: The httpx transport for every call to WorkOS meanwhile.
            **options: Options read when used: ``client_id``, ``api_key``,
                ``webhook_secret``, ``action_secret``, ``api_base_url``, ``api_hostname``,
                ``database_url``, ``create_tables`` and the token ones (``token_leeway``,
                ``jwks_cache_ttl``...). The others shape the routes or the pipeline when they
                are built, so they raise `TypeError` here: build a new `AuthKit` for those.

        Not re-entrant, and not for a running production app: requests in flight would see
        either configuration.
        """
        fixed = sorted(set(options) - _OVERRIDABLE)
        if fixed:
            raise TypeError(
                f"override() cannot change {', '.join(fixed)}: these options are fixed when "
                "the AuthKit or its router is built; build a new AuthKit instead (only "
                f"{', '.join(sorted(_OVERRIDABLE))} may be overridden)"
            )
        saved = (
            self.settings,
            self._engine,
            self._owns_engine,
            self.http_transport,
            self._token_verifier,
            self._workos_api,
        )
        self.settings = self.settings.replace(**options)
        if engine is not None:
            self._engine, self._owns_engine = engine, False
        elif "database_url" in options:
            self._engine, self._owns_engine = None, True
        if http_transport is not None:
            self.http_transport = http_transport
        self._token_verifier = None
        self._workos_api = None
        await self.users.rebind(owns_engine=self._owns_engine)
        self.organizations.forget()
        built_engine = engine is None and "database_url" in options
        try:
            yield self
        finally:
            await self.shutdown()
            if built_engine and self._engine is not None:
                self._engine.dispose()
            (
                self.settings,
                self._engine,
                self._owns_engine,
                self.http_transport,
                self._token_verifier,
                self._workos_api,
            ) = saved
            await self.users.rebind(owns_engine=self._owns_engine)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Start-up and shutdown: ``FastAPI(lifespan=authkit.lifespan)``.

        Creates the missing tables (unless ``create_tables=False``), and documents the 401,
        403 and 503 answers of the app's routes that use this package's dependencies (see
        `document_responses`). While the app runs, it holds the task group where stale signing
        keys are refreshed without making a request wait. An app with its own lifespan nests
        it: ``async with authkit.lifespan(app): yield``.
        """
        if app is not None:
            self.document_responses(app)
        await self.startup()
        try:
            # Inside startup/shutdown: the group ends (its refreshes cancelled) before shutdown
            # closes the JWKS clients they use.
            async with self._lifespan_tasks.running():
                yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """What the lifespan does on start-up; call it yourself if you cannot use the lifespan.

        Without the lifespan there is no task group to refresh stale signing keys in the
        background: the request that finds them stale refreshes them (see `lifespan`).
        """
        if self.settings.create_tables:
            await anyio.to_thread.run_sync(create_package_tables, self.engine)
        await self.users.open()
        if self.events_poll_interval is not None and self.events_poller is None:
            self.settings.require_api_key("the Events API poller (events_poll_interval)")
        if self.settings.client_id:
            # Warm the signing keys so the first request does not wait; a failure only warns
            # (the app starts, and the keys are fetched on the first token instead).
            await self.token_verifier.preload()
        if self.events_poll_interval is not None and self.events_poller is None:
            # Last: its task group stays open until shutdown, so nothing after it may fail.
            self.events_poller = EventsPoller(self.sync_events, self.events_poll_interval)
            await self.events_poller.start()

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
