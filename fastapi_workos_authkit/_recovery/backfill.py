"""The backfills: copy every WorkOS user, organization or membership into its table, a page
per transaction.

One machine (`_backfill`) runs all three: it pages a *listing* (a function from a saved
position to the next chunk of objects), hands each chunk to `EventPipeline.apply_snapshots`
(newest ``updated_at`` wins, tombstones hold) with the position written in that same
transaction under the job's lease, and fetches the next chunk while one is applied. Users and
organizations are plain listings of one endpoint; memberships are listed organization by
organization, since WorkOS lists memberships only per organization or per user.

The one machine and its three listings stay together (a little over 400 lines): split, the
listings would lose sight of the contract the machine holds them to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from sqlmodel import Session

from .._exceptions import ConfigurationError
from .._sync.database import refresh_statistics
from .._sync.mirror import MEMBERSHIP, ORGANIZATION, USER, MirrorKind
from .._sync.user_table import Effect
from .lease import Lease
from .reconcile_results import BackfillResult, Progress, ProgressCallback
from .recovery import (
    MEMBERSHIPS_CURSOR,
    MEMBERSHIPS_LAST_COMPLETED,
    ORGANIZATIONS_CURSOR,
    ORGANIZATIONS_LAST_COMPLETED,
    PAGE_SIZE,
    USERS_CURSOR,
    USERS_LAST_COMPLETED,
    Recovery,
    leased,
    read_state,
    save_under_lease,
    write_state,
)
from .workos_api import Keepalive, WorkOSClient

__all__ = ["backfill_memberships", "backfill_organizations", "backfill_users"]


@dataclass(frozen=True)
class Chunk:
    """What a listing returns for one request: objects to apply, the position to save once
    they are committed (the next request starts from it), and whether the listing is over."""

    items: Sequence[Any]
    position: str | None
    done: bool


Listing = Callable[[str | None], Awaitable[Chunk]]
"""The next chunk after a saved position (``None``: from the start)."""


@dataclass(frozen=True)
class _Job:
    """One backfill: its kind, its lease and state keys, and how its listing is made."""

    kind: MirrorKind
    lease: str
    command: str
    cursor_key: str
    completed_key: str
    listing: Callable[[WorkOSClient, Keepalive], Listing]


def _cursor_under_lease(lease: Lease, key: str, cursor: str | None) -> Callable[[Session], None]:
    """The last step of a page's transaction: save the cursor, and check that the lease is
    still ours, so a run that lost it rolls its page back and never moves the cursor."""

    def save(session: Session) -> None:
        write_state(session, key, cursor)
        lease.hold_in(session)

    return save


# Pages after which a backfill refreshes the users table's statistics: powers of four, so a
# million users cost ten ANALYZE runs.
_ANALYZE_AFTER_PAGES = frozenset(4**n for n in range(12))


@asynccontextmanager
async def _prefetching(fetch: Listing, after: str | None) -> AsyncIterator[_Prefetched]:
    """The chunks of a listing, each fetched while the caller still works on the one before.

    Fetching and applying overlap, and they are most of a backfill's time; at most two pages
    wait in memory. A failed fetch does not cut the caller short: the pages fetched before it
    are still handed over, and the fetch's error is raised, as itself, by the iteration after
    the last of them (the CLI maps `WorkOSAPIError` and so on). So every page fetched is applied
    and committed with its cursor, and the next run resumes after it. A failure on the caller's
    side (a handler) cancels the fetching.
    """
    send, receive = anyio.create_memory_object_stream[Chunk](1)
    pages = _Prefetched(receive)

    async def produce() -> None:
        cursor = after
        async with send:
            while True:
                try:
                    chunk = await fetch(cursor)
                except Exception as exc:
                    pages.failure = exc
                    return
                await send.send(chunk)
                if chunk.done:
                    return
                cursor = chunk.position

    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            yield pages
    except BaseExceptionGroup as errors:
        raise _first_failure(errors) from None


class _Prefetched:
    """The pages `_prefetching` hands over; after the last one, the fetch's failure if any."""

    def __init__(self, receive: MemoryObjectReceiveStream[Chunk]) -> None:
        self._receive = receive
        self.failure: Exception | None = None

    def __aiter__(self) -> _Prefetched:
        return self

    async def __anext__(self) -> Chunk:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    cancelled = anyio.get_cancelled_exc_class()
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_failure(error)
        if not isinstance(error, cancelled):
            return error
    return group.exceptions[0]


