"""Latency of the Actions endpoint beside a bare FastAPI route, measured in the same run.

The app is served by uvicorn on loopback in a child process; this process drives it with an
async load generator at a fixed concurrency, one keep-alive connection per worker, so client and
server do not share an event loop. The default generator speaks HTTP/1.1 on raw asyncio streams;
``--client httpx`` uses httpx instead, whose own cost per request (about a millisecond) dominates
the figures on a small machine. Three targets are measured, in alternating rounds:

- ``bare``: a FastAPI route that reads the body and answers a small JSON object;
- ``action-async``: ``POST /async/action`` with a trivial ``async def`` handler;
- ``action-sync``: ``POST /sync/action`` with a trivial ``def`` handler (runs in a worker thread).

Each action request is a realistic registration payload signed just before it is sent; the
endpoint verifies it, calls the handler with a session, and signs the verdict.

    .venv/bin/python bench/bench_actions.py                        # a few seconds
    .venv/bin/python bench/bench_actions.py --requests 20000 --rounds 3 --max-seconds 60

Results are printed and written to ``bench/results/actions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from sqlmodel import Session

from fastapi_workos_authkit import ActionResponse, ActionVerdict, AuthKit
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit.testing import signed_action_request, user_registration_action

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "actions.json"
SECRET = "action_secret_bench"
TARGETS = ("bare", "action-async", "action-sync")


# --- The server (child process) ------------------------------------------------------------------


def serve(port: int) -> None:
    """Serve the benchmark app on 127.0.0.1:``port`` until killed."""
    directory = tempfile.mkdtemp(prefix="authkit-bench-")
    engine = make_engine(f"sqlite:///{directory}/bench.db")
    kits: list[AuthKit] = []
    app = FastAPI()

    for prefix, asynchronous in (("/async", True), ("/sync", False)):
        kit = AuthKit(action_secret=SECRET, engine=engine, prefix=prefix)
        if asynchronous:

            async def allow_async(
                session: Session, action: object, response: ActionResponse
            ) -> ActionVerdict:
                return response.allow()

            kit.add_action_handler("user_registration", allow_async)
        else:

            def allow_sync(
                session: Session, action: object, response: ActionResponse
            ) -> ActionVerdict:
                return response.allow()

            kit.add_action_handler("user_registration", allow_sync)
        app.include_router(kit.router(webhooks=False))
        kits.append(kit)

    @app.post("/bare")
    async def bare(request: Request) -> dict[str, Any]:
        await request.body()
        return {"object": "bare_response", "payload": {"verdict": "Allow"}}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- The load generator (this process) ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def request_factory(target: str) -> Callable[[], tuple[str, bytes, dict[str, str]]]:
    """Return a function building one request (path, body, headers) for ``target``."""
    payload = user_registration_action("ana@acme.test", action_id="action_01BENCH")
    if target == "bare":
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        return lambda: ("/bare", body, headers)
    path = "/async/action" if target == "action-async" else "/sync/action"

    def build() -> tuple[str, bytes, dict[str, str]]:
        body, headers = signed_action_request(payload, SECRET)
        return path, body, headers

    return build


Sender = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


@asynccontextmanager
async def httpx_sender(base_url: str) -> AsyncIterator[Sender]:
    """One httpx client with one keep-alive connection, for one worker."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def send(path: str, body: bytes, headers: dict[str, str]) -> int:
            response = await client.post(path, content=body, headers=headers)
            return response.status_code

        yield send


