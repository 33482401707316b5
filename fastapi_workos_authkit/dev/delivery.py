"""The dev server's webhook queue: every change reaches the app as a signed delivery.

One worker sends the events in the order they happened. Like WorkOS, it retries any non-2xx
answer or network failure with exponential backoff; unlike production (3 days), it gives up
after a few minutes' worth of attempts, logs it, and moves on to the next event. Each attempt is
logged with the event's type and id and the answer's status, never the body or the signature.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ..testing import encode, signed_delivery

logger = logging.getLogger("fastapi_workos_authkit.dev")

# Seconds before each retry: 1, 2, 4 ... 60, then 60 again; 12 attempts span about 6 minutes.
DEFAULT_BACKOFF: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Attempt:
    """One delivery attempt, as logged: the event, its attempt number and the answer."""

    event_id: str
    event_type: str
    attempt: int
    status: int | None
    error: str | None = None


@dataclass
class WebhookQueue:
    """Signs and delivers events to ``url`` one at a time, in order, with retries.

    Args:
        url: The app's webhook route (``{app_url}{prefix}/webhook``).
        secret: The webhook signing secret the app was given.
        client: The HTTP client (tests pass one over an ASGI transport).
        backoff: Seconds to wait before each retry; its length is the number of retries.
        sleep: How to wait (tests pass one that does not).
    """

    url: str
    secret: str
    client: httpx.AsyncClient
    backoff: Sequence[float] = DEFAULT_BACKOFF
    sleep: Sleep = anyio.sleep
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A plain deque and an Event made inside `run`: nothing to close, and the queue can be
        # built before the event loop starts (as `dev serve` does).
        self._items: deque[dict[str, Any]] = deque()
        self._wake: anyio.Event | None = None

    @property
    def pending(self) -> int:
        """Events queued or being delivered."""
        return len(self._items)

    def put(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (never waits: the caller does not wait for the app)."""
        self._items.append(event)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Deliver queued events, in order, until cancelled (run it in a task group)."""
        while True:
            while self._items:
                await self.deliver(self._items[0])
                self._items.popleft()
            self._wake = anyio.Event()
            await self._wake.wait()

    async def deliver(self, event: dict[str, Any]) -> bool:
        """Deliver one event, retrying per `backoff`; ``True`` once the app answered 2xx."""
        body = encode(event)
        for number in range(1, len(self.backoff) + 2):
            # Signed again for each attempt, as WorkOS does: the timestamp must stay fresh.
            _, headers = signed_delivery(body, self.secret)
            attempt = Attempt(event["id"], event["event"], number, None)
            try:
                answer = await self.client.post(self.url, content=body, headers=headers)
                attempt.status = answer.status_code
            except httpx.HTTPError as exc:
                attempt.error = type(exc).__name__
            self.attempts.append(attempt)
            if attempt.status is not None and 200 <= attempt.status < 300:
                logger.info(
                    "webhook %s %s delivered (attempt %d, %d)",
                    attempt.event_type,
                    attempt.event_id,
                    number,
                    attempt.status,
                )
                return True
            outcome = attempt.error or f"HTTP {attempt.status}"
            if number > len(self.backoff):
                logger.error(
                    "webhook %s %s given up after %d attempts (last: %s)",
                    attempt.event_type,
                    attempt.event_id,
                    number,
                    outcome,
                )
                return False
            delay = self.backoff[number - 1]
            logger.warning(
                "webhook %s %s attempt %d failed (%s): retrying in %gs",
                attempt.event_type,
                attempt.event_id,
                number,
                outcome,
                delay,
            )
            await self.sleep(delay)
        return False  # pragma: no cover - the loop always returns