def _pages(
    list_page: Callable[..., Awaitable[Any]],
) -> Callable[[WorkOSClient, Keepalive], Listing]:
    """A listing of one WorkOS list endpoint, oldest first; its position is the last id."""

    def listing(api: WorkOSClient, keepalive: Keepalive) -> Listing:
        async def fetch(after: str | None) -> Chunk:
            page = await list_page(
                api, after=after, limit=PAGE_SIZE, order="asc", keepalive=keepalive
            )
            position = page.data[-1].id if page.data else after
            # WorkOS leaves list_metadata.after out on the last page.
            return Chunk(page.data, position, done=not page.data or page.after is None)

        return fetch

    return listing


class _MembershipListing:
    """Every membership, of every status, organization by organization.

    WorkOS lists memberships only per organization or per user. The organizations come from
    WorkOS's own list, not from the mirror: the organizations kind may be turned off, or not
    backfilled yet, and a membership of an organization missing from the mirror must be
    copied all the same. The position is ``<organization id>/<last membership id>``, so an
    interrupted run resumes inside the organization it stopped in, then lists the
    organizations after it.
    """

    def __init__(self, api: WorkOSClient, keepalive: Keepalive) -> None:
        self._api = api
        self._keepalive = keepalive
        self._organizations: list[str] = []
        self._listed_after: str | None = None
        self._all_listed = False
        self._finished: str | None = None  # the organization whose last page was handed over

    async def _next_organization(self, current: str | None) -> str | None:
        if not self._organizations and not self._all_listed:
            after = self._listed_after or current
            page = await self._api.list_organizations(
                after=after, limit=PAGE_SIZE, order="asc", keepalive=self._keepalive
            )
            self._organizations = [organization.id for organization in page.data]
            if page.data:
                self._listed_after = page.data[-1].id
            self._all_listed = not page.data or page.after is None
        return self._organizations.pop(0) if self._organizations else None

    async def __call__(self, position: str | None) -> Chunk:
        organization, _, after = (position or "").partition("/")
        current: str | None = organization or None
        if current is not None and current == self._finished:
            current = None
        while True:
            if current is None:
                current = await self._next_organization(organization or None)
                if current is None:
                    return Chunk([], position, done=True)
                after = ""
            page = await self._api.list_organization_memberships(
                organization_id=current,
                after=after or None,
                limit=PAGE_SIZE,
                order="asc",
                keepalive=self._keepalive,
            )
            if page.data:
                if page.after is None:
                    self._finished = current
                return Chunk(page.data, f"{current}/{page.data[-1].id}", done=False)
            # This organization has no (more) memberships: on to the next one.
            organization, current = current, None


_JOBS = {
    USER.name: _Job(
        USER,
        "backfill_users",
        "backfill-users",
        USERS_CURSOR,
        USERS_LAST_COMPLETED,
        _pages(WorkOSClient.list_users),
    ),
    ORGANIZATION.name: _Job(
        ORGANIZATION,
        "backfill_organizations",
        "backfill-organizations",
        ORGANIZATIONS_CURSOR,
        ORGANIZATIONS_LAST_COMPLETED,
        _pages(WorkOSClient.list_organizations),
    ),
    MEMBERSHIP.name: _Job(
        MEMBERSHIP,
        "backfill_memberships",
        "backfill-memberships",
        MEMBERSHIPS_CURSOR,
        MEMBERSHIPS_LAST_COMPLETED,
        _MembershipListing,
    ),
}


