"""One worker thread that runs SQLite primary-key reads off the event loop, cheaply.

A SQLite read is blocking file access, so it must not run on the event loop; but it takes tens
of microseconds, and a hop through anyio's worker-thread pool costs several times that under
load (a thread per concurrent request, each handing its result back with its own wake-up of
the loop). This thread takes the reads in order from a queue and hands the results back in
batches: every read that queued while the previous batch ran comes back with one wake-up.
Measured by ``bench/bench_current_user.py``.

Only SQLite uses it: its reads are local and short, so running them one at a time costs
nothing, whereas a network database would make every request wait for the round trips of the
ones queued before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class ReadThread(Generic[T]):
    """Runs ``read(argument)`` calls in one daemon thread; `run` awaits one without blocking.

    Args:
        read: The blocking read.
        name: The thread's name (shows in debuggers and thread dumps).
        on_stop: Called in the thread when it ends (to release what ``read`` holds there).
    """

    def __init__(
        self,
        read: Callable[[Any], T],
        *,
        name: str,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._read = read
        self._on_stop = on_stop
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, argument: Any) -> T:
        """``read(argument)``, run in the thread; a cancelled caller simply drops the result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, self._read, argument))
        return await future

    def stop(self) -> None:
        """Let the thread finish the reads already queued, then end (without waiting for it)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            batch: list[_Job] = []
            stopping = job is None
            if job is not None:
                batch.append(job)
            while True:  # everything that queued meanwhile goes in the same batch
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    batch.append(more)
            results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            for _loop, future, read, argument in batch:
                try:
                    results.append((future, read(argument), None))
                except Exception as exc:  # handed to the caller, who decides what it means
                    results.append((future, None, exc))
            if batch:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    batch[0][0].call_soon_threadsafe(_deliver, results)
            if stopping:
                if self._on_stop is not None:
                    self._on_stop()
                return


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
