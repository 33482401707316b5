"""`backfill_users`: copy every WorkOS user into the users table, a page per transaction.

It pages ``GET /user_management/users`` oldest first and hands each page to
`EventPipeline.apply_snapshots` (newest ``updated_at`` wins, tombstones hold), with the page's
cursor written in that same transaction under the ``backfill_users`` lease.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from sqlmodel import Session

from .database import refresh_statistics
from .events import User
from .lease import Lease
from .reconcile_results import BackfillResult, Progress, ProgressCallback
from .recovery import (
    PAGE_SIZE,
    USERS_CURSOR,
    USERS_LAST_COMPLETED,
    Recovery,
    leased,
    read_state,
    save_under_lease,
    write_state,
)
from .user_table import USERS, Effect
from .workos_api import Page

__all__ = ["backfill_users"]


def _cursor_under_lease(lease: Lease, cursor: str) -> Callable[[Session], None]:
    """The last step of a page's transaction: save the cursor, and check that the lease is
    still ours, so a run that lost it rolls its page back and never moves the cursor."""

    def save(session: Session) -> None:
        write_state(session, USERS_CURSOR, cursor)
        lease.hold_in(session)

    return save


# Pages after which a backfill refreshes the users table's statistics: powers of four, so a
# million users cost ten ANALYZE runs.
_ANALYZE_AFTER_PAGES = frozenset(4**n for n in range(12))


@asynccontextmanager
async def _prefetching(
    fetch: Callable[[str | None], Awaitable[Page[User]]], after: str | None
) -> AsyncIterator[_Prefetched]:
    """The pages of a listing, each fetched while the caller still works on the one before.

    Fetching and applying overlap, and they are most of a backfill's time; at most two pages
    wait in memory. A failed fetch does not cut the caller short: the pages fetched before it
    are still handed over, and the fetch's error is raised, as itself, by the iteration after
    the last of them (the CLI maps `WorkOSAPIError` and so on). So every page fetched is applied
    and committed with its cursor, and the next run resumes after it. A failure on the caller's
    side (a handler) cancels the fetching.
    """
    send, receive = anyio.create_memory_object_stream[Page[User]](1)
    pages = _Prefetched(receive)

    async def produce() -> None:
        cursor = after
        async with send:
            while True:
                try:
                    page = await fetch(cursor)
                except Exception as exc:
                    pages.failure = exc
                    return
                await send.send(page)
                if not page.data or page.after is None:
                    return
                cursor = page.data[-1].id

    try:
        async with anyio.create_task_group() as group, receive:
            group.start_soon(produce)
            yield pages
    except BaseExceptionGroup as errors:
        raise _first_failure(errors) from None


class _Prefetched:
    """The pages `_prefetching` hands over; after the last one, the fetch's failure if any."""

    def __init__(self, receive: MemoryObjectReceiveStream[Page[User]]) -> None:
        self._receive = receive
        self.failure: Exception | None = None

    def __aiter__(self) -> _Prefetched:
        return self

    async def __anext__(self) -> Page[User]:
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
    api = recovery.workos()
    engine = recovery.engine()
    result = BackfillResult()
    async with leased(recovery, "backfill_users", lease_ttl) as run:
        if isinstance(run, str):
            return BackfillResult(ran=False, lease_holder=run)
        cursor = None
        if not restart:
            cursor = await anyio.to_thread.run_sync(read_state, engine, USERS_CURSOR)
        result.resumed_from = cursor
        async with _prefetching(
            lambda after: api.list_users(
                after=after, limit=PAGE_SIZE, order="asc", keepalive=run.keepalive
            ),
            cursor,
        ) as pages:
            async for page in pages:
                await run.renew()  # before the page, which may run slow handlers
                if page.data:
                    cursor = page.data[-1].id
                    applied = await anyio.to_thread.run_sync(
                        partial(
                            recovery.pipeline.apply_snapshots,
                            page.data,
                            source="backfill",
                            run_handlers=run_handlers,
                            before_commit=_cursor_under_lease(run.lease, cursor),
                        )
                    )
                    effects = Counter(applied)
                    result.pages += 1
                    if result.pages in _ANALYZE_AFTER_PAGES:
                        # The table grows fast: keep the planner's row counts honest.
                        await anyio.to_thread.run_sync(refresh_statistics, engine, USERS)
                    result.seen += len(page.data)
                    result.inserted += effects[Effect.INSERTED]
                    result.updated += effects[Effect.UPDATED]
                    result.unchanged += effects[Effect.UNCHANGED]
                    if progress is not None:
                        progress(
                            Progress(
                                "backfill-users",
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
            save_under_lease, run.lease, {USERS_CURSOR: None, USERS_LAST_COMPLETED: now}
        )
    return result
