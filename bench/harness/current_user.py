"""The ``current_user`` scenario: `bench/bench_current_user.py`'s measurement, run from
``bench/run.py`` so that one command prints every hot-path ratio.

One uvicorn worker, wrk with 32 connections, ``/me`` (the dependency, with the revoked-session
check) beside the framework's floor (a no-op async endpoint) in alternating rounds, on SQLite and
on the run's PostgreSQL. Goal: ``/me`` at >= 0.5x the floor on each.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio.to_thread

from bench import bench_current_user

CONNECTIONS = 32
GOAL = bench_current_user.GOALS["floor"]


async def scenario_current_user(
    postgres_url: str, *, seconds: float, rounds: int
) -> dict[str, Any]:
    """Scenario 8: ``current_user`` beside the floor, SQLite and PostgreSQL, one worker."""
    options = argparse.Namespace(
        duration=seconds, rounds=rounds, connections=CONNECTIONS, load="wrk", mode="auto"
    )
    figures: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    began = time.perf_counter()
    for backend in ("sqlite", "postgresql"):
        url = postgres_url if backend == "postgresql" else None
        # Blocking (it starts uvicorn and runs wrk): off this process's event loop.
        result = await anyio.to_thread.run_sync(
            bench_current_user.bench_backend, backend, options, url
        )
        rps = result["requests_per_second"]
        figures[backend] = {
            "floor_rps": rps["noop"],
            "current_user_rps": rps["me"],
            "ratio": result["ratio_to_floor"],
            "samples": result["samples"],
            "session_check_ratio": result["session_check_ratio"],
        }
        checks[f"{backend}_ratio_at_least_{GOAL}"] = result["ratio_to_floor"] >= GOAL
    figures["ratios"] = {backend: figures[backend]["ratio"] for backend in ("sqlite", "postgresql")}
    figures["seconds"] = round(time.perf_counter() - began, 1)
    return {"figures": figures, "checks": checks}
