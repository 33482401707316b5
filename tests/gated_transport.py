"""A fake WorkOS that answers slowly on demand: while held, a request waits at the gate."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx


class GatedTransport:
    """An httpx transport around a fake WorkOS handler (`FakeJWKS.handle`...).

    While `hold` is in effect, every request reaches the fake WorkOS only after `release`: a
    test can see whether a caller waits for WorkOS. `waiting` counts the requests at the gate.
    The gate is an anyio event of the test's loop, so hold and release on that loop.
    """

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self._handler = handler
        self._gate: anyio.Event | None = None
        self.waiting = 0

    def hold(self) -> None:
        """From now on, requests wait at the gate."""
        self._gate = anyio.Event()

    def release(self) -> None:
        """Let the waiting requests (and the next ones) through."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        gate = self._gate
        if gate is not None:
            self.waiting += 1
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        return self._handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)
