"""`LifespanTasks`: work that outlives the request that started it, in the lifespan's task group.

anyio has no fire-and-forget task: every task lives in a task group, and a group ends with the
block that opened it, so a request cannot start work that goes on after its answer. The app's
lifespan can: `AuthKit.lifespan` opens one task group for as long as the app runs (`running`),
and code on the loop hands it work with `start_soon`. Outside a lifespan (a script, a bare
``TestClient(app)`` whose requests each run on a fresh event loop) there is no such group, and
`start_soon` says so: the caller then does the work itself, in its own flow.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = ["LifespanTasks"]


class LifespanTasks:
    """A task group per running lifespan, for work no request should wait for.

    One group per event loop: an `AuthKit` may serve two loops at once (two test clients in
    threads), and work started on a loop must run on that loop, where its locks and its HTTP
    connections live. Work is cancelled when its lifespan ends.
    """

    def __init__(self) -> None:
        self._groups: dict[anyio.lowlevel.EventLoopToken, TaskGroup] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep a task group open on the calling task's loop until the block ends.

        Enter and leave it in one task (a lifespan does). A block nested in another on the same
        loop shares the outer group. Leaving cancels the work still running and waits for it.
        """
        token = anyio.lowlevel.current_token()
        if token in self._groups:
            yield
            return
        # The group is entered here but closed by hand (as `EventsPoller` does), not around the
        # yield: an exception from the lifespan's body then propagates as itself, not wrapped
        # in the ExceptionGroup a task group raises for its host's errors.
        async with AsyncExitStack() as exit_stack:
            group = await exit_stack.enter_async_context(anyio.create_task_group())
            close = exit_stack.pop_all()
        self._groups[token] = group
        try:
            yield
        finally:
            del self._groups[token]
            group.cancel_scope.cancel()
            await close.aclose()

    def start_soon(self, work: Callable[[], Awaitable[object]], *, name: str) -> bool:
        """Start ``work()`` in the group open on the running loop; False (nothing started) when
        none is, so that the caller runs it itself.

        ``work`` should handle its own errors. One it lets through is logged here rather than
        cancelling the group, which would cancel the lifespan (and stop the app) with it.
        """
        group = self._groups.get(anyio.lowlevel.current_token())
        if group is None:
            return False
        group.start_soon(_logged, work, name, name=name)
        return True


async def _logged(work: Callable[[], Awaitable[object]], name: str) -> None:
    try:
        await work()
    except Exception:
        logger.error("the background task %s failed", name, exc_info=True)
