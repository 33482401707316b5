"""The Actions benchmark still runs: a tiny run against a real uvicorn server in a child process."""

from __future__ import annotations

import argparse
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