async def _backfill(
    recovery: Recovery,
    job: _Job,
    *,
    run_handlers: bool,
    restart: bool,
    progress: ProgressCallback | None,
    lease_ttl: float,
) -> BackfillResult:
    """The one backfill machine: lease, saved position, prefetch, a page per transaction."""
    kind = job.kind
    if kind.name not in recovery.pipeline.mirrored:
        raise ConfigurationError(
            f"{job.command} copies {kind.name} objects into {kind.table.name}, but this app does "
            f"not mirror them: add {kind.name!r} to AuthKit(mirror=...) (it is there by "
            "default) to store them"
        )
    api = recovery.workos()
    engine = recovery.engine()
    result = BackfillResult()
    async with leased(recovery, job.lease, lease_ttl) as run:
        if isinstance(run, str):
            return BackfillResult(ran=False, lease_holder=run)
        cursor = None
        if not restart:
            cursor = await anyio.to_thread.run_sync(read_state, engine, job.cursor_key)
        result.resumed_from = cursor
        async with _prefetching(job.listing(api, run.keepalive), cursor) as pages:
            async for chunk in pages:
                await run.renew()  # before the page, which may run slow handlers
                if not chunk.items:
                    continue
                applied = await anyio.to_thread.run_sync(
                    partial(
                        recovery.pipeline.apply_snapshots,
                        chunk.items,
                        kind=kind.name,
                        source="backfill",
                        run_handlers=run_handlers,
                        before_commit=_cursor_under_lease(
                            run.lease, job.cursor_key, chunk.position
                        ),
                    )
                )
                effects = Counter(applied)
                result.pages += 1
                if result.pages in _ANALYZE_AFTER_PAGES:
                    # The table grows fast: keep the planner's row counts honest.
                    await anyio.to_thread.run_sync(refresh_statistics, engine, kind.table)
                result.seen += len(chunk.items)
                result.inserted += effects[Effect.INSERTED]
                result.updated += effects[Effect.UPDATED]
                result.unchanged += effects[Effect.UNCHANGED]
                if progress is not None:
                    progress(
                        Progress(
                            job.command,
                            result.seen,
                            counts={
                                "inserted": result.inserted,
                                "updated": result.updated,
                                "unchanged": result.unchanged,
                            },
                        )
                    )
        result.completed = True
        now = recovery.now().isoformat()
        await anyio.to_thread.run_sync(
            save_under_lease, run.lease, {job.cursor_key: None, job.completed_key: now}
        )
    return result


async def backfill_users(
    recovery: Recovery,
    *,
    run_handlers: bool = True,
    restart: bool = False,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
) -> BackfillResult:
    """Copy every WorkOS user into the users table, oldest first, refreshing existing rows.

    Each page of 100 is applied in one transaction under the pipeline's rules (newest
    ``updated_at`` wins; a tombstoned id stays deleted), together with the cursor, so a crash
    resumes at the first page not committed. A page is fetched while the one before is applied;
    when a fetch fails, every page fetched before it is still applied and committed, then the
    error is raised, so the next run resumes right after the last page fetched. With
    ``run_handlers`` (the default) an inserted row runs the ``user.created`` handlers and a
    refreshed one ``user.updated``, inside the page's transaction, with a synthetic event whose
    id starts with ``backfill_``. A handler that raises rolls its page back and stops the run
    (`HandlerError`); fix it and run again to resume there.
    A finished run clears the cursor, so the next run is a full refresh; ``restart`` ignores a
    cursor left by an interrupted run.
    """
    return await _backfill(
        recovery,
        _JOBS[USER.name],
        run_handlers=run_handlers,
        restart=restart,
        progress=progress,
        lease_ttl=lease_ttl,
    )


async def backfill_organizations(
    recovery: Recovery,
    *,
    run_handlers: bool = True,
    restart: bool = False,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
) -> BackfillResult:
    """Copy every WorkOS organization into ``workos_organizations``, oldest first.

    The contract of `backfill_users`, under the ``backfill_organizations`` lease and cursor:
    a page per transaction with its cursor, resume after the last page committed, every page
    fetched before a failure applied, handlers (``organization.created`` / ``.updated``) run
    unless ``run_handlers`` is false. `ConfigurationError` if organizations are not mirrored.
    """
    return await _backfill(
        recovery,
        _JOBS[ORGANIZATION.name],
        run_handlers=run_handlers,
        restart=restart,
        progress=progress,
        lease_ttl=lease_ttl,
    )


async def backfill_memberships(
    recovery: Recovery,
    *,
    run_handlers: bool = True,
    restart: bool = False,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
) -> BackfillResult:
    """Copy every WorkOS organization membership, of every status (active, inactive,
    pending), into ``workos_organization_memberships``.

    Memberships are listed organization by organization (WorkOS requires an organization or a
    user on that list), the organizations taken from WorkOS's own list, oldest first. The
    contract of `backfill_users` otherwise, under the ``backfill_memberships`` lease: the
    cursor is ``<organization id>/<last membership id>``, so a resumed run continues inside
    the organization it stopped in. `ConfigurationError` if memberships are not mirrored.
    """
    return await _backfill(
        recovery,
        _JOBS[MEMBERSHIP.name],
        run_handlers=run_handlers,
        restart=restart,
        progress=progress,
        lease_ttl=lease_ttl,
    )
