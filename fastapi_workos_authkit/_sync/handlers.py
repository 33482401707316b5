"""Calling app handlers, sync or async, from the worker thread that holds the transaction."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.from_thread
from sqlmodel import Session

from .events import Event

EventHandler = Callable[[Session, Event[Any]], Any]
"""``(session, event)``, sync or async. Runs inside the sync's transaction: do not commit."""

F = TypeVar("F", bound=Callable[..., Any])


class HandlerRegistry:
    """Handlers by event type, in registration order. Several per type are allowed."""

    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[EventHandler]] = defaultdict(list)

    def add(self, event_type: str, handler: EventHandler) -> None:
        """Register ``handler`` for ``event_type``."""
        if not callable(handler):
            raise TypeError(f"A handler for {event_type!r} must be callable")
        self._handlers[event_type].append(handler)

    def for_type(self, event_type: str) -> tuple[EventHandler, ...]:
        """The handlers registered for ``event_type`` (possibly none)."""
        return tuple(self._handlers.get(event_type, ()))

    def event_types(self) -> frozenset[str]:
        """Every event type with at least one handler."""
        return frozenset(t for t, hs in self._handlers.items() if hs)


def call_in_worker(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async ``function`` from the thread that holds the transaction.

    The database work runs in a worker thread (SQLModel sessions are synchronous). An async
    handler is awaited on the event loop that started the thread (``anyio.from_thread.run``), so
    it can use the app's async clients; the thread waits, holding the transaction, until it
    returns. The handler must use the session only through the object it is given, and never
    from a task of its own that outlives it: the session is not safe for concurrent use.

    Called outside an anyio worker thread (a script or a test calling the pipeline directly),
    there is no app loop to borrow: the async handler runs on a short-lived loop of its own in
    a helper thread (``anyio.from_thread.start_blocking_portal``), and this thread waits for it.
    """
    result = function(*args)
    if not inspect.isawaitable(result):
        return result
    if _in_worker_thread():
        return anyio.from_thread.run(_await, result)
    with anyio.from_thread.start_blocking_portal() as portal:
        return portal.call(_await, result)


def _in_worker_thread() -> bool:
    # Asked before awaiting, not by catching RuntimeError afterwards: a handler's own
    # RuntimeError must reach the ledger as itself.
    try:
        anyio.from_thread.check_cancelled()
    except RuntimeError:
        return False
    return True


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
