"""`OrganizationStore`: the reads of the caller's `WorkOSOrganization` and
`WorkOSOrganizationMembership` behind ``current_organization`` and ``current_membership``, and
the just-in-time fetch of ones not yet mirrored; `AccessDeniedError` says why access is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Engine
from sqlmodel import Session

from .._config import Clock
from .._recovery.workos_api import WorkOSClient
from .._sync.database import unavailable_as_error
from .._sync.mirror import MEMBERSHIP, ORGANIZATION, MirrorKind, get_membership, is_tombstoned
from .._sync.tables import WorkOSOrganization, WorkOSOrganizationMembership
from .just_in_time import JIT_TIMEOUT_SECONDS, JustInTime

if TYPE_CHECKING:
    from .._sync.pipeline import EventPipeline

logger = logging.getLogger("fastapi_workos_authkit")


_EARLIEST = datetime.min.replace(tzinfo=UTC)


class AccessDeniedError(Exception):
    """The caller is authenticated, but not allowed here (answer 403); the message says why."""


class OrganizationStore:
    """Reads the caller's `WorkOSOrganization` and `WorkOSOrganizationMembership`, and fetches
    unsynced ones just in time, through the pipeline, with the users' single flight and 404
    memory (`JustInTime`).

    These reads are off the hot path of ``current_user`` (only routes that ask for an
    organization pay them); each runs one Core statement in a worker thread, on the engine's
    pool.

    Args:
        engine: Returns the engine to read from.
        pipeline: Applies what is fetched just in time, by the webhook rules.
        workos_api: Returns the WorkOS REST client, or ``None`` without an API key.
        clock: Returns Unix seconds, for ``not_found_ttl``.
        not_found_ttl: Seconds a 404 (or an empty membership list) is remembered.
    """

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        pipeline: EventPipeline,
        workos_api: Callable[[], WorkOSClient | None],
        clock: Clock,
        not_found_ttl: float = 5.0,
    ) -> None:
        self._engine = engine
        self._pipeline = pipeline
        self._workos_api = workos_api
        self._organizations: JustInTime[str] = JustInTime(clock, not_found_ttl)
        self._memberships: JustInTime[tuple[str, str]] = JustInTime(clock, not_found_ttl)

    def forget(self) -> None:
        """Forget the remembered 404s of organizations and memberships (see `AuthKit.override`)."""
        self._organizations.forget()
        self._memberships.forget()

    def mirrors(self, kind: str) -> bool:
        """Whether ``kind``'s table is written by this app's pipeline."""
        return kind in self._pipeline.mirrored

    def fetch_waiters(self, kind: str, key: str | tuple[str, str]) -> int:
        """Requests waiting on the fetch in progress of an organization id or a (user id,
        organization id) membership, besides its leader (diagnostics, tests)."""
        if kind == ORGANIZATION.name:
            assert isinstance(key, str)
            return self._organizations.waiters(key)
        assert isinstance(key, tuple)
        return self._memberships.waiters(key)

    # -- reads (blocking: run in a worker thread) --

    def read_organization(self, organization_id: str) -> WorkOSOrganization | None:
        """The mirrored organization, or ``None``."""
        with unavailable_as_error(), Session(self._engine()) as session:
            found = session.get(WorkOSOrganization, organization_id)
        return found

    def read_membership(
        self, user_id: str, organization_id: str
    ) -> WorkOSOrganizationMembership | None:
        """The mirrored membership of ``user_id`` in ``organization_id``, or ``None``."""
        with unavailable_as_error(), Session(self._engine()) as session:
            return get_membership(session, user_id, organization_id)

    def _tombstoned(self, kind: MirrorKind, object_id: str) -> bool:
        with unavailable_as_error(), Session(self._engine()) as session:
            return is_tombstoned(session, kind, object_id)

    # -- the dependencies' loads --

    async def organization(self, organization_id: str) -> WorkOSOrganization:
        """The synced organization, fetched just in time when missing.

        Raises `AccessDeniedError` (deleted, unknown to WorkOS, unsynced without an API key),
        `DatabaseUnavailableError`, `WorkOSAPIError` or `TimeoutError` (WorkOS unreachable).
        """
        found = await anyio.to_thread.run_sync(self.read_organization, organization_id)
        if found is not None:
            return found

        async def reread() -> WorkOSOrganization:
            row = await anyio.to_thread.run_sync(self.read_organization, organization_id)
            if row is None:  # a tombstone won the race
                raise AccessDeniedError("The organization was deleted")
            return row

        async def fetch() -> None:
            if await anyio.to_thread.run_sync(self._tombstoned, ORGANIZATION, organization_id):
                raise AccessDeniedError("The organization was deleted")
            workos_api = self._workos_api()
            if workos_api is None:
                raise AccessDeniedError(
                    "The organization is not synced yet, and no WorkOS API key is set to fetch it"
                )
            with anyio.fail_after(JIT_TIMEOUT_SECONDS):
                snapshot = await workos_api.get_organization(organization_id)
            if snapshot is None or snapshot.id != organization_id:
                if snapshot is None:
                    self._organizations.remember_not_found(organization_id)
                raise AccessDeniedError("The organization does not exist")
            await self._apply(ORGANIZATION.name, snapshot)
            logger.info("organization %s fetched just in time", organization_id)

        return await self._organizations.run(
            organization_id,
            fetch=fetch,
            reread=reread,
            not_found=lambda: AccessDeniedError("The organization does not exist"),
        )

    async def membership(self, user_id: str, organization_id: str) -> WorkOSOrganizationMembership:
        """The synced membership, whatever its status, fetched just in time when missing.

        Raises as `organization` does; `AccessDeniedError` also when the user is not a member.
        """
        found = await anyio.to_thread.run_sync(self.read_membership, user_id, organization_id)
        if found is not None:
            return found

        async def reread() -> WorkOSOrganizationMembership:
            row = await anyio.to_thread.run_sync(self.read_membership, user_id, organization_id)
            if row is None:  # its tombstone kept the fetched membership out
                raise AccessDeniedError("The membership was deleted")
            return row

        async def fetch() -> None:
            workos_api = self._workos_api()
            if workos_api is None:
                raise AccessDeniedError(
                    "The membership is not synced yet, and no WorkOS API key is set to fetch it"
                )
            # Every status: an inactive or pending membership is mirrored (and refused) too.
            with anyio.fail_after(JIT_TIMEOUT_SECONDS):
                page = await workos_api.list_organization_memberships(
                    user_id=user_id, organization_id=organization_id
                )
            matches = [
                item
                for item in page.data
                if item.user_id == user_id and item.organization_id == organization_id
            ]
            if not matches:
                self._memberships.remember_not_found((user_id, organization_id))
                raise AccessDeniedError("The user is not a member of the organization")
            newest = max(matches, key=lambda item: item.updated_at or _EARLIEST)
            if await anyio.to_thread.run_sync(self._tombstoned, MEMBERSHIP, newest.id):
                raise AccessDeniedError("The membership was deleted")
            await self._apply(MEMBERSHIP.name, newest)
            logger.info("membership %s fetched just in time", newest.id)

        return await self._memberships.run(
            (user_id, organization_id),
            fetch=fetch,
            reread=reread,
            not_found=lambda: AccessDeniedError("The user is not a member of the organization"),
        )

    async def _apply(self, kind: str, snapshot: Any) -> None:
        pipeline = self._pipeline
        await anyio.to_thread.run_sync(
            lambda: pipeline.apply_snapshot(kind, snapshot, source="jit")
        )
