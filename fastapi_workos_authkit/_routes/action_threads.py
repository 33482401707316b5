"""The threads that run sync Action handlers, and the slots that bound them.

`SyncHandlerSlots` admits each sync handler's run to one of ``size`` slots, first come first
served, and runs it on one of its own threads: a slot is held from the grant until the thread
has really returned, so a handler that overran ``action_timeout`` and was abandoned still
counts. The request waits for its run with a single await on the event loop; the grants, the
threads and the timers involve no task of their own.

It is asyncio-specific (the loop's timers and ``call_soon_threadsafe``), like the reader thread
of `current_user`: on the sign-in path, anyio's worker-thread hop cost a sync handler about
0.15 ms more per request than this (measured by ``bench/bench_actions.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from .._exceptions import ConfigurationError

logger = logging.getLogger("fastapi_workos_authkit")

MAX_SYNC_ACTION_HANDLERS = 20
"""Sync Action handlers that may run at once per `AuthKit`, those past the timeout included."""

STARTING_SYNC_ACTION_HANDLERS = 2
"""Sync Action handlers that may be starting at once: granted a slot but not running yet, or
running for less than `SYNC_ACTION_START_GRACE`."""

SYNC_ACTION_START_GRACE = 0.002
"""Seconds after which a running sync handler no longer counts as starting."""

IDLE_THREAD_SECONDS = 10.0
"""A handler thread left idle this long ends (a new one starts when needed)."""


class SyncHandlerTicket:
    """One sync handler's place: in line for a slot, then holding one until its thread has
    returned from the run. Created by `SyncHandlerSlots.submit`."""

    __slots__ = (
        "_context",
        "_loop",
        "_slots",
        "_timer",
        "_waiter",
        "_work",
        "abandoned",
        "deadline",
        "finished",
        "in_line",
        "started_at",
    )

    def __init__(
        self,
        slots: SyncHandlerSlots,
        work: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        deadline: float,
    ) -> None:
        self._slots = slots
        self._work = work
        self._loop = loop
        # The handler sees the request's context variables, as with anyio's worker threads.
        self._context = contextvars.copy_context()
        self._waiter: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.deadline = deadline
        self.in_line = False
        self.started_at: float | None = None
        self.finished = False
        self.abandoned = False

    async def wait(self, until_deadline: bool = True) -> bool:
        """Wait for ``work`` to return: True once it has, False when the deadline passes first
        (only ``until_deadline``). Call it on the loop that submitted the run; cancelling it
        stops the wait, not the run."""
        if self.finished:
            return True
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiter = waiter
        if until_deadline:
            self._timer = self._loop.call_at(self.deadline, self._wake, False)
        try:
            return await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _wake(self, finished: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(finished)

    def _run(self) -> None:
        """In a handler thread: run ``work``; it reports through its own state, never raises."""
        try:
            self._context.run(self._work)
        except BaseException as exc:  # a safety net: the thread must survive
            # The type only: a message may hold the email being checked.
            logger.error("a sync Action handler's run raised %s", type(exc).__name__)

    def _returned(self) -> None:
        """On the loop, once the thread has returned from ``work``."""
        self.finished = True
        self._slots._release(self)
        self._wake(True)


class _HandlerThread:
    """One handler thread: asleep on its own wake-up queue, or running granted runs."""

    __slots__ = ("run", "wakeup")

    def __init__(self) -> None:
        self.wakeup: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.run: SyncHandlerTicket | None = None  # None while woken and not started yet


class SyncHandlerSlots:
    """At most ``size`` sync Action handler threads at once, counting abandoned ones, and at
    most ``starting`` of them starting at once.

    A handler that runs past ``action_timeout`` is answered 504 but its thread cannot be
    stopped, and it keeps its database connection until it returns. Its slot is therefore given
    back when its thread really ends, not when the request gives up on it (unlike anyio's thread
    limiter, which hands the token back on abandon). When every slot is held by an abandoned
    thread, a new sync Action is refused at once with 503 instead of piling up threads; while
    some are held by handlers still inside their time, a request waits for one (within its own
    ``action_timeout``), as a burst of sign-ins larger than the pool should. Waiters are served
    in order: a free slot goes to the first in line, never to a newcomer (which starved early
    waiters into the p99). Each `AuthKit` has one, ``authkit.sync_action_slots``, sized by its
    ``max_sync_action_handlers`` option; its threads start when needed and end when idle.

    Why "starting": a thread woken for a handler must take the GIL from the event loop before
    it runs a line. Twenty threads woken at once for twenty short handlers (a primary-key read,
    a check) spend their time passing the GIL around, then hand their results back in bursts
    that set off far more garbage collections (full ones included) than the same requests
    answered one by one: at 50 concurrent requests that multiplied the p99 (measured by
    ``bench/bench_actions.py``). So a slot is granted only while fewer than ``starting``
    handlers are starting: granted but not running yet, or running for less than ``grace``; and
    a granted run is left to a thread that is already awake unless every awake thread is in a
    handler that started ``grace`` ago or more. A handler still running after ``grace`` is
    waiting on I/O (a query, an HTTP call), not on the CPU: it no longer counts, and the next
    run gets another thread. Short handlers thus run one after another on one thread, while
    slow ones still get all ``size`` slots and threads, one more every ``grace`` at most. A
    slot is given back on the loop, which grants the next one, so the loop answers each request
    before more start.

    The accounting is guarded by a lock, so one instance may serve several event loops.
    ``clock`` (monotonic seconds, read by the threads too) is injectable for tests.
    """

    def __init__(
        self,
        size: int = MAX_SYNC_ACTION_HANDLERS,
        *,
        starting: int = STARTING_SYNC_ACTION_HANDLERS,
        grace: float = SYNC_ACTION_START_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError("max_sync_action_handlers must be a whole number, at least 1.")
        self.size = size
        self.starting = starting
        self.grace = grace
        self.clock = clock
        self._lock = threading.Lock()
        self._held: set[SyncHandlerTicket] = set()
        self._line: deque[SyncHandlerTicket] = deque()
        self._ready: deque[SyncHandlerTicket] = deque()
        self._abandoned = 0
        self._asleep: list[_HandlerThread] = []
        self._awake: set[_HandlerThread] = set()
        self._recheck: asyncio.TimerHandle | None = None
        self._recheck_loop: asyncio.AbstractEventLoop | None = None

    @property
    def taken(self) -> int:
        """How many slots are held now (granted, running or abandoned handlers)."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """How many runs are waiting in line for a slot now."""
        return len(self._line)

    @property
    def threads(self) -> int:
        """How many handler threads exist now (asleep or awake)."""
        with self._lock:
            return len(self._asleep) + len(self._awake)

    def starting_now(self) -> int:
        """How many held slots count as starting now: granted and not running yet, or running
        for less than ``grace``."""
        with self._lock:
            return self._starting()

    def submit(self, work: Callable[[], None], timeout: float) -> SyncHandlerTicket | None:
        """Line ``work`` up for a slot and a thread; None (nothing runs) when every slot is held
        by an abandoned thread. Call it on the event loop; then await `SyncHandlerTicket.wait`,
        whose deadline is ``timeout`` seconds from now, waiting in line included."""
        loop = asyncio.get_running_loop()
        run = SyncHandlerTicket(self, work, loop, loop.time() + timeout)
        with self._lock:
            if not self._line and self._free():
                self._grant(run)
            elif self._abandoned >= self.size:
                return None
            else:
                run.in_line = True
                self._line.append(run)
            self._find_thread()
            self._watch(loop)
        return run

    def withdraw(self, run: SyncHandlerTicket) -> bool:
        """Take ``run`` out of the line if it is still waiting there; True if it was (it never
        got a slot and never will)."""
        with self._lock:
            if not run.in_line:
                return False
            run.in_line = False
            self._line.remove(run)
            return True

    def abandon(self, run: SyncHandlerTicket) -> None:
        """Count ``run``'s slot as held by an abandoned thread, until that thread returns."""
        with self._lock:
            if not run.abandoned and run in self._held:
                run.abandoned = True
                self._abandoned += 1

    # --- Under the lock -----------------------------------------------------------------------

    def _fresh(self, run: SyncHandlerTicket | None, now: float) -> bool:
        """Not started yet, or started less than ``grace`` ago."""
        return run is None or run.started_at is None or now - run.started_at < self.grace

    def _starting(self) -> int:
        now = self.clock()
        return sum(1 for run in self._held if self._fresh(run, now))

    def _free(self) -> bool:
        return len(self._held) < self.size and self._starting() < self.starting

    def _grant(self, run: SyncHandlerTicket) -> None:
        self._held.add(run)
        self._ready.append(run)

    def _grant_in_line(self) -> None:
        while self._line and self._free():
            run = self._line.popleft()
            run.in_line = False
            self._grant(run)

    def _find_thread(self) -> None:
        """Wake (or start) a thread for the granted runs, unless an awake one will take them:
        one that is not in a handler yet, or in one that started less than ``grace`` ago."""
        if not self._ready:
            return
        now = self.clock()
        if any(self._fresh(thread.run, now) for thread in self._awake):
            return
        if self._asleep:
            thread = self._asleep.pop()  # the last one to fall asleep
            thread.run = None
            self._awake.add(thread)
            thread.wakeup.put(None)
            return
        thread = _HandlerThread()
        self._awake.add(thread)
        try:
            threading.Thread(
                target=self._serve, args=(thread,), name="authkit-sync-action", daemon=True
            ).start()
        except RuntimeError:
            # No thread could be started (the process is out of threads): the runs wait for a
            # thread that ends a handler, or for their deadline, rather than for this one.
            self._awake.discard(thread)
            logger.error("could not start a thread for sync Action handlers; retrying later")

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Look again in ``grace`` seconds while runs wait for a slot or a thread: a handler
        still running by then no longer counts as starting. One timer at a time, on a loop that
        is still running."""
        if not (self._line or self._ready):
            return
        if self._recheck is not None and not (
            self._recheck_loop is not None and self._recheck_loop.is_closed()
        ):
            return
        self._recheck_loop = loop
        self._recheck = loop.call_later(self.grace, self._look_again)

    # --- On the loop --------------------------------------------------------------------------

    def _look_again(self) -> None:
        with self._lock:
            loop, self._recheck = self._recheck_loop, None
            self._grant_in_line()
            self._find_thread()
            if loop is not None:
                self._watch(loop)

    def _release(self, run: SyncHandlerTicket) -> None:
        with self._lock:
            self._held.discard(run)
            if run.abandoned:
                self._abandoned -= 1
            self._grant_in_line()
            self._find_thread()
            if self._recheck is None and (self._line or self._ready):
                self._watch(run._loop)

    # --- In the threads -----------------------------------------------------------------------

    def _serve(self, thread: _HandlerThread) -> None:
        while True:
            with self._lock:
                run = self._ready.popleft() if self._ready else None
                thread.run = run
                if run is None:
                    self._awake.discard(thread)
                    self._asleep.append(thread)
            if run is None:
                if not self._sleep(thread):
                    return
                continue
            try:
                run.started_at = self.clock()
                run._run()
            finally:
                self._hand_back(run)

    def _sleep(self, thread: _HandlerThread) -> bool:
        """Wait to be woken; False when left asleep for `IDLE_THREAD_SECONDS` (the thread
        ends)."""
        while True:
            try:
                thread.wakeup.get(timeout=IDLE_THREAD_SECONDS)
                return True
            except queue.Empty:
                with self._lock:
                    if thread in self._asleep:
                        self._asleep.remove(thread)
                        return False
                # Woken just as the wait ended: the wake-up is queued, take it.

    def _hand_back(self, run: SyncHandlerTicket) -> None:
        """In the thread: give the slot back through the loop, which also answers the request
        and grants the next slot."""
        try:
            run._loop.call_soon_threadsafe(run._returned)
        except RuntimeError:  # the loop is closed: nobody waits for the answer
            run.finished = True
            self._release(run)