@asynccontextmanager
async def raw_sender(base_url: str) -> AsyncIterator[Sender]:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for one worker.

    It costs the load generator a few microseconds per request where httpx costs about a
    millisecond, so on a small machine the figures describe the server, not the client.
    """
    host, _, port = base_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send(path: str, body: bytes, headers: dict[str, str]) -> int:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            f"{lines}\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.partition(":")[2])
            for line in header_lines
            if line.lower().startswith("content-length:")
        )
        await reader.readexactly(length)
        return int(status_line.split()[1])

    try:
        yield send
    finally:
        writer.close()
        await writer.wait_closed()


SENDERS = {"raw": raw_sender, "httpx": httpx_sender}


async def measure(
    base_url: str,
    target: str,
    requests: int,
    concurrency: int,
    max_seconds: float,
    client: str = "raw",
) -> dict[str, Any]:
    """Send up to ``requests`` requests at ``concurrency``; stop early after ``max_seconds``."""
    build = request_factory(target)
    latencies: list[float] = []
    failures = 0
    remaining = requests
    deadline = time.perf_counter() + max_seconds

    # One connection per worker, never a shared pool: a pool shared by 50 tasks spends more
    # time on its own bookkeeping than the server spends answering.
    async def worker() -> None:
        nonlocal remaining, failures
        async with SENDERS[client](base_url) as send:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                path, body, headers = build()
                started = time.perf_counter()
                status = await send(path, body, headers)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"latencies": latencies, "failures": failures, "elapsed": elapsed}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def wait_until_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the benchmark server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the benchmark server did not start in time")


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)], env=env
    )
    try:
        wait_until_ready(base_url, server, timeout=30)
        collected: dict[str, dict[str, Any]] = {
            target: {"latencies": [], "failures": 0, "elapsed": 0.0} for target in TARGETS
        }
        for target in TARGETS:  # warm up connections, imports and caches; not recorded
            asyncio.run(
                measure(
                    base_url, target, args.warmup, args.concurrency, args.max_seconds, args.client
                )
            )
        for _ in range(args.rounds):
            for target in TARGETS:
                result = asyncio.run(
                    measure(
                        base_url,
                        target,
                        args.requests,
                        args.concurrency,
                        args.max_seconds,
                        args.client,
                    )
                )
                collected[target]["latencies"] += result["latencies"]
                collected[target]["failures"] += result["failures"]
                collected[target]["elapsed"] += result["elapsed"]
    finally:
        server.terminate()
        server.wait(timeout=10)

    summary: dict[str, Any] = {}
    for target, data in collected.items():
        latencies = data["latencies"]
        summary[target] = {
            "requests": len(latencies),
            "failures": data["failures"],
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
            "requests_per_second": round(len(latencies) / data["elapsed"], 1),
        }
    bare = summary["bare"]
    for target in TARGETS[1:]:
        summary[target]["p50_ratio_vs_bare"] = round(summary[target]["p50_ms"] / bare["p50_ms"], 2)
        summary[target]["p99_ratio_vs_bare"] = round(summary[target]["p99_ms"] / bare["p99_ms"], 2)
    return {
        "benchmark": "actions endpoint vs bare FastAPI route",
        "concurrency": args.concurrency,
        "client": args.client,
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "max_seconds_per_round": args.max_seconds,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "results": summary,
    }


def report(results: dict[str, Any]) -> None:
    print(
        f"{results['concurrency']} concurrent requests ({results['client']} client), "
        f"{results['rounds']} round(s), "
        f"python {results['python']}, {results['cpus']} CPUs"
    )
    print(f"{'target':<14}{'requests':>9}{'fail':>6}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}  ratio")
    for target, row in results["results"].items():
        ratio = (
            f"p50 x{row['p50_ratio_vs_bare']}, p99 x{row['p99_ratio_vs_bare']}"
            if "p50_ratio_vs_bare" in row
            else "baseline"
        )
        print(
            f"{target:<14}{row['requests']:>9}{row['failures']:>6}{row['p50_ms']:>9.2f}"
            f"{row['p99_ms']:>9.2f}{row['requests_per_second']:>9.0f}  {ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over targets")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=200, help="unrecorded requests per target")
    parser.add_argument(
        "--max-seconds", type=float, default=4.0, help="time cap per target per round"
    )
    parser.add_argument(
        "--client",
        choices=sorted(SENDERS),
        default="raw",
        help="load generator: raw asyncio HTTP/1.1 (default, light) or httpx (heavier)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    results = run(args)
    report(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    if any(row["failures"] for row in results["results"].values()):
        raise SystemExit("some requests did not answer 200: the figures are not comparable")


if __name__ == "__main__":
    main()
