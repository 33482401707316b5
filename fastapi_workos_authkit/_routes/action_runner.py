"""How an Action handler runs within WorkOS's time budget: `run_handler` awaits an
async handler or runs a sync one on a worker thread, bounded by `SyncHandlerSlots` (fair,
first come first served), with an `ActionSession` that refuses to be used on the event loop,
and turns a failure or a timeout into an error the route answers with a non-2xx status.
"""

from __future__ import annotations

import inspect
import logging
import threading
import traceback
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from sqlmodel import Session

from .._exceptions import ConfigurationError, SessionOnLoopError
from .._sync.database import is_unavailable
from .action_models import Action, ActionHandler, ActionResponse, ActionVerdict
from .action_session import ActionSession

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger("fastapi_workos_authkit")


class _HandlerFailed(Exception):
    """The handler raised or returned something other than a verdict (already logged)."""

    def __init__(self, unavailable: bool = False) -> None:
        super().__init__()
        self.unavailable = unavailable


class _TimedOut(Exception):
    """The handler ran past the time budget (already logged)."""


class _Saturated(Exception):
    """Every sync handler slot is taken (already logged): answer 503 without running it."""


MAX_SYNC_ACTION_HANDLERS = 20
"""Sync Action handlers that may run at once per `AuthKit`, those past the timeout included."""


