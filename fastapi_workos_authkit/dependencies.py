"""FastAPI dependencies: who is calling, as verified claims or as the synced `WorkOSUser` row.

Every dependency is a stable object on the `AuthKit` instance (``authkit.current_user``...), so
``app.dependency_overrides[authkit.current_user]`` works. They all read the bearer token through
one `HTTPBearer` scheme, so ``/docs`` shows an Authorize button, and they work on WebSocket routes
too. Errors follow RFC 6750. The token is verified once per request, however many dependencies
ask, and never logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import anyio.to_thread
from fastapi import HTTPException, Security, WebSocketException, status
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPBearer
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import make_transient_to_detached

from .database import is_unavailable
from .errors import DatabaseUnavailableError, HandlerError
from .tables import WorkOSUser, WorkOSUserTombstone
from .tokens import AccessTokenClaims, InvalidTokenError, KeysUnavailableError
from .workos_api import WorkOSAPIError

if TYPE_CHECKING:
    from .authkit import AuthKit

logger = logging.getLogger("fastapi_workos_authkit")

_SCOPE_KEY = "fastapi_workos_authkit.claims"
_WS_POLICY_VIOLATION = 1008  # RFC 6455: the close code for "not allowed"
_WS_TRY_AGAIN_LATER = 1013


class AccessTokenBearer(HTTPBearer):
    """The HTTP Bearer security scheme, readable on HTTP and WebSocket connections alike.

    FastAPI's `HTTPBearer` takes a `Request`, which a WebSocket route cannot provide; this one
    takes the common `HTTPConnection`. It never errors itself: the `AuthKit` dependencies decide
    whether a missing token is an error, and answer in RFC 6750 form.
    """

    def __init__(self) -> None:
        super().__init__(
            scheme_name="WorkOSAccessToken",
            bearerFormat="JWT",
            description=(
                "An AuthKit access token, as returned by `getAccessToken()` in the WorkOS "
                "frontend SDKs: `Authorization: Bearer <token>`."
            ),
            auto_error=False,
        )

    async def __call__(self, connection: HTTPConnection) -> str | None:  # type: ignore[override]
        """The bearer token, ``None`` without one; `InvalidTokenError` if the header is broken."""
        header = connection.headers.get("authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None  # another scheme (Basic...) carries no bearer credentials
        token = token.strip()
        if not token or " " in token:
            raise _refuse(connection, "The Authorization header must be 'Bearer <token>'")
        return token


bearer_scheme = AccessTokenBearer()
"""The one bearer scheme every `AuthKit` dependency reads (one entry in the OpenAPI schema)."""

BearerToken = Annotated[str | None, Security(bearer_scheme)]


def _quote(value: str) -> str:
    # RFC 6750 attribute values are quoted strings; our messages never need a quote or backslash.
    return value.replace("\\", "").replace('"', "'")


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = []
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quote(description)}"')
    if scope:
        parts.append(f'scope="{_quote(scope)}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def _is_websocket(connection: HTTPConnection) -> bool:
    return connection.scope.get("type") == "websocket"


def _unauthenticated(connection: HTTPConnection) -> Exception:
    message = "Authentication required: send 'Authorization: Bearer <access token>'"
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, message)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": _challenge()}
    )


def _refuse(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        description,
        headers={"WWW-Authenticate": _challenge("invalid_token", description)},
    )


def _forbid(connection: HTTPConnection, description: str, scope: str = "") -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        description,
        headers={"WWW-Authenticate": _challenge("insufficient_scope", description, scope)},
    )


def _unavailable(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_TRY_AGAIN_LATER, description)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, description, headers={"Retry-After": "5"}
    )


async def verified_claims(
    authkit: AuthKit, connection: HTTPConnection, token: str | None, *, required: bool
) -> AccessTokenClaims | None:
    """Verify the request's token once; later calls in the same request reuse the result."""
    if token is None:
        if required:
            raise _unauthenticated(connection)
        return None
    cached = connection.scope.get(_SCOPE_KEY)
    if cached is not None and cached[0] is authkit:
        claims: AccessTokenClaims = cached[1]
        return claims
    try:
        claims = await authkit.token_verifier.verify(token)
    except InvalidTokenError as exc:
        logger.info("access token refused: %s", exc)
        raise _refuse(connection, str(exc)) from None
    except KeysUnavailableError as exc:
        raise _unavailable(connection, str(exc)) from None
    connection.scope[_SCOPE_KEY] = (authkit, claims)
    return claims


