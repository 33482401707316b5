"""`ReadBatches`: concurrent primary-key reads answered together, one statement per batch.

Under load, ``current_user`` on PostgreSQL spends more time around its read than in it: each
read takes a connection from the pool, sends a statement, waits on the socket through the event
loop and puts the connection back, and the server parses and runs one statement per request.
Requests that arrive while every read connection is busy have nothing to do but wait, so they
wait together: when a connection comes free, everything queued meanwhile is read by one
statement on it (``WHERE id IN`` the queued keys, in effect). With one request at a time each
batch holds one key, so an idle app reads exactly as before; at 32 concurrent requests and a
few connections a batch holds several keys, and their cost per request falls by that factor.

No background task runs the batches: the first queued request is handed the free connection
(it becomes the batch's *leader*), reads for everyone queued at that moment, and hands the
connection on when it is done. Every read still starts after its request arrived, so a request
sees every write committed before it began, as with one statement each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

from .._exceptions import DatabaseUnavailableError

K = TypeVar("K")
R = TypeVar("R")

MAX_BATCH = 64
"""The most keys one statement reads (bounds a statement's size and its parameters)."""


class _Waiter(Generic[K, R]):
    """One queued read: its key, and then either its outcome or the lead of the next batch."""

    __slots__ = ("done", "error", "key", "lead", "value")

    def __init__(self, key: K) -> None:
        self.key = key
        self.done = anyio.Event()
        self.lead = False  # set: this request runs the next batch
        self.value: R | None = None
        self.error: BaseException | None = None


class ReadBatches(Generic[K, R]):
    """Runs ``read_many(keys)`` for the keys of concurrent `read` calls, at most ``concurrency``
    batches at once (one per connection).

    Args:
        read_many: Reads a batch; returns one result per key, in the keys' order. An exception
            it raises is raised by every read of that batch.
        concurrency: The most batches in flight (the read pool's size).
        max_batch: The most keys one batch reads.
    """

    def __init__(
        self,
        read_many: Callable[[Sequence[K]], Awaitable[Sequence[R]]],
        *,
        concurrency: int,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if concurrency < 1 or max_batch < 1:
            raise ValueError("concurrency and max_batch must be at least 1")
        self._read_many = read_many
        self._concurrency = concurrency
        self._max_batch = max_batch
        self._running = 0
        self._queue: deque[_Waiter[K, R]] = deque()

    @property
    def queued(self) -> int:
        """Reads waiting for a connection now (diagnostics, tests)."""
        return len(self._queue)

    async def read(self, key: K) -> R:
        """The result for ``key``, read alone or with the reads queued beside it."""
        waiter: _Waiter[K, R] = _Waiter(key)
        if self._running < self._concurrency and not self._queue:
            self._running += 1
            await self._run_batch([waiter])
            return self._outcome(waiter, own=True)
        self._queue.append(waiter)
        try:
            await waiter.done.wait()
        except BaseException:
            # Cancelled (the client hung up): still queued, leave the queue; handed the lead,
            # pass it on so the connection is not lost; already in a batch, drop the result.
            if waiter in self._queue:
                self._queue.remove(waiter)
            elif waiter.lead:
                self._hand_on()
            raise
        if waiter.lead:
            batch = [waiter]
            while self._queue and len(batch) < self._max_batch:
                batch.append(self._queue.popleft())
            await self._run_batch(batch)
            return self._outcome(waiter, own=True)
        return self._outcome(waiter, own=False)

    async def _run_batch(self, batch: list[_Waiter[K, R]]) -> None:
        try:
            # Shielded: the batch answers other requests too, so the leader's client hanging up
            # must not abandon theirs (the read pool's own timeout bounds how long this takes).
            with anyio.CancelScope(shield=True):
                try:
                    values = await self._read_many([waiter.key for waiter in batch])
                except Exception as exc:
                    for waiter in batch:
                        waiter.error = exc
                else:
                    for waiter, value in zip(batch, values, strict=True):
                        waiter.value = value
        finally:
            for waiter in batch[1:]:  # the first is the leader, which is not waiting
                waiter.done.set()
            self._hand_on()

    def _hand_on(self) -> None:
        """Give the connection to the first queued read, or free it."""
        if self._queue:
            leader = self._queue.popleft()
            leader.lead = True
            leader.done.set()
        else:
            self._running -= 1

    @staticmethod
    def _outcome(waiter: _Waiter[K, R], *, own: bool) -> R:
        error = waiter.error
        if error is None:
            return waiter.value  # type: ignore[return-value]  # set with error None
        if own or not isinstance(error, DatabaseUnavailableError):
            raise error
        # The leader raises the original; each other read raises its own copy (one exception
        # object raised in several tasks would collect all their tracebacks).
        raise DatabaseUnavailableError(str(error)) from error
