"""FastAPI dependencies: who is calling, as verified claims or as the synced `WorkOSUser` row,
and in which organization (`WorkOSOrganization`, `WorkOSOrganizationMembership`).

Every dependency is a stable object on the `AuthKit` instance (``authkit.current_user``...), so
``app.dependency_overrides[authkit.current_user]`` works. Each one *is* the same HTTP Bearer
security scheme, so ``/docs`` shows an Authorize button, and they work on WebSocket routes too.
Errors follow RFC 6750. The token is verified once per request, however many dependencies ask,
and never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security.base import SecurityBase

from .._exceptions import DatabaseUnavailableError, HandlerError
from .._exceptions import UserNotFoundError as UserNotFoundError
from .._recovery.workos_api import MAX_ID_LENGTH, WorkOSAPIError, is_plausible_id
from .._sync.mirror import MEMBERSHIP, ORGANIZATION
from .._sync.tables import WorkOSOrganization, WorkOSOrganizationMembership, WorkOSUser
from .challenges import (
    RESPONSES_401_403_503,
    RESPONSES_401_503,
    _forbid,
    _refuse,
    _unauthenticated,
    _unavailable,
    bearer_token,
)
from .just_in_time import NOT_FOUND_CACHE_SIZE as NOT_FOUND_CACHE_SIZE
from .just_in_time import V
from .organization_store import AccessDeniedError
from .organization_store import OrganizationStore as OrganizationStore
from .tokens import AccessTokenClaims, InvalidTokenError, KeysUnavailableError, TokenVerifier
from .user_store import SessionRevokedError
from .user_store import UserStore as UserStore

logger = logging.getLogger("fastapi_workos_authkit")

_SCOPE_KEY = "fastapi_workos_authkit.claims"
_USER_KEY = "fastapi_workos_authkit.user"


SCHEME_NAME = "WorkOSAccessToken"
"""The name of the one security scheme every `AuthKit` dependency declares in OpenAPI."""


class AccessTokenBearer(SecurityBase):
    """Base of every `AuthKit` dependency: it *is* the HTTP Bearer security scheme.

    Being a `SecurityBase` itself, each dependency shows in OpenAPI (one ``WorkOSAccessToken``
    scheme, Swagger's Authorize button) without a nested dependency for FastAPI to solve on
    every request. FastAPI's `HTTPBearer` reads a `Request`, which a WebSocket route cannot
    provide; these read the common `HTTPConnection` (see `bearer_token`), and raise their
    errors themselves, in RFC 6750 form.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description=(
                "An AuthKit access token, as returned by `getAccessToken()` in the WorkOS "
                "frontend SDKs: `Authorization: Bearer <token>`."
            ),
        )
        self.scheme_name = SCHEME_NAME


async def verified_claims(
    auth: BearerAuth, connection: HTTPConnection, *, required: bool
) -> AccessTokenClaims | None:
    """Verify the request's token once; later calls in the same request reuse the result."""
    cached = connection.scope.get(_SCOPE_KEY)
    if cached is not None and cached[0] is auth:
        claims: AccessTokenClaims = cached[1]
        return claims
    token = bearer_token(connection)
    if token is None:
        if required:
            raise _unauthenticated(connection)
        return None
    try:
        claims = await auth.verifier().verify(token)
    except InvalidTokenError as exc:
        logger.info("access token refused: %s", exc)
        raise _refuse(connection, str(exc)) from None
    except KeysUnavailableError as exc:
        raise _unavailable(connection, str(exc)) from None
    if not is_plausible_id(claims.sub):
        # A signed token is still input: its sub becomes a database key and a REST path
        # segment (the just-in-time fetch), so a sub like "../../sso/jwks/..." stops here.
        logger.warning("access token refused: its sub is not a plausible user id")
        raise _refuse(
            connection,
            "The token's sub is not a user id: letters, digits and underscores only, "
            f"at most {MAX_ID_LENGTH} characters",
        )
    if claims.sid is not None and not is_plausible_id(claims.sid):
        # The sid is a database key too (the revoked-session check, read together with other
        # requests' keys): a NUL or a lone surrogate would fail that whole statement.
        logger.warning("access token refused: its sid is not a plausible session id")
        raise _refuse(
            connection,
            "The token's sid is not a session id: letters, digits and underscores only, "
            f"at most {MAX_ID_LENGTH} characters",
        )
    connection.scope[_SCOPE_KEY] = (auth, claims)
    return claims


