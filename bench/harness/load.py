"""An async httpx load generator: WorkOS-style signed deliveries with retries, and timed loops."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from fastapi_workos_authkit._routes.signatures import sign_header

# Answers worth retrying at once, as WorkOS retries any non-2xx: the database is away (503), a
# worker died under the request (connection errors) or a proxy-ish failure.
_RETRY_NOW = {502, 503, 504}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def latency_summary(latencies: Sequence[float], elapsed: float) -> dict[str, float]:
    """Requests per second and p50/p99 latency in milliseconds."""
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


def make_clients(base_url: str, count: int, connections: int) -> list[httpx.AsyncClient]:
    """``count`` clients with separate pools: concurrent copies of one delivery travel on
    different connections, so they can land on different workers."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return [
        httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(30.0))
        for _ in range(count)
    ]


@dataclass
class DeliveryStats:
    """What happened to the deliveries of one run."""

    attempts: int = 0
    acknowledged: int = 0
    refused: int = 0  # non-2xx answers and connection failures, before any retry
    retried: int = 0
    deferred: int = 0  # answered 500 (a handler failed): left for replay and redelivery
    given_up: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "retried": self.retried,
            "deferred_500": self.deferred,
            "given_up": self.given_up,
            "statuses": dict(self.statuses),
            "outcomes": dict(self.outcomes),
            "workers": len(self.workers),
        }


class Deliverer:
    """Delivers signed webhook bodies as WorkOS does: a fresh signature on every attempt, and
    retries with backoff on 5xx and connection errors until a deadline."""

    def __init__(
        self,
        secret: str,
        stats: DeliveryStats,
        *,
        path: str = "/workos/webhook",
        retry_window: float = 90.0,
        defer_500: bool = False,
    ) -> None:
        self.secret = secret
        self.stats = stats
        self.path = path
        self.retry_window = retry_window
        self.defer_500 = defer_500

    async def deliver(self, client: httpx.AsyncClient, body: bytes) -> tuple[str | None, str]:
        """Deliver ``body`` until acknowledged; return ``(outcome, worker)``.

        ``outcome`` is the acknowledgement's status (``processed``/``duplicate``), or ``None``
        when the delivery was deferred (500) or given up.
        """
        deadline = time.monotonic() + self.retry_window
        backoff = 0.05
        first = True
        while True:
            if not first:
                self.stats.retried += 1
            first = False
            self.stats.attempts += 1
            headers = {
                "Content-Type": "application/json",
                "WorkOS-Signature": sign_header(body, self.secret),
            }
            began = time.perf_counter()
            try:
                response = await client.post(self.path, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.stats.refused += 1
                self.stats.statuses[type(exc).__name__] += 1
            else:
                self.stats.statuses[str(response.status_code)] += 1
                worker = response.headers.get("x-bench-worker", "?")
                if response.is_success:
                    self.stats.latencies.append(time.perf_counter() - began)
                    self.stats.acknowledged += 1
                    self.stats.workers[worker] += 1
                    outcome = str(response.json()["status"])
                    self.stats.outcomes[outcome] += 1
                    return outcome, worker
                self.stats.refused += 1
                if response.status_code == 500 and self.defer_500:
                    self.stats.deferred += 1
                    return None, worker
                if response.status_code < 500 and response.status_code not in _RETRY_NOW:
                    # A signed, valid delivery refused with 4xx is a bug: WorkOS would retry it
                    # for days, in vain. Count it as given up so the run fails.
                    self.stats.given_up += 1
                    return None, worker
            if time.monotonic() > deadline:
                self.stats.given_up += 1
                return None, "?"
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)


async def run_jobs(
    jobs: Sequence[Callable[[], Awaitable[Any]]],
    concurrency: int,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> float:
    """Run ``jobs`` with at most ``concurrency`` at a time; returns the elapsed seconds."""
    queue: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await job()
            done += 1
            if on_progress is not None:
                on_progress(done)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began


async def timed_requests(
    make_request: Callable[[int], Awaitable[httpx.Response]],
    total: int,
    concurrency: int,
    *,
    statuses: Counter[str] | None = None,
) -> dict[str, float]:
    """Send ``total`` requests, ``concurrency`` at a time; figures for the 2xx answers."""
    latencies: list[float] = []
    counter = statuses if statuses is not None else Counter()
    index = iter(range(total))

    async def worker() -> None:
        for i in index:
            began = time.perf_counter()
            try:
                response = await make_request(i)
            except httpx.TransportError as exc:
                counter[type(exc).__name__] += 1
                continue
            counter[str(response.status_code)] += 1
            if response.is_success:
                latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latency_summary(latencies, time.perf_counter() - began)
