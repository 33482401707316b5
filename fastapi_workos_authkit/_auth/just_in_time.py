"""`JustInTime`: what every just-in-time fetch of an object missing from the mirror
shares: one WorkOS call per key at a time (single flight) and a bounded, short memory of the
keys WorkOS answered 404 for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

from .._config import Clock

JIT_TIMEOUT_SECONDS = 10.0
"""How long a request waits for WorkOS when fetching an unsynced user just in time."""

NOT_FOUND_CACHE_SIZE = 10_000
"""How many user ids WorkOS answered 404 for are remembered (for ``user_not_found_ttl``) at most;
past it the oldest are forgotten first."""


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class JustInTime(Generic[K]):
    """What every just-in-time fetch shares: single flight, and a short memory of 404s.

    `run` fetches an object missing from the mirror. Concurrent requests for one key share one
    WorkOS call and its outcome, failures included. A 404 (the fetch calls `remember_not_found`)
    is remembered for ``not_found_ttl`` seconds by ``clock`` (at most `NOT_FOUND_CACHE_SIZE`
    keys), so tokens naming objects WorkOS does not know cannot spend the WorkOS rate limit.
    Failures (5xx, timeouts, a body that is not the object) are not remembered: the next request
    asks again.

    Args:
        clock: Returns Unix seconds.
        not_found_ttl: Seconds a 404 is remembered (0 remembers nothing).
    """

    def __init__(self, clock: Clock, not_found_ttl: float) -> None:
        if not not_found_ttl >= 0:  # also refuses NaN
            raise ValueError("not_found_ttl must be 0 or a positive number of seconds")
        self._clock = clock
        self.not_found_ttl = float(not_found_ttl)
        # key -> when its 404 stops being trusted; insertion order is expiry order, since every
        # entry lives the same TTL, so the first entry is always the next to expire.
        self._not_found: OrderedDict[K, float] = OrderedDict()
        self._flights: dict[K, _Flight] = {}

    def forget(self) -> None:
        """Forget every remembered 404 (the database or WorkOS behind it changed)."""
        self._not_found.clear()

    async def run(
        self,
        key: K,
        *,
        fetch: Callable[[], Awaitable[None]],
        reread: Callable[[], Awaitable[V]],
        not_found: Callable[[], Exception],
    ) -> V:
        """``fetch()`` (applying the object through the pipeline) then ``reread()``, once per key
        at a time: a request arriving meanwhile waits for that fetch and rereads. A key WorkOS
        recently answered 404 for raises ``not_found()`` without a call."""
        if self._known_not_found(key):
            raise not_found()
        while True:
            flight = self._flights.get(key)
            if flight is None:
                break
            # Another request is fetching this object: share its outcome rather than ask again.
            flight.waiters += 1
            try:
                await flight.done.wait()
            finally:
                flight.waiters -= 1
            if flight.error is not None:
                raise flight.error
            if flight.fetched:
                return await reread()
            # The fetching request was cancelled (its client went away): try again, maybe
            # leading the next flight.
        flight = _Flight()
        self._flights[key] = flight
        try:
            await fetch()
            result = await reread()
            flight.fetched = True
            return result
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    def waiters(self, key: K) -> int:
        """How many requests wait on the fetch of ``key`` in progress, besides its leader."""
        flight = self._flights.get(key)
        return 0 if flight is None else flight.waiters

    def _known_not_found(self, key: K) -> bool:
        expires = self._not_found.get(key)
        if expires is None:
            return False
        if self._clock() < expires:
            return True
        del self._not_found[key]
        return False

    def remember_not_found(self, key: K) -> None:
        """Remember that WorkOS answered 404 for ``key``, for ``not_found_ttl`` seconds."""
        if self.not_found_ttl <= 0:
            return
        now = self._clock()
        self._not_found.pop(key, None)
        self._not_found[key] = now + self.not_found_ttl
        # Drop what has expired, then the oldest past the bound: a flood of unknown ids (each
        # needs a validly signed token) cannot grow this without limit.
        while self._not_found:
            oldest, expires = next(iter(self._not_found.items()))
            if expires > now and len(self._not_found) <= NOT_FOUND_CACHE_SIZE:
                break
            del self._not_found[oldest]


class _Flight:
    """One just-in-time fetch in progress, and its outcome for the requests waiting on it."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.waiters = 0
        self.fetched = False
        self.error: Exception | None = None