@dataclass(frozen=True, eq=False)
class BearerAuth:
    """What the dependencies of one `AuthKit` share: its token verifier and its user store.

    One object per `AuthKit`: a request's verified claims are remembered under it, so several
    dependencies of the same instance verify the token once, and those of another instance (a
    second `AuthKit` in the same app) do not reuse them.
    """

    verifier: Callable[[], TokenVerifier]
    """Returns the token verifier (built on first use: it needs the client id)."""
    users: UserStore
    organizations: OrganizationStore | None = None
    """Reads and fetches organizations and memberships (``current_organization``...)."""


class _Dependency(AccessTokenBearer):
    """Base of the dependencies bound to one `AuthKit`."""

    def __init__(self, auth: BearerAuth) -> None:
        super().__init__()
        self._auth = auth

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class ClaimsDependency(_Dependency):
    """``authkit.claims``: the verified `AccessTokenClaims`, with no database access."""

    async def __call__(self, connection: HTTPConnection) -> AccessTokenClaims:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        return claims


class CurrentUserDependency(_Dependency):
    """``authkit.current_user``: the synced `WorkOSUser` of the caller, or 401.

    With ``reject_revoked_sessions`` (the default), a token whose ``sid`` names a session
    mirrored as revoked is refused with 401 too, "The session was revoked".
    """

    responses = RESPONSES_401_503

    async def __call__(self, connection: HTTPConnection) -> WorkOSUser:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        return await _load_user(self._auth, connection, claims)


class OptionalUserDependency(_Dependency):
    """``authkit.optional_user``: like ``current_user``, but ``None`` without credentials.

    A token that is present but invalid is still refused with 401: a broken token is a client
    bug to surface, not an anonymous visit.
    """

    async def __call__(self, connection: HTTPConnection) -> WorkOSUser | None:
        claims = await verified_claims(self._auth, connection, required=False)
        if claims is None:
            return None
        return await _load_user(self._auth, connection, claims)


async def _load_user(
    auth: BearerAuth, connection: HTTPConnection, claims: AccessTokenClaims
) -> WorkOSUser:
    # Several dependencies of one instance in one request (current_user and
    # current_membership, say) read the user once.
    cached = connection.scope.get(_USER_KEY)
    if cached is not None and cached[0] is auth:
        found: WorkOSUser = cached[1]
        return found
    try:
        user = await auth.users.load(claims.sub, claims.sid)
        connection.scope[_USER_KEY] = (auth, user)
        return user
    except UserNotFoundError as exc:
        logger.info("access token refused for user %s: %s", claims.sub, exc)
        raise _refuse(connection, str(exc)) from None
    except DatabaseUnavailableError as exc:
        logger.error("current_user: %s", exc)
        raise _unavailable(connection, "The database is unavailable; retry later") from None
    except (WorkOSAPIError, TimeoutError) as exc:
        logger.error("current_user: could not fetch user %s from WorkOS: %r", claims.sub, exc)
        raise _unavailable(connection, "WorkOS could not be reached; retry later") from None
    except HandlerError as exc:
        logger.error("current_user: %s", exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, "A user.created handler failed"
        ) from None


class _Requirement(_Dependency):
    """A dependency that verifies the token, then answers 403 unless the claims pass `_refusal`.

    Each subclass says only what it checks; the verification and the refusal live here once.
    """

    responses = RESPONSES_401_403_503

    async def __call__(self, connection: HTTPConnection) -> AccessTokenClaims:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        await _check_session(self._auth, connection, claims)
        refusal = self._refusal(claims)
        if refusal is not None:
            description, scope = refusal
            raise _forbid(connection, description, scope)
        return claims

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        """Why ``claims`` fall short, as (description, missing scope), or ``None`` if they pass."""
        raise NotImplementedError


class RequirePermissions(_Requirement):
    """Refuse with 403 unless the token grants every one of ``permissions``."""

    def __init__(self, auth: BearerAuth, permissions: tuple[str, ...]) -> None:
        super().__init__(auth)
        self.permissions = permissions

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        missing = [p for p in self.permissions if p not in claims.permissions]
        if missing:
            return f"Missing permission: {', '.join(missing)}", " ".join(missing)
        return None


class RequireRoles(_Requirement):
    """Refuse with 403 unless the token carries one of ``roles`` (in ``role`` or ``roles``)."""

    def __init__(self, auth: BearerAuth, roles: tuple[str, ...]) -> None:
        super().__init__(auth)
        self.roles = roles

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        held = {*claims.roles, *([claims.role] if claims.role else [])}
        if not held.intersection(self.roles):
            return f"One of these roles is required: {', '.join(self.roles)}", ""
        return None


