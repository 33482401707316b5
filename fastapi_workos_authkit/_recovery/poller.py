"""The background poller: runs `sync_events` every few seconds from the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = ["EventsPoller"]


class EventsPoller:
    """Runs ``job`` (normally `sync_events`) every ``interval`` seconds until stopped.

    A failing run is logged and retried at the next tick; `stop` cancels the wait or the run in
    progress (the cursor only ever points at committed events, so nothing is lost) and waits for
    the loop to end.

    The loop runs in an anyio task group that `start` opens and `stop` closes, so both must be
    called by the same task, in that order, with no cancel scope entered in between left open
    or closed out of order: the app's lifespan (`AuthKit.startup` then `AuthKit.shutdown`) is
    such a task.
    """

    def __init__(self, job: Callable[[], Awaitable[object]], interval: float) -> None:
        if interval <= 0:
            raise ValueError("events_poll_interval must be a positive number of seconds")
        self._job = job
        self.interval = interval
        self.runs = 0
        """Completed runs, successful or not."""
        self.failures = 0
        self._running = False
        self._group: TaskGroup | None = None
        self._exit: AsyncExitStack | None = None
        self._owner: anyio.TaskInfo | None = None

    @property
    def running(self) -> bool:
        """Whether the polling loop is alive."""
        return self._running

    async def start(self) -> None:
        """Start polling in a task group of the calling task; a second call does nothing."""
        if self._group is not None:
            return
        async with AsyncExitStack() as exit_stack:
            self._group = await exit_stack.enter_async_context(anyio.create_task_group())
            self._running = True
            self._group.start_soon(self._loop, name="workos-poller")
            self._owner = anyio.get_current_task()
            # Kept open until `stop`: the task group outlives this call on purpose.
            self._exit = exit_stack.pop_all()

    async def stop(self) -> None:
        """Stop polling and wait for the loop to finish; call it from the task that started it."""
        if self._group is None or self._exit is None:
            return
        if self._owner is not None and anyio.get_current_task().id != self._owner.id:
            raise RuntimeError(
                "EventsPoller.stop() was called from another task than start(): an anyio task "
                "group must be closed by the task that opened it. Call AuthKit.startup() and "
                "AuthKit.shutdown() from the same task (the app's lifespan does)."
            )
        # An anyio cancel, so that a worker thread in the middle of an event finishes and
        # commits first: anyio.to_thread waits for its thread before the cancel takes effect.
        self._group.cancel_scope.cancel()
        exit_stack, self._exit, self._group, self._owner = self._exit, None, None, None
        await exit_stack.aclose()

    async def _loop(self) -> None:
        try:
            while True:
                try:
                    await self._job()
                except Exception as exc:
                    self.failures += 1
                    logger.warning("events poll failed (%s): %s", type(exc).__name__, exc)
                self.runs += 1
                await anyio.sleep(self.interval)
        finally:
            self._running = False
