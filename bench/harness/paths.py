"""Scenarios 3, 4 and 6: the token path, Actions, and memory under many distinct tokens."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastapi_workos_authkit.testing import encode, factories
from fastapi_workos_authkit.testing.actions import (
    authentication_action,
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from fastapi_workos_authkit.testing.tokens import RSAKeyPair, TokenFactory

from .load import Deliverer, DeliveryStats, make_clients, timed_requests
from .processes import memory_kib
from .storm import _BASE, WorkerConnections, reset_tables
from .wrk import run_wrk


def _user_id(index: int) -> str:
    return f"user_01TOKEN{index:019d}"


async def seed_users(base_url: str, secret: str, count: int) -> None:
    """Create ``count`` users by webhook, so tokens for them resolve to a synced row."""
    stats = DeliveryStats()
    deliverer = Deliverer(secret, stats)
    clients = make_clients(base_url, 2, 32)
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            payload = factories.user_created(
                _user_id(index),
                created_at=_BASE,
                updated_at=_BASE,
                event_id=f"event_01SEED{index:018d}",
            )
            outcome, _ = await deliverer.deliver(clients[index % 2], encode(payload))
            if outcome is None:
                raise RuntimeError(f"could not seed user {index}: {stats.as_dict()}")

    try:
        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        for client in clients:
            await client.aclose()


async def _webhook_updates(
    base_url: str, secret: str, users: int, stop: asyncio.Event, stats: DeliveryStats
) -> None:
    """Keep updating the same users by webhook (4 at a time) until ``stop`` is set."""
    deliverer = Deliverer(secret, stats)
    clients = make_clients(base_url, 1, 4)
    step = 0

    async def worker(slot: int) -> None:
        nonlocal step
        while not stop.is_set():
            step += 1
            index = random.randrange(users)
            updated = _BASE + timedelta(seconds=step)
            payload = factories.user_updated(
                _user_id(index),
                created_at=_BASE,
                updated_at=updated,
                first_name=f"Update{step}",
                event_id=f"event_01UPD{slot}{step:018d}",
            )
            await deliverer.deliver(clients[0], encode(payload))

    try:
        await asyncio.gather(*(worker(slot) for slot in range(4)))
    finally:
        await clients[0].aclose()


async def scenario_tokens(
    base_url: str,
    db_url: str,
    secret: str,
    tokens: TokenFactory,
    *,
    workdir: Path,
    users: int,
    seconds: float,
) -> dict[str, Any]:
    """Scenario 3: current_user beside the no-op floor and the hand-written PyJWT dependency,
    at 64 concurrent requests, while webhooks update the same users."""
    reset_tables(db_url)
    await seed_users(base_url, secret, users)
    items = [(f"Bearer {tokens.mint(_user_id(i))}", "") for i in range(users)]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for path in ("/bench/me", "/bench/me-pyjwt"):
            answer = await client.get(path, headers={"Authorization": items[0][0]})
            if answer.status_code != 200:
                raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:200]}")
    runs: dict[str, Any] = {}
    updates = DeliveryStats()
    stop = asyncio.Event()
    background = asyncio.create_task(_webhook_updates(base_url, secret, users, stop, updates))
    try:
        for name, path in (
            ("noop_floor", "/bench/noop"),
            ("current_user", "/bench/me"),
            ("pyjwt_session", "/bench/me-pyjwt"),
        ):
            # A short warm-up fills caches and pools, as a running app has them.
            await run_wrk(
                base_url, path, workdir=workdir, items=items, seconds=2, name=f"{name}-warm"
            )
            runs[name] = await run_wrk(
                base_url, path, workdir=workdir, items=items, seconds=seconds, name=name
            )
    finally:
        stop.set()
        await background
    current, floor, pyjwt = runs["current_user"], runs["noop_floor"], runs["pyjwt_session"]
    return {
        "checks": {
            "all_token_requests_answered_2xx": all(
                run["non_2xx"] == 0 and run["socket_errors"] == 0 for run in runs.values()
            ),
            "webhook_updates_acknowledged": updates.given_up == 0 and updates.acknowledged > 0,
        },
        "figures": {
            **runs,
            "users": users,
            "distinct_tokens": len(items),
            "webhook_updates_during_runs": updates.acknowledged,
            "current_user_rps_vs_floor": round(current["rps"] / floor["rps"], 3),
            "current_user_rps_vs_pyjwt": round(current["rps"] / pyjwt["rps"], 3),
            "current_user_p99_vs_pyjwt": round(current["p99_ms"] / pyjwt["p99_ms"], 3)
            if pyjwt["p99_ms"]
            else None,
        },
    }


async def scenario_actions(
    base_url: str, action_secret: str, *, workdir: Path, seconds: float
) -> dict[str, Any]:
    """Scenario 4: the Actions endpoint at 50 concurrent requests (both action types, allow and
    deny), beside the no-op floor at the same concurrency."""
    payloads = []
    for index in range(200):
        kind = index % 4
        if kind == 0:
            payloads.append((authentication_action(factories.user(email_verified=True)), "Allow"))
        elif kind == 1:
            payloads.append((authentication_action(factories.user(email_verified=False)), "Deny"))
        elif kind == 2:
            payloads.append((user_registration_action(email=f"ana{index}@acme.test"), "Allow"))
        else:
            payloads.append((user_registration_action(email=f"bo{index}@gmail.com"), "Deny"))
    signed = [signed_action_request(payload, action_secret) for payload, _ in payloads]
    wrong_verdicts = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for (body, headers), (_, verdict) in zip(signed, payloads, strict=True):
            answer = await client.post("/workos/action", content=body, headers=headers)
            parsed = verify_action_response(answer.content, action_secret)
            wrong_verdicts += parsed.payload.verdict != verdict
    seconds = min(seconds, 20)
    floor = await run_wrk(
        base_url, "/bench/noop", workdir=workdir, connections=50, seconds=seconds, name="noop50"
    )
    # Signed again right before the run, so every request is well inside the 30 s tolerance.
    signed = [signed_action_request(payload, action_secret) for payload, _ in payloads]
    items = [(headers["WorkOS-Signature"], body.decode("utf-8")) for body, headers in signed]
    actions = await run_wrk(
        base_url,
        "/workos/action",
        workdir=workdir,
        items=items,
        header="WorkOS-Signature",
        method="POST",
        connections=50,
        seconds=seconds,
        name="actions",
    )
    return {
        "checks": {
            "replies_verify_with_expected_verdicts": wrong_verdicts == 0,
            "all_action_requests_answered_2xx": actions["non_2xx"] == 0
            and actions["socket_errors"] == 0,
        },
        "figures": {
            "actions": actions,
            "noop_floor_50": floor,
            "actions_p50_ms": actions["p50_ms"],
            "actions_p99_ms": actions["p99_ms"],
            "actions_rps_vs_floor": round(actions["rps"] / floor["rps"], 3),
        },
    }


def _mint_batch(args: tuple[bytes, str, str, list[str]]) -> list[str]:
    pem, kid, client_id, subjects = args
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    factory = TokenFactory(client_id, key=RSAKeyPair(private_key=key, kid=kid), lifetime=3600)
    return [factory.mint(sub) for sub in subjects]


def mint_many(tokens: TokenFactory, subjects: list[str]) -> list[str]:
    """Mint one token per subject on every core (RS256 signing is the slow part)."""
    pem = tokens.key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chunk = 2000
    batches = [
        (pem, tokens.key.kid, tokens.client_id, subjects[i : i + chunk])
        for i in range(0, len(subjects), chunk)
    ]
    with multiprocessing.get_context("spawn").Pool() as pool:
        return [token for batch in pool.map(_mint_batch, batches) for token in batch]


async def scenario_memory(
    base_url: str,
    db_url: str,
    secret: str,
    tokens: TokenFactory,
    *,
    workdir: Path,
    requests: int,
    worker_pids: Callable[[], list[int]],
    cache_size: int,
) -> dict[str, Any]:
    """Scenario 6: RSS of each worker while it serves ``requests`` requests, each with a
    distinct token; the verified-token cache is bounded, so RSS must level off."""
    reset_tables(db_url)
    users = 200
    await seed_users(base_url, secret, users)
    began = time.perf_counter()
    minted = await asyncio.to_thread(
        mint_many, tokens, [_user_id(i % users) for i in range(requests)]
    )
    mint_seconds = time.perf_counter() - began
    items = [(f"Bearer {token}", "") for token in minted]
    pids = worker_pids()
    samples: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def sample() -> None:
        start = time.perf_counter()
        while not done.is_set():
            samples.append(
                {
                    "t": round(time.perf_counter() - start, 2),
                    **{str(pid): memory_kib(pid).get("VmRSS", 0) for pid in pids},
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=1.0)

    # httpx over per-worker connections rather than wrk: wrk opens its connections in one
    # burst, and one worker's accept loop can take them all, leaving the other worker idle.
    connections = WorkerConnections(base_url)
    await connections.open(per_worker=32)
    served: Counter[str] = Counter()
    statuses: Counter[str] = Counter()

    async def request(i: int) -> httpx.Response:
        queue = connections.workers(1, i)[0]
        client = await queue.get()
        try:
            response = await client.get("/bench/me", headers={"Authorization": items[i][0]})
        finally:
            queue.put_nowait(client)
        served[response.headers.get("x-bench-worker", "?")] += 1
        return response

    sampler = asyncio.create_task(sample())
    try:
        run = await timed_requests(request, requests, 64, statuses=statuses)
    finally:
        done.set()
        await sampler
        await connections.aclose()
    run["non_2xx"] = sum(n for status, n in statuses.items() if not status.startswith("2"))
    run["served_per_worker"] = dict(served)
    per_worker: dict[str, Any] = {}
    plateaus = True
    for pid in pids:
        series = [s[str(pid)] for s in samples if s.get(str(pid))]
        if len(series) < 4:
            continue
        peak = memory_kib(pid).get("VmHWM", max(series))
        quarter = len(series) // 4
        first_half_growth = series[len(series) // 2] - series[0]
        last_quarter_growth = series[-1] - series[-1 - quarter]
        # Level: over the last quarter of the run, RSS grows by under 8 MiB (allocator noise),
        # though a quarter of the requests brought new tokens.
        levelled = last_quarter_growth < 8 * 1024
        plateaus = plateaus and levelled
        per_worker[str(pid)] = {
            "requests_served": served.get(str(pid), 0),
            "rss_start_mib": round(series[0] / 1024, 1),
            "rss_half_mib": round(series[len(series) // 2] / 1024, 1),
            "rss_end_mib": round(series[-1] / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1),
            "growth_first_half_mib": round(first_half_growth / 1024, 1),
            "growth_last_quarter_mib": round(last_quarter_growth / 1024, 1),
        }
    return {
        "checks": {
            "all_requests_answered_2xx": run["non_2xx"] == 0,
            "served_every_distinct_token": run["requests"] >= requests,
            "both_workers_served": len(served) >= 2 and min(served.values()) >= requests // 4,
            "rss_levels_off": plateaus and bool(per_worker),
        },
        "figures": {
            "requests": run["requests"],
            "distinct_tokens": len(set(minted)),
            "token_cache_size_per_worker": cache_size,
            "mint_seconds": round(mint_seconds, 1),
            "run": run,
            "workers": per_worker,
            "samples": len(samples),
        },
        "evidence": {"rss_kib_samples": samples[:: max(1, len(samples) // 40)]},
    }