class UserNotFoundError(Exception):
    """The token is valid but its user is unknown, deleted, or not synced (answer 401)."""


class UserStore:
    """Reads `WorkOSUser` rows by primary key, and fetches unsynced users just in time.

    The read is one compiled Core ``SELECT`` on a pooled connection, turned into a detached
    `WorkOSUser` (it can be merged into an app session like any loaded row). That is several
    times cheaper than an ORM ``Session.get``, which is the point: it runs on every request.
    """

    def __init__(self, authkit: AuthKit) -> None:
        self._authkit = authkit
        table = WorkOSUser.__table__  # type: ignore[attr-defined]
        self._by_id = select(table).where(table.c.id == bindparam("user_id"))
        # Column name -> attribute name ("metadata" is stored in user_metadata).
        self._attributes = {
            column.key: prop.key
            for prop in WorkOSUser.__mapper__.column_attrs  # type: ignore[attr-defined]
            for column in prop.columns
        }

    def read(self, user_id: str) -> WorkOSUser | None:
        """The row for ``user_id``, or ``None``. Synchronous; raises `DatabaseUnavailableError`."""
        engine: Engine = self._authkit.engine
        try:
            with engine.connect() as connection:
                row = connection.execute(self._by_id, {"user_id": user_id}).first()
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailableError("The database is unavailable") from exc
            raise
        if row is None:
            return None
        mapping = row._mapping
        user = WorkOSUser(**{self._attributes[name]: mapping[name] for name in mapping})
        make_transient_to_detached(user)
        return user

    def is_tombstoned(self, user_id: str) -> bool:
        """Whether ``user_id`` was deleted."""
        try:
            with self._authkit.engine.connect() as connection:
                table = WorkOSUserTombstone.__table__  # type: ignore[attr-defined]
                found = connection.execute(
                    select(table.c.user_id).where(table.c.user_id == user_id)
                ).first()
        except SQLAlchemyError as exc:
            if is_unavailable(exc):
                raise DatabaseUnavailableError("The database is unavailable") from exc
            raise
        return found is not None

    async def load(self, user_id: str) -> WorkOSUser:
        """The synced row, fetched from WorkOS just in time when it is not there yet.

        Raises:
            UserNotFoundError: deleted, unknown to WorkOS, or unsynced without an API key.
            DatabaseUnavailableError: the database is down.
            WorkOSAPIError: WorkOS could not be asked.
        """
        user = await anyio.to_thread.run_sync(self.read, user_id)
        if user is not None:
            return user
        return await self._just_in_time(user_id)

    async def _just_in_time(self, user_id: str) -> WorkOSUser:
        # The first request after sign-up can beat the user.created webhook.
        if not self._authkit.settings.api_key:
            raise UserNotFoundError("The user is not synced yet")
        if await anyio.to_thread.run_sync(self.is_tombstoned, user_id):
            raise UserNotFoundError("The user was deleted")
        snapshot = await self._authkit.workos_api.get_user(user_id)
        if snapshot is None or snapshot.id != user_id:
            raise UserNotFoundError("The user does not exist")
        pipeline = self._authkit.pipeline
        await anyio.to_thread.run_sync(lambda: pipeline.apply_user_snapshot(snapshot, source="jit"))
        user = await anyio.to_thread.run_sync(self.read, user_id)
        if user is None:  # a tombstone won the race
            raise UserNotFoundError("The user was deleted")
        logger.info("user %s fetched just in time", user_id)
        return user


