"""The Actions benchmark still runs: a tiny run against a real uvicorn server in a child process."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_actions.py"


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_a_tiny_benchmark_run_answers_every_request(client: str) -> None:
    spec = importlib.util.spec_from_file_location("bench_actions", BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(
        requests=30, rounds=1, concurrency=5, warmup=5, max_seconds=20.0, client=client
    )
    results = bench.run(args)
    assert set(results["results"]) == {"bare", "action-async", "action-sync"}
    for row in results["results"].values():
        assert row["failures"] == 0
        assert row["requests"] == 30
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert results["results"]["action-sync"]["p99_ratio_vs_bare"] > 0
    assert results["client"] == client


def test_run_py_scenario_9_checks_each_p99_ratio_against_the_goal() -> None:
    from bench.harness import action_ratios

    result = asyncio.run(action_ratios.scenario_action_ratios(requests=30, rounds=1))
    ratios = result["figures"]["p99_ratio_vs_bare"]
    assert set(ratios) == {"action-sync", "action-async"}
    assert result["figures"]["action-sync"]["requests"] == 30
    # A missed goal is a failed check, reported beside the others; never an exception.
    assert result["checks"] == {
        "every_request_answered_200": True,
        "action_sync_p99_at_most_1.5x_bare": ratios["action-sync"] <= 1.5,
        "action_async_p99_at_most_1.5x_bare": ratios["action-async"] <= 1.5,
    }


def test_the_report_shows_scenario_9_beside_its_goal() -> None:
    from bench.report import render

    row = {"requests": 9, "failures": 0, "p50_ms": 1.0, "p99_ms": 2.0, "requests_per_second": 9}
    page = render(
        {
            "command": "bench/run.py --scenarios 9",
            "commit": "0" * 40,
            "started_at": "2026-01-01T00:00:00+00:00",
            "total_seconds": 1.0,
            "machine": {"nproc": 2, "cpu": "x", "python": "3", "platform": "linux"},
            "failed_checks": ["9:action_sync_p99_at_most_1.5x_bare"],
            "scenarios": {
                "9": {
                    "figures": {
                        "bare": row,
                        "action-async": {**row, "p99_ratio_vs_bare": 1.4},
                        "action-sync": {**row, "p99_ratio_vs_bare": 2.1},
                        "p99_ratio_vs_bare": {"action-sync": 2.1, "action-async": 1.4},
                        "goal": "p99 <= 1.5x the bare route's p99",
                    },
                    "checks": {
                        "action_sync_p99_at_most_1.5x_bare": False,
                        "action_async_p99_at_most_1.5x_bare": True,
                    },
                }
            },
        }
    )
    assert (
        "| sync Action handler, p99 ÷ bare route's p99, 50 concurrent (scenario 9) | "
        "`bench/run.py` | **2.1** | ≤ 1.5 |" in page
    )
    assert "- ❌ `action_sync_p99_at_most_1.5x_bare`" in page
    assert "| action-async | 1.0 ms | 2.0 ms | 9 | 1.4 | met |" in page
    assert "| action-sync | 1.0 ms | 2.0 ms | 9 | 2.1 | **missed** |" in page