class SyncHandlerSlots:
    """At most ``size`` sync Action handler threads at once, counting abandoned ones.

    A handler that runs past ``action_timeout`` is answered 504 but its thread cannot be
    stopped, and it keeps its database connection until it returns. Its slot is therefore
    released by the thread itself when it really ends, not when the request gives up on it
    (unlike anyio's thread limiter, which hands the token back on abandon). When every slot is
    held by an abandoned thread, a new sync Action is refused at once with 503 instead of piling
    up threads; while some are held by handlers still inside their time, a request waits for one
    (within its own ``action_timeout``), as a burst of sign-ins larger than the pool should.
    Each `AuthKit` has one, ``authkit.sync_action_slots``, sized by its
    ``max_sync_action_handlers`` option.

    A lock-guarded counter rather than an anyio `CapacityLimiter`: the release happens in the
    worker thread, and an anyio limiter may only be released from its event loop. A waiting
    request sleeps on an anyio `Event` that the releasing thread sets through the loop.
    """

    def __init__(self, size: int = MAX_SYNC_ACTION_HANDLERS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError("max_sync_action_handlers must be a whole number, at least 1.")
        self.size = size
        self._lock = threading.Lock()
        self._taken = 0
        self._abandoned = 0
        self._waiters: deque[anyio.Event] = deque()

    @property
    def taken(self) -> int:
        """How many slots are held now (running or abandoned handlers)."""
        return self._taken

    @property
    def waiting(self) -> int:
        """How many requests are waiting for a slot now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when all are taken."""
        with self._lock:
            if self._taken >= self.size:
                return False
            self._taken += 1
        return True

    async def acquire(self) -> bool:
        """Take a slot, waiting for one while a handler inside its time holds one; False at once
        when every slot is held by an abandoned thread. Call it on the event loop; cancel it
        (a timeout scope) to stop waiting.

        Waiters are served in order: a released slot is handed to the first waiter, never left
        for a newcomer to take first (which starved early waiters into the p99).
        """
        with self._lock:
            if self._taken < self.size and not self._waiters:
                self._taken += 1
                return True
            if self._abandoned >= self.size:
                return False
            granted = anyio.Event()
            self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            with self._lock:
                handed_over = granted not in self._waiters
                if not handed_over:
                    self._waiters.remove(granted)
            if handed_over:
                self.release(on_loop=True)  # a slot was handed to us: pass it on
            raise
        return True

    def abandon(self) -> None:
        """Count a held slot as held by an abandoned thread (until that thread releases it)."""
        with self._lock:
            self._abandoned += 1

    def release(self, *, abandoned: bool = False, on_loop: bool = False) -> None:
        """Give a slot back, or hand it to the first waiter: from the worker thread that held
        it, or ``on_loop``; ``abandoned`` if it had been counted by `abandon`."""
        with self._lock:
            if abandoned:
                self._abandoned -= 1
            if not self._waiters:
                self._taken -= 1
                return
            granted = self._waiters.popleft()  # the slot changes hands; taken stays the same
        if on_loop:
            granted.set()
            return
        # RuntimeError: the loop is gone (shutting down), so nobody is waiting any more.
        with suppress(RuntimeError):
            anyio.from_thread.run_sync(granted.set)


@dataclass
class _SyncRun:
    """State shared between the request and a sync handler's worker thread.

    A timed-out worker cannot be stopped, only abandoned; the lock makes "commit" and "abandon"
    mutually exclusive, so an abandoned handler's writes are always rolled back.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    abandoned: bool = False
    committing: bool = False
    released: bool = False
    counted_abandoned: bool = False
    verdict: ActionVerdict | None = None
    error: BaseException | None = None


def _as_verdict(result: Any) -> ActionVerdict:
    if isinstance(result, ActionVerdict):
        return result
    raise TypeError(
        f"returned {type(result).__name__} instead of response.allow() or response.deny(...)"
    )


def _is_async(handler: ActionHandler) -> bool:
    # An object with an async __call__ is an async handler too.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


def _log_failure(action: Action, exc: BaseException) -> None:
    # The exception message and locals may hold the email: log the type and the stack only,
    # except for our own refusal, whose message holds no data and says how to fix the handler.
    stack = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    logger.error(
        "action %s (%s): the handler failed with %s; its writes are rolled back and the "
        "request is refused, so WorkOS applies its fallback. Stack:\n%s",
        action.id,
        action.action_type,
        f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SessionOnLoopError)
        else type(exc).__name__,
        stack,
    )


async def run_handler(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    budget: float,
    slots: SyncHandlerSlots | None = None,
) -> ActionVerdict:
    """Call ``handler`` with a fresh session; commit on a verdict, roll back on anything else.

    A sync handler runs in a worker thread holding one of ``slots`` until that thread ends.
    Raises `_HandlerFailed`, `_TimedOut` or `_Saturated`, after logging, when there is no
    verdict to send.
    """
    response = ActionResponse(action.action_type)
    if _is_async(handler):
        return await _run_async(handler, engine, action, response, budget)
    return await _run_sync(handler, engine, action, response, budget, slots or SyncHandlerSlots(1))


async def _run_async(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    response: ActionResponse,
    budget: float,
) -> ActionVerdict:
    # The handler runs on the loop; its database work goes through `ActionSession.run_sync`
    # in a worker thread, and the session refuses I/O on the loop itself.
    session = ActionSession(engine)
    try:
        with anyio.move_on_after(budget) as scope:
            result = await handler(session, action, response)
        # A handler that blocks the loop (or whose run_sync call outlived the budget) cannot be
        # interrupted; it still must not beat the budget.
        if scope.cancelled_caught or anyio.current_time() >= scope.deadline:
            _log_timeout(action, budget)
            raise _TimedOut
        verdict = _as_verdict(result)
        # A handler that never touched the session has nothing to commit: skip the thread hop.
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.commit)
        return verdict
    except (_TimedOut, anyio.get_cancelled_exc_class()):
        raise
    except Exception as exc:
        _log_failure(action, exc)
        raise _HandlerFailed(is_unavailable(exc)) from None
    finally:
        if session.in_transaction():
            # Closing an uncommitted session rolls back whatever the handler did; shielded so a
            # client that hangs up does not leave the connection checked out.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)
        else:
            session.close()  # no connection held: nothing to wait for


async def _run_sync(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    response: ActionResponse,
    budget: float,
    slots: SyncHandlerSlots,
) -> ActionVerdict:
    # Waiting for a slot counts against the same budget as the handler.
    deadline = anyio.current_time() + budget
    acquired = False
    with anyio.move_on_at(deadline):
        acquired = await slots.acquire()
    if not acquired:
        logger.error(
            "action %s (%s): %d sync handlers are still running past action_timeout; "
            "answering 503 so WorkOS applies its fallback",
            action.id,
            action.action_type,
            slots.size,
        )
        raise _Saturated
    run = _SyncRun()

    def work() -> None:
        with run.lock:
            if run.abandoned:
                return  # given up on before the thread started: the request freed the slot
            run.started = True
        try:
            with Session(engine) as session:
                verdict = _as_verdict(handler(session, action, response))
                with run.lock:
                    if run.abandoned:
                        return  # leaving the block rolls back
                    run.committing = True
                if session.in_transaction():
                    session.commit()
                run.verdict = verdict
        except BaseException as exc:
            run.error = exc
        finally:
            run.done.set()
            with run.lock:
                run.released = True
                counted = run.counted_abandoned
            # Only now are the thread and its connection really free.
            slots.release(abandoned=counted)

    def give_up() -> bool:
        """Abandon the run unless its commit started; True if the commit is under way."""
        with run.lock:
            late = run.committing
            run.abandoned = not late
            if not run.started:
                run.started = True  # never will: its slot is released here, once
                slots.release(on_loop=True)
            elif run.abandoned and not run.released:
                run.counted_abandoned = True
                slots.abandon()
        return late

    try:
        with anyio.move_on_at(deadline) as scope:
            await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        # The request itself was cancelled (the client hung up): nobody will see the verdict,
        # so the handler's writes must not be kept either.
        give_up()
        raise
    if scope.cancelled_caught:
        late = give_up()
        if not late:
            _log_timeout(action, budget)
            raise _TimedOut
        # The handler answered in time and its commit is under way: wait for that, rather than
        # throw away a verdict whose writes are being kept.
        logger.warning(
            "action %s (%s): action_timeout=%ss passed during the commit; waiting for it",
            action.id,
            action.action_type,
            f"{budget:g}",
        )
        await anyio.to_thread.run_sync(run.done.wait)
    if run.error is not None:
        _log_failure(action, run.error)
        raise _HandlerFailed(is_unavailable(run.error))
    assert run.verdict is not None
    return run.verdict


def _log_timeout(action: Action, budget: float) -> None:
    logger.error(
        "action %s (%s): the handler ran past action_timeout=%ss; answering 504 so WorkOS "
        "applies its fallback, and rolling back its writes",
        action.id,
        action.action_type,
        f"{budget:g}",
    )