class _Dependency:
    """Base of the dependencies bound to one `AuthKit`."""

    def __init__(self, authkit: AuthKit) -> None:
        self._authkit = authkit

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class ClaimsDependency(_Dependency):
    """``authkit.claims``: the verified `AccessTokenClaims`, with no database access."""

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> AccessTokenClaims:
        claims = await verified_claims(self._authkit, connection, token, required=True)
        assert claims is not None
        return claims


class CurrentUserDependency(_Dependency):
    """``authkit.current_user``: the synced `WorkOSUser` of the caller, or 401."""

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> WorkOSUser:
        claims = await verified_claims(self._authkit, connection, token, required=True)
        assert claims is not None
        return await _load_user(self._authkit, connection, claims)


class OptionalUserDependency(_Dependency):
    """``authkit.optional_user``: like ``current_user``, but ``None`` without credentials.

    A token that is present but invalid is still refused with 401: a broken token is a client
    bug to surface, not an anonymous visit.
    """

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> WorkOSUser | None:
        claims = await verified_claims(self._authkit, connection, token, required=False)
        if claims is None:
            return None
        return await _load_user(self._authkit, connection, claims)


async def _load_user(
    authkit: AuthKit, connection: HTTPConnection, claims: AccessTokenClaims
) -> WorkOSUser:
    try:
        return await authkit.users.load(claims.sub)
    except UserNotFoundError as exc:
        logger.info("access token refused for user %s: %s", claims.sub, exc)
        raise _refuse(connection, str(exc)) from None
    except DatabaseUnavailableError:
        logger.error("current_user: the database is unavailable")
        raise _unavailable(connection, "The database is unavailable; retry later") from None
    except WorkOSAPIError as exc:
        logger.error("current_user: could not fetch user %s from WorkOS: %s", claims.sub, exc)
        raise _unavailable(connection, "WorkOS could not be reached; retry later") from None
    except HandlerError as exc:
        logger.error("current_user: %s", exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "A user.created handler failed"
        ) from None


class RequirePermissions(_Dependency):
    """Refuse with 403 unless the token grants every one of ``permissions``."""

    def __init__(self, authkit: AuthKit, permissions: tuple[str, ...]) -> None:
        super().__init__(authkit)
        self.permissions = permissions

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> AccessTokenClaims:
        claims = await verified_claims(self._authkit, connection, token, required=True)
        assert claims is not None
        missing = [p for p in self.permissions if p not in claims.permissions]
        if missing:
            raise _forbid(
                connection, f"Missing permission: {', '.join(missing)}", " ".join(missing)
            )
        return claims


class RequireRoles(_Dependency):
    """Refuse with 403 unless the token carries one of ``roles`` (in ``role`` or ``roles``)."""

    def __init__(self, authkit: AuthKit, roles: tuple[str, ...]) -> None:
        super().__init__(authkit)
        self.roles = roles

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> AccessTokenClaims:
        claims = await verified_claims(self._authkit, connection, token, required=True)
        assert claims is not None
        held = {*claims.roles, *([claims.role] if claims.role else [])}
        if not held.intersection(self.roles):
            raise _forbid(connection, f"One of these roles is required: {', '.join(self.roles)}")
        return claims


class RequireOrganization(_Dependency):
    """Refuse with 403 unless the session is scoped to an organization (a given one, if set)."""

    def __init__(self, authkit: AuthKit, organization_id: str | None) -> None:
        super().__init__(authkit)
        self.organization_id = organization_id

    async def __call__(self, connection: HTTPConnection, token: BearerToken) -> AccessTokenClaims:
        claims = await verified_claims(self._authkit, connection, token, required=True)
        assert claims is not None
        if claims.org_id is None:
            raise _forbid(connection, "The session is not scoped to an organization")
        if self.organization_id is not None and claims.org_id != self.organization_id:
            raise _forbid(connection, "The session is scoped to another organization")
        return claims
