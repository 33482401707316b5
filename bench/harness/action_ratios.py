"""Scenario 8: sync and async Action handlers beside a bare FastAPI route (issue 13's goal).

`bench/bench_actions.py` does the measuring: its own uvicorn process on SQLite, a light raw
HTTP/1.1 load generator at 50 concurrent requests, the three targets in alternating rounds. This
runs it as its documented command does (``--requests 3000 --rounds 3`` in a full run) and turns
its p99 ratios into checks against the goal, so that a missed goal is a failed check beside the
others rather than a figure to look up.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench import bench_actions

P99_GOAL = 1.5
"""A handler's p99 latency at most this many times the bare route's p99, sync or async."""

TARGETS = ("action-sync", "action-async")


def _figures(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["results"]
    return {
        "concurrency": results["concurrency"],
        "client": results["client"],
        "rounds": results["rounds"],
        "requests_per_round": results["requests_per_round"],
        **{target: rows[target] for target in ("bare", *TARGETS)},
        "p99_ratio_vs_bare": {target: rows[target]["p99_ratio_vs_bare"] for target in TARGETS},
        "goal": f"p99 <= {P99_GOAL}x the bare route's p99",
    }


async def scenario_action_ratios(*, requests: int, rounds: int) -> dict[str, Any]:
    """Run `bench_actions` (in a thread: it drives its own event loop) and check its ratios."""
    args = argparse.Namespace(
        requests=requests,
        rounds=rounds,
        concurrency=50,
        warmup=200,
        max_seconds=4.0,
        client="raw",
    )
    results = await asyncio.to_thread(bench_actions.run, args)
    figures = _figures(results)
    checks = {
        "every_request_answered_200": all(
            row["failures"] == 0 for row in results["results"].values()
        ),
        **{
            f"{target.replace('-', '_')}_p99_at_most_{P99_GOAL}x_bare": ratio <= P99_GOAL
            for target, ratio in figures["p99_ratio_vs_bare"].items()
        },
    }
    return {"figures": figures, "checks": checks}
