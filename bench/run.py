"""Run the load and fault scenarios against the bench app on two uvicorn workers and PostgreSQL.

    .venv/bin/python bench/run.py                      # the full run (every scenario)
    .venv/bin/python bench/run.py --smoke              # small counts, a minute or two
    .venv/bin/python bench/run.py --smoke --scenarios 1,2,5   # what CI runs

It starts a throwaway PostgreSQL and ``uvicorn bench.app:app --workers 2`` on loopback, drives them
from this process, prints each scenario's figures and checks, writes ``bench/results/<mode>.json``
and exits non-zero when any check fails. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.app import ACTION_SECRET, CLIENT_ID, WEBHOOK_SECRET, create_bench_tables  # noqa: E402
from bench.harness import paths, storm, wrk  # noqa: E402
from bench.harness.jwks import JWKSServer  # noqa: E402
from bench.harness.processes import AppServer, Postgres  # noqa: E402
from fastapi_workos_authkit._sync.database import make_engine  # noqa: E402

SIZES = {
    "full": {
        "storm_users": 2000,
        "storm_deliveries": 20000,
        "fault_users": 1000,
        "fault_deliveries": 10000,
        "fuzz_requests": 10000,
        "token_users": 1000,
        "token_seconds": 15,
        "action_seconds": 15,
        "memory_requests": 100000,
        "token_cache_size": 10000,
        "ingest_deliveries": 3000,
        "ingest_rounds": 2,
        "current_user_seconds": 3,
        "current_user_rounds": 3,
        "action_ratio_requests": 3000,
        "action_ratio_rounds": 3,
    },
    "smoke": {
        "storm_users": 100,
        "storm_deliveries": 1000,
        "fault_users": 100,
        "fault_deliveries": 1000,
        "fuzz_requests": 1000,
        "token_users": 200,
        "token_seconds": 3,
        "action_seconds": 3,
        "memory_requests": 5000,
        "token_cache_size": 1000,
        "ingest_deliveries": 300,
        "ingest_rounds": 1,
        "current_user_seconds": 1,
        "current_user_rounds": 1,
        "action_ratio_requests": 300,
        "action_ratio_rounds": 1,
    },
}

# The workers' JWKS refetch cooldown: short enough for the fuzzer's broken-JWKS phase to make
# every worker fetch each document within a second or two, still a throttle.
JWKS_REFETCH_COOLDOWN = 1.0

NAMES = {
    1: "webhook storm",
    2: "faults during the storm",
    3: "token path",
    4: "actions",
    5: "bad input",
    6: "memory",
    7: "webhook ingest beside the floor (wrk)",
    8: "current_user beside the floor, one worker (wrk)",
    9: "sync and async Action handlers beside the bare route (p99 ratios)",
}
WRK_SCENARIOS = (3, 4, 6, 7, 8)
"""The scenarios that use wrk (apt-get install wrk) as load generator."""


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class Run:
    """Everything one run starts, and the handles scenarios need."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode = mode
        self.size = SIZES[mode]
        self.workdir = workdir
        self.failure_file = workdir / "failure-rate"
        self.failure_file.write_text("0")
        self.postgres = Postgres()
        self.app: AppServer | None = None
        self.jwks = JWKSServer(CLIENT_ID)

    def start(self) -> None:
        self.jwks.start()
        self.postgres.start()
        engine = make_engine(self.postgres.url)
        create_bench_tables(engine)
        engine.dispose()
        self.app = AppServer(
            {
                "BENCH_DATABASE_URL": self.postgres.url,
                "BENCH_FAILURE_FILE": str(self.failure_file),
                "BENCH_JWKS_URL": self.jwks.base_url,
                "BENCH_TOKEN_CACHE_SIZE": str(self.size["token_cache_size"]),
                "BENCH_JWKS_REFETCH_COOLDOWN": str(JWKS_REFETCH_COOLDOWN),
            },
            log_path=self.workdir / "uvicorn.log",
        )
        self.app.start()

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
        self.postgres.stop()
        self.jwks.stop()

    def set_failure_rate(self, rate: float) -> None:
        # Written to a new file and renamed, so a worker never reads a half-written value.
        temporary = self.failure_file.with_suffix(".tmp")
        temporary.write_text(str(rate))
        temporary.replace(self.failure_file)
        time.sleep(0.05)


async def scenario_1(run: Run) -> dict[str, Any]:
    assert run.app is not None
    return await storm.scenario_storm(
        run.app.base_url,
        run.postgres.url,
        WEBHOOK_SECRET,
        users=run.size["storm_users"],
        deliveries=run.size["storm_deliveries"],
        concurrency=64,
        tokens=run.jwks.tokens,
    )


async def scenario_2(run: Run) -> dict[str, Any]:
    app = run.app
    assert app is not None
    return await storm.scenario_faults(
        app.base_url,
        run.postgres.url,
        WEBHOOK_SECRET,
        users=run.size["fault_users"],
        deliveries=run.size["fault_deliveries"],
        concurrency=64,
        restart_postgres=run.postgres.restart,
        kill_worker=app.kill_worker,
        wait_workers=lambda: app.wait_ready(60),
        set_failure_rate=run.set_failure_rate,
    )


async def scenario_5(run: Run) -> dict[str, Any]:
    from bench.harness import fuzz

    assert run.app is not None
    return await fuzz.scenario_fuzz(
        run.app.base_url,
        run.postgres.url,
        requests=run.size["fuzz_requests"],
        tokens=run.jwks.tokens,
        webhook_secret=WEBHOOK_SECRET,
        action_secret=ACTION_SECRET,
        jwks=run.jwks,
        jwks_cooldown=JWKS_REFETCH_COOLDOWN,
        server_log=run.workdir / "uvicorn.log",
    )


