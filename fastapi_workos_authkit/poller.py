"""The background poller: runs `sync_events` every few seconds from the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = ["EventsPoller"]


class EventsPoller:
    """Runs ``job`` (normally `sync_events`) every ``interval`` seconds until stopped.

    A failing run is logged and retried at the next tick; `stop` wakes the loop, cancels a run in
    progress (the cursor only ever points at committed events, so nothing is lost) and waits for
    the task to end.
    """

    def __init__(self, job: Callable[[], Awaitable[object]], interval: float) -> None:
        if interval <= 0:
            raise ValueError("events_poll_interval must be a positive number of seconds")
        self._job = job
        self.interval = interval
        self.runs = 0
        """Completed runs, successful or not."""
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def running(self) -> bool:
        """Whether the polling task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling in a task on the running event loop."""
        if self.running:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="workos-poller")

    async def stop(self) -> None:
        """Stop polling and wait for the task to finish."""
        if self._task is None:
            return
        self._stop.set()
        # An anyio cancel (not a bare task.cancel()) so that a worker thread in the middle of an
        # event finishes and commits first: anyio shields those waits, asyncio would not.
        if self._scope is not None:
            self._scope.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        with anyio.CancelScope() as self._scope:
            while not self._stop.is_set():
                try:
                    await self._job()
                except Exception as exc:
                    self.failures += 1
                    logger.warning("events poll failed (%s): %s", type(exc).__name__, exc)
                self.runs += 1
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
