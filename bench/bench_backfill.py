"""Backfill throughput and memory: users from a local fake WorkOS into SQLite and PostgreSQL.

A fake WorkOS (``python -m fastapi_workos_authkit.testing``) seeded with N users is served by
uvicorn in a child process on loopback, pages of 100 as WorkOS serves them. Each measurement runs
in its own child process, so its peak RSS is its own:

- ``fetch``: the baseline, paging through every user with the package's REST client and writing
  nothing (the fastest any backfill could go against this server);
- ``sqlite``: ``backfill_users()`` into a fresh SQLite file;
- ``postgresql``: ``backfill_users()`` into a fresh schema of the PostgreSQL at
  ``--postgres-url`` / ``AUTHKIT_TEST_POSTGRES_URL`` (skipped when neither is set).

Two sizes are run (N/5 and N) so that flat memory shows as equal peaks. A ``user.created``
handler is registered, as an app would have, and does a trivial amount of work.

    .venv/bin/python bench/bench_backfill.py                  # 1,000 and 5,000 users
    .venv/bin/python bench/bench_backfill.py --users 100000   # 20,000 and 100,000 users

Results are printed and written to ``bench/results/backfill.json``. The target is at least
5,000 users/s of ingest: WorkOS's own limit (1,000 reads per 10 s, i.e. 10,000 users/s at 100 a
page) should be the bottleneck, not this package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "backfill.json"
API_KEY = "sk_bench_key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS); this benchmark runs on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FakeServer:
    """The fake WorkOS in a uvicorn child process, seeded with ``users`` users."""

    def __init__(self, users: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastapi_workos_authkit.testing",
                "--port",
                str(self.port),
                "--users",
                str(users),
                "--api-key",
                API_KEY,
            ],
            cwd=ROOT,
        )

    def __enter__(self) -> FakeServer:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the fake WorkOS server exited")
            try:
                httpx.get(f"{self.url}/events", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the fake WorkOS server did not start")

    def __exit__(self, *_exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# -- the child measurements ----------------------------------------------------------------


async def _fetch_only(url: str) -> int:
    from fastapi_workos_authkit._recovery.workos_api import WorkOSClient

    seen = 0
    after: str | None = None
    async with WorkOSClient(base_url=url, api_key=API_KEY) as client:
        while True:
            page = await client.list_users(after=after, limit=100)
            seen += len(page.data)
            if page.after is None or not page.data:
                return seen
            after = page.data[-1].id


async def _backfill(url: str, database_url: str) -> int:
    from sqlmodel import Session

    from fastapi_workos_authkit import AuthKit, Event, User
    from fastapi_workos_authkit._sync.database import create_tables

    kit = AuthKit(api_key=API_KEY, api_base_url=url, database_url=database_url)
    welcomed = 0

    @kit.on("user.created")
    def welcome(session: Session, event: Event[User]) -> None:
        nonlocal welcomed
        welcomed += 1

    await anyio.to_thread.run_sync(create_tables, kit.engine)
    try:
        result = await kit.backfill_users()
    finally:
        await kit.shutdown()
    assert result.inserted == result.seen == welcomed, result
    return result.seen


def child(mode: str, url: str, database_url: str) -> None:
    """Run one measurement and print it as JSON (invoked by the parent with ``--child``)."""
    import fastapi_workos_authkit  # noqa: F401 - import time is not backfill time

    started = time.perf_counter()
    if mode == "fetch":
        seen = anyio.run(_fetch_only, url)
    else:
        seen = anyio.run(_backfill, url, database_url)
    elapsed = time.perf_counter() - started
    print(json.dumps({"users": seen, "seconds": elapsed, "peak_rss_mib": _peak_rss_mib()}))


def _measure(mode: str, url: str, database_url: str = "") -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url, "--database-url", database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{out.stderr}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    data["users_per_second"] = data["users"] / data["seconds"]
    return data


def _postgres_schema(admin_url: str) -> tuple[str, Any]:
    from sqlalchemy import text

    from fastapi_workos_authkit._sync.database import make_engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in admin_url else "?"

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{admin_url}{separator}options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5000, help="the larger size (default 5000)")
    parser.add_argument("--postgres-url", default=os.environ.get("AUTHKIT_TEST_POSTGRES_URL"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--child", choices=["fetch", "sqlite", "postgresql"], help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.database_url)
        return

    sizes = sorted({max(args.users // 5, 100), args.users})
    runs: list[dict[str, Any]] = []
    for size in sizes:
        with FakeServer(size) as server, tempfile.TemporaryDirectory() as tmp:
            baseline = _measure("fetch", server.url)
            runs.append({"size": size, "target": "fetch (no database)", **baseline})
            print(_line(runs[-1], baseline), flush=True)
            sqlite = _measure("sqlite", server.url, f"sqlite:///{tmp}/bench.db")
            runs.append({"size": size, "target": "sqlite", **sqlite})
            print(_line(runs[-1], baseline), flush=True)
            if args.postgres_url:
                url, drop = _postgres_schema(args.postgres_url)
                try:
                    postgres = _measure("postgresql", server.url, url)
                finally:
                    drop()
                runs.append({"size": size, "target": "postgresql", **postgres})
                print(_line(runs[-1], baseline), flush=True)
    for run in runs:
        base = next(r for r in runs if r["size"] == run["size"] and r["target"].startswith("fetch"))
        run["ratio_to_fetch"] = run["users_per_second"] / base["users_per_second"]
    report = {
        "benchmark": "backfill_users from a local fake WorkOS (uvicorn, loopback, pages of 100)",
        "target_users_per_second": 5000,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "sizes": sizes,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")


def _line(run: dict[str, Any], baseline: dict[str, Any]) -> str:
    ratio = run["users_per_second"] / baseline["users_per_second"]
    return (
        f"{run['size']:>7,} users  {run['target']:<20} {run['users_per_second']:>9,.0f} users/s  "
        f"peak RSS {run['peak_rss_mib']:>6.1f} MiB  ({ratio:.2f}x the fetch-only rate)"
    )


if __name__ == "__main__":
    main()