async def scenario_3(run: Run) -> dict[str, Any]:
    assert run.app is not None
    return await paths.scenario_tokens(
        run.app.base_url,
        run.postgres.url,
        WEBHOOK_SECRET,
        run.jwks.tokens,
        workdir=run.workdir,
        users=run.size["token_users"],
        seconds=run.size["token_seconds"],
    )


async def scenario_4(run: Run) -> dict[str, Any]:
    assert run.app is not None
    return await paths.scenario_actions(
        run.app.base_url, ACTION_SECRET, workdir=run.workdir, seconds=run.size["action_seconds"]
    )


async def scenario_6(run: Run) -> dict[str, Any]:
    app = run.app
    assert app is not None
    return await paths.scenario_memory(
        app.base_url,
        run.postgres.url,
        WEBHOOK_SECRET,
        run.jwks.tokens,
        workdir=run.workdir,
        requests=run.size["memory_requests"],
        worker_pids=app.worker_pids,
        cache_size=run.size["token_cache_size"],
    )


async def scenario_7(run: Run) -> dict[str, Any]:
    from bench.harness import ingest

    def prepare(url: str) -> None:
        engine = make_engine(url)
        create_bench_tables(engine)
        engine.dispose()

    return await ingest.scenario_ingest(
        run.postgres.url,
        WEBHOOK_SECRET,
        workdir=run.workdir,
        deliveries=run.size["ingest_deliveries"],
        rounds=run.size["ingest_rounds"],
        environment={"BENCH_JWKS_URL": run.jwks.base_url},
        prepare=prepare,
    )


async def scenario_8(run: Run) -> dict[str, Any]:
    from bench.harness.current_user import scenario_current_user

    return await scenario_current_user(
        run.postgres.url,
        seconds=run.size["current_user_seconds"],
        rounds=run.size["current_user_rounds"],
    )


async def scenario_9(run: Run) -> dict[str, Any]:
    from bench.harness import action_ratios

    # bench/bench_actions.py's own server (one uvicorn process, SQLite), not the bench app: the
    # same measurement as its documented command, with the p99 goal checked.
    return await action_ratios.scenario_action_ratios(
        requests=run.size["action_ratio_requests"], rounds=run.size["action_ratio_rounds"]
    )


SCENARIOS: dict[int, Callable[[Run], Awaitable[dict[str, Any]]]] = {
    1: scenario_1,
    2: scenario_2,
    5: scenario_5,
    9: scenario_9,
}
if wrk.available():
    SCENARIOS.update({3: scenario_3, 4: scenario_4, 6: scenario_6, 7: scenario_7, 8: scenario_8})


def _print_result(number: int, result: dict[str, Any]) -> None:
    print(f"\n== scenario {number}: {NAMES[number]} ==")
    for key, value in result.get("figures", {}).items():
        print(f"  {key}: {json.dumps(value, default=str)}")
    for key, value in result.get("evidence", {}).items():
        print(f"  {key}: {json.dumps(value, default=str)}")
    for key, ok in result.get("checks", {}).items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {key}")


async def main_async(run: Run, numbers: list[int]) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    for number in numbers:
        scenario = SCENARIOS.get(number)
        if scenario is None:
            # A scenario asked for but not run is a failure, not a silent gap in the figures.
            results[number] = {
                "skipped": "wrk is not installed: apt-get install wrk",
                "checks": {"wrk_installed": False},
            }
            print(
                f"\n== scenario {number}: {NAMES[number]} == FAILED: it drives the server with "
                "wrk, which is not installed (apt-get install wrk)"
            )
            continue
        began = time.perf_counter()
        try:
            result = await asyncio.wait_for(scenario(run), timeout=900)
        except Exception as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}", "checks": {"completed": False}}
        result["wall_seconds"] = round(time.perf_counter() - began, 1)
        results[number] = result
        _print_result(number, result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="small counts (what CI runs)")
    parser.add_argument(
        "--scenarios",
        default=",".join(str(number) for number in NAMES),
        help=f"comma-separated scenario numbers (1-{max(NAMES)})",
    )
    parser.add_argument("--output", help="where to write the JSON results")
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "full"
    numbers = [int(part) for part in args.scenarios.split(",") if part.strip()]
    unknown = [n for n in numbers if n not in NAMES]
    if unknown:
        parser.error(f"unknown scenarios: {unknown}")
    missing_wrk = [n for n in numbers if n in WRK_SCENARIOS and not wrk.available()]
    if missing_wrk:
        parser.error(
            f"scenarios {missing_wrk} drive the server with wrk, which is not installed: "
            "apt-get install wrk (or leave them out with --scenarios)"
        )
    output = Path(args.output) if args.output else ROOT / "bench" / "results" / f"{mode}.json"
    # Stopped from outside (CI timeout, `timeout`, kill): still stop uvicorn and PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="authkit-bench.") as directory:
        run = Run(mode, Path(directory))
        try:
            run.start()
            results = asyncio.run(main_async(run, numbers))
        except BaseException:
            log = Path(directory) / "uvicorn.log"
            if log.exists():
                print(log.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            run.stop()
    failed = [
        f"{number}:{name}"
        for number, result in results.items()
        for name, ok in result.get("checks", {}).items()
        if not ok
    ]
    report = {
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "commit": os.environ.get("BENCH_COMMIT") or _git_commit(),
        "mode": mode,
        "started_at": started.isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),
        "sizes": run.size,
        "scenarios": {str(number): result for number, result in results.items()},
        "failed_checks": failed,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {output} ({report['total_seconds']} s)")
    if failed:
        print(f"FAILED checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
