"""`ActionSession`: the SQLModel session an ``async`` Action handler receives. Its database
work runs in a worker thread through ``await session.run_sync(...)``, and anything that would
reach the database from the event loop itself raises `SessionOnLoopError` instead of blocking
every other request.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from sqlmodel import Session

from .._exceptions import SessionOnLoopError

if TYPE_CHECKING:
    from sqlalchemy import Engine


_P = ParamSpec("_P")
_T = TypeVar("_T")


class ActionSession(Session):
    """The session an ``async`` Action handler receives: a SQLModel `Session` for the loop.

    Its database work runs in a worker thread: ``await session.run_sync(function, *args)`` calls
    ``function(session, *args)`` there and returns its result, like SQLAlchemy's
    ``AsyncSession.run_sync``. ``session.add(row)`` needs no database and works directly; the
    commit after the verdict happens in a worker thread too. Anything that would reach the
    database from the event loop itself (a query, a flush, a lazy load, a commit) raises
    `SessionOnLoopError` instead of blocking the loop.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Created on the loop by the Actions route: this is the thread that must never wait.
        self._loop_thread = threading.get_ident()
        self._lock: anyio.Lock | None = None

    async def run_sync(
        self, function: Callable[Concatenate[Session, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``function(session, *args, **kwargs)`` in a worker thread and return its result.

        Calls are taken one at a time: a session is not safe for concurrent use. A call that is
        running when the handler's budget ends is waited for (its thread cannot be stopped, and
        the session must not be closed under it), then the handler is cancelled as usual.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            return await anyio.to_thread.run_sync(
                functools.partial(function, self, *args, **kwargs)
            )

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        # Every statement, flush and lazy load asks for its bind before taking a connection,
        # so refusing here stops the I/O before a pool checkout could block the loop.
        self._refuse_on_loop("query or flush")
        return super().get_bind(*args, **kwargs)

    def commit(self) -> None:
        self._refuse_on_loop("commit")
        super().commit()

    def rollback(self) -> None:
        self._refuse_on_loop("roll back")
        super().rollback()

    def close(self) -> None:
        if self.in_transaction():
            self._refuse_on_loop("close")  # closing an open transaction rolls it back
        super().close()

    def _refuse_on_loop(self, what: str) -> None:
        if threading.get_ident() == self._loop_thread:
            raise SessionOnLoopError(
                f"An async Action handler tried to {what} on the event loop, which would block "
                "every other request until the database answers. Use "
                "`await session.run_sync(function, ...)` to run database work in a worker "
                "thread, or make the handler a plain `def`."
            )
