"""`PerLoop`: a value that belongs to one event loop, made again when used from another.

anyio's locks and limiters, and httpx's connections, live on the loop that made them. The
package's long-lived objects may be used from several loops (a ``TestClient`` without a
lifespan runs each request on a fresh loop; a test suite runs many; two threads may each run
one), so such a value is kept with the loop it was made on and remade on a different one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import anyio.lowlevel

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``make()``'s value for the running event loop; the previous loop's is dropped.

    Args:
        make: Builds the value; called on the loop that will use it.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._held: tuple[anyio.lowlevel.EventLoopToken, T] | None = None

    def get(self) -> T:
        """The value for the running loop, made now if it has none."""
        token = anyio.lowlevel.current_token()
        held = self._held
        if held is None or held[0] != token:
            held = (token, self._make())
            self._held = held
        return held[1]

    def forget(self) -> T | None:
        """Drop the value (the next `get` makes a new one); return it if the running loop made
        it, so the caller can close it there, else None (another loop's is simply dropped)."""
        held, self._held = self._held, None
        if held is not None and held[0] == anyio.lowlevel.current_token():
            return held[1]
        return None
