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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from sqlmodel import Session

from .._exceptions import SessionOnLoopError
from .._sync.database import is_unavailable
from .action_models import Action, ActionHandler, ActionResponse, ActionVerdict
from .action_session import ActionSession
from .action_threads import SyncHandlerSlots

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


@dataclass
class _SyncRun:
    """State shared between the request and a sync handler's worker thread.

    A timed-out worker cannot be stopped, only abandoned; the lock makes "commit" and "abandon"
    mutually exclusive, so an abandoned handler's writes are always rolled back.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    abandoned: bool = False
    committing: bool = False
    finished: bool = False
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
    run = _SyncRun()

    def work() -> None:
        with run.lock:
            if run.abandoned:
                return  # given up on before its thread started it
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
            with run.lock:
                run.finished = True

    # Waiting for a slot counts against the same budget as the handler.
    ticket = slots.submit(work, budget)
    if ticket is None:
        _log_saturated(action, slots)
        raise _Saturated

    def give_up() -> bool:
        """Abandon the run unless its commit started; True if the commit is under way."""
        with run.lock:
            late = run.committing
            run.abandoned = not late
            if run.abandoned and run.started and not run.finished:
                # Still running: its thread keeps the slot, counted as abandoned, until it ends.
                slots.abandon(ticket)
        return late

    try:
        returned = await ticket.wait()
    except BaseException:
        # The request itself was cancelled (the client hung up): nobody will see the verdict,
        # so the handler's writes must not be kept either.
        if not slots.withdraw(ticket):
            give_up()
        raise
    if not returned:
        if slots.withdraw(ticket):
            # No slot freed up within the budget: every one is held by a handler still running.
            _log_saturated(action, slots)
            raise _Saturated
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
        with anyio.CancelScope(shield=True):
            await ticket.wait(until_deadline=False)
    if run.error is not None:
        _log_failure(action, run.error)
        raise _HandlerFailed(is_unavailable(run.error))
    assert run.verdict is not None
    return run.verdict


def _log_saturated(action: Action, slots: SyncHandlerSlots) -> None:
    logger.error(
        "action %s (%s): %d sync handlers are still running past action_timeout; "
        "answering 503 so WorkOS applies its fallback",
        action.id,
        action.action_type,
        slots.size,
    )


def _log_timeout(action: Action, budget: float) -> None:
    logger.error(
        "action %s (%s): the handler ran past action_timeout=%ss; answering 504 so WorkOS "
        "applies its fallback, and rolling back its writes",
        action.id,
        action.action_type,
        f"{budget:g}",
    )