class RequireOrganization(_Requirement):
    """Refuse with 403 unless the session is scoped to an organization (a given one, if set)."""

    def __init__(self, auth: BearerAuth, organization_id: str | None) -> None:
        super().__init__(auth)
        self.organization_id = organization_id

    def _refusal(self, claims: AccessTokenClaims) -> tuple[str, str] | None:
        if claims.org_id is None:
            return "The session is not scoped to an organization", ""
        if self.organization_id is not None and claims.org_id != self.organization_id:
            return "The session is scoped to another organization", ""
        return None


async def _check_session(
    auth: BearerAuth, connection: HTTPConnection, claims: AccessTokenClaims
) -> None:
    """The session check for dependencies that do not read the user (``require_*``)."""
    users = auth.users
    if claims.sid is None or not users.reject_revoked_sessions:
        return
    cached = connection.scope.get(_USER_KEY)
    if cached is not None and cached[0] is auth:
        return  # current_user ran in this request and checked the session with the user
    try:
        revoked = await users.session_revoked(claims.sid)
    except DatabaseUnavailableError as exc:
        logger.error("session check: %s", exc)
        raise _unavailable(connection, "The database is unavailable; retry later") from None
    if revoked:
        logger.info("access token refused for user %s: its session was revoked", claims.sub)
        raise _refuse(connection, str(SessionRevokedError()))


class _OrganizationDependency(_Dependency):
    """What ``current_organization`` and ``current_membership`` share: the caller's user (the
    session check included), then the token's ``org_id``, or 403."""

    responses = RESPONSES_401_403_503
    kind: str = ORGANIZATION.name

    async def _caller(self, connection: HTTPConnection) -> tuple[AccessTokenClaims, str]:
        claims = await verified_claims(self._auth, connection, required=True)
        assert claims is not None
        await _load_user(self._auth, connection, claims)
        org_id = claims.org_id
        if org_id is None:
            raise _forbid(
                connection,
                "The access token names no organization (no org_id claim): sign in to an "
                "organization, or switch to one, to get a token scoped to it",
            )
        if not is_plausible_id(org_id):
            raise _refuse(connection, "The token's org_id is not an organization id")
        store = self._auth.organizations
        if store is None or not store.mirrors(self.kind):
            logger.error(
                "%s needs the %s kind mirrored: add %r to AuthKit(mirror=...)",
                type(self).__name__,
                self.kind,
                self.kind,
            )
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                f"{self.kind} objects are not mirrored by this app",
            )
        return claims, org_id

    async def _load(self, connection: HTTPConnection, load: Awaitable[V], what: str) -> V:
        try:
            return await load
        except AccessDeniedError as exc:
            logger.info("access refused: %s", exc)
            raise _forbid(connection, str(exc)) from None
        except DatabaseUnavailableError as exc:
            logger.error("%s: %s", what, exc)
            raise _unavailable(connection, "The database is unavailable; retry later") from None
        except (WorkOSAPIError, TimeoutError) as exc:
            logger.error("%s: could not fetch from WorkOS: %r", what, exc)
            raise _unavailable(connection, "WorkOS could not be reached; retry later") from None
        except HandlerError as exc:
            logger.error("%s: %s", what, exc)
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR, f"A handler of {self.kind}.created failed"
            ) from None


class CurrentOrganizationDependency(_OrganizationDependency):
    """``authkit.current_organization``: the `WorkOSOrganization` the caller's token is scoped
    to (its ``org_id``).

    401 as ``current_user``; 403 ``insufficient_scope`` when the token names no organization,
    or the organization was deleted, does not exist, or is not synced and no API key is set to
    fetch it; 503 when the database or WorkOS cannot be reached.
    """

    async def __call__(self, connection: HTTPConnection) -> WorkOSOrganization:
        _claims, org_id = await self._caller(connection)
        store = self._auth.organizations
        assert store is not None
        return await self._load(connection, store.organization(org_id), "current_organization")


class CurrentMembershipDependency(_OrganizationDependency):
    """``authkit.current_membership``: the caller's *active* `WorkOSOrganizationMembership` in
    the organization the token is scoped to (its ``sub`` and ``org_id``).

    Answers as ``current_organization``, and 403 when the membership is not ``active``
    (``inactive`` or ``pending``), was deleted, or the user is not a member.
    """

    kind = MEMBERSHIP.name

    async def __call__(self, connection: HTTPConnection) -> WorkOSOrganizationMembership:
        claims, org_id = await self._caller(connection)
        store = self._auth.organizations
        assert store is not None
        membership = await self._load(
            connection, store.membership(claims.sub, org_id), "current_membership"
        )
        if membership.status != "active":
            description = f"The membership is {membership.status}, not active"
            logger.info("access refused for user %s: %s", claims.sub, description)
            raise _forbid(connection, description)
        return membership
