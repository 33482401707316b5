"""Requests per second of ``current_user``, beside the floor and a hand-written dependency.

The app (`bench/current_user_app.py`) runs under uvicorn on loopback, one worker; the load comes
from another process, ``wrk`` (Debian package ``wrk``) or, when it is missing, an async httpx
load generator. Each backend (SQLite, PostgreSQL) gets a fresh database with one synced user and
a real RS256 token. Goal: ``current_user`` at >= 0.5x the floor and >= 2.5x hand-written.

The token carries a ``sid`` naming a mirrored (active) session among many, so ``/me`` pays for
the revoked-session check; ``/me-unchecked`` is the same read with ``reject_revoked_sessions``
off. The two are measured back to back in each round (their order alternating), and the check's
cost is the median of the per-round ratios: goal ``/me`` >= 0.9x ``/me-unchecked``. On a shared
machine requests per second swing with the neighbours' load, so the app process's own CPU time
per request (from ``/proc``) is reported beside it: the steadier measure of the same cost.

    .venv/bin/python bench/bench_current_user.py                   # a few seconds per endpoint
    .venv/bin/python bench/bench_current_user.py --duration 15 --rounds 3
    .venv/bin/python bench/bench_current_user.py --backends sqlite --load httpx

PostgreSQL comes from ``--postgres-url``, ``AUTHKIT_BENCH_POSTGRES_URL`` or
``AUTHKIT_TEST_POSTGRES_URL`` (a throwaway schema is created and dropped); without one, the
PostgreSQL run is skipped with a message. Results go to ``bench/results/current_user.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from fastapi_workos_authkit import AuthKit, AuthSession, User  # noqa: E402
from fastapi_workos_authkit._sync.database import create_tables, make_engine  # noqa: E402
from fastapi_workos_authkit.testing import RSAKeyPair, TokenFactory, factories  # noqa: E402

CLIENT_ID = "client_01BENCH"
USER_ID = "user_01BENCHUSER00000000000000"
SESSION_ID = "session_01BENCHSESSION000000000"
ENDPOINTS = ("noop", "me", "me-unchecked", "handwritten")
GOALS = {"floor": 0.5, "handwritten": 2.5, "session_check": 0.9}
OTHER_SESSIONS = 5_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- databases ------------------------------------------------------------------------------


class Database:
    """A fresh database for one run: a SQLite file, or a throwaway schema on PostgreSQL."""

    def __init__(self, backend: str, postgres_url: str | None) -> None:
        self.backend = backend
        self._schema: str | None = None
        self._tmp: str | None = None
        if backend == "sqlite":
            self._tmp = tempfile.mkdtemp(prefix="authkit-bench-cu.")
            self.url = f"sqlite:///{self._tmp}/bench.db"
            return
        assert postgres_url
        self._admin_url = postgres_url
        self._schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = make_engine(postgres_url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self._schema}"'))
        admin.dispose()
        separator = "&" if "?" in postgres_url else "?"
        self.url = f"{postgres_url}{separator}options=-csearch_path%3D{self._schema}"

    def drop(self) -> None:
        if self._schema:
            admin = make_engine(self._admin_url)
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{self._schema}" CASCADE'))
            admin.dispose()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def seed(url: str) -> None:
    """Create the tables and sync one user, through the package's own pipeline."""
    engine = make_engine(url)
    create_tables(engine)
    authkit = AuthKit(client_id=CLIENT_ID, engine=engine)
    user = User.model_validate(factories.user(USER_ID, email="bench@example.com"))
    authkit.pipeline.apply_user_snapshot(user, source="bench")
    # The token's session, among many others (some revoked), so the lookup is an index probe.
    sessions = [
        AuthSession.model_validate(factories.session(USER_ID, f"session_01BENCH{n:013d}"))
        for n in range(OTHER_SESSIONS)
    ]
    sessions += [
        AuthSession.model_validate(
            factories.session(USER_ID, f"session_01BENCHREVOKED{n:06d}", status="revoked")
        )
        for n in range(OTHER_SESSIONS // 10)
    ]
    sessions.append(AuthSession.model_validate(factories.session(USER_ID, SESSION_ID)))
    authkit.pipeline.apply_snapshots(sessions, kind="session", source="bench", run_handlers=False)
    engine.dispose()


# --- the server -----------------------------------------------------------------------------


class Server:
    """``uvicorn bench.current_user_app:app`` on a free loopback port, in its own process group."""

    def __init__(self, database_url: str, jwks: dict[str, Any], mode: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BENCH_DATABASE_URL": database_url,
            "BENCH_JWKS": json.dumps(jwks),
            "BENCH_CLIENT_ID": CLIENT_ID,
            "BENCH_USER_LOOKUP": mode,
            "PYTHONPATH": str(ROOT),
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.current_user_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"uvicorn exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/noop", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("uvicorn did not start within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- load generators ------------------------------------------------------------------------


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, token: str, duration: float, connections: int) -> float:
    """Requests per second measured by wrk (one thread: the server has the other core)."""
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise SystemExit(f"wrk saw errors against {url}:\n{result.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if not match:
        raise SystemExit(f"Could not read wrk's output:\n{result.stdout}")
    return float(match.group(1))


async def _httpx_load(url: str, token: str, duration: float, connections: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    done = 0
    errors = 0
    async with httpx.AsyncClient(limits=limits, headers=headers) as client:
        stop = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                response = await client.get(url)
                done += 1
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{errors} non-200 answers from {url}")
    return done / elapsed


def run_httpx(url: str, token: str, duration: float, connections: int) -> float:
    """Requests per second from an async httpx generator in a separate process."""
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--_load",
            json.dumps([url, token, duration, connections]),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


# --- the run --------------------------------------------------------------------------------


def bench_backend(
    backend: str, args: argparse.Namespace, postgres_url: str | None
) -> dict[str, Any]:
    database = Database(backend, postgres_url)
    try:
        seed(database.url)
        key = RSAKeyPair.generate(kid="sso_oidc_key_pair_bench")
        tokens = TokenFactory(CLIENT_ID, key=key, lifetime=24 * 3600)
        token = tokens.mint(USER_ID, sid=SESSION_ID)
        server = Server(database.url, tokens.jwks(), args.mode)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            for endpoint in ENDPOINTS:
                response = httpx.get(f"{server.base_url}/{endpoint}", headers=headers)
                response.raise_for_status()
                if endpoint != "noop" and response.json()["id"] != USER_ID:
                    raise SystemExit(f"/{endpoint} answered {response.text}")
            load = run_wrk if args.load == "wrk" else run_httpx
            samples: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
            for endpoint in ENDPOINTS:  # warm up every endpoint (imports, pools, caches)
                load(f"{server.base_url}/{endpoint}", token, 1, args.connections)
            session_ratios: list[float] = []
            cpu_ratios: list[float] = []
            for round_ in range(args.rounds):
                # /me and /me-unchecked back to back, alternating which goes first, so drift
                # on a shared machine touches both alike.
                pair = ["me", "me-unchecked"] if round_ % 2 == 0 else ["me-unchecked", "me"]
                cpu_per_request: dict[str, float] = {}
                for endpoint in ["noop", *pair, "handwritten"]:
                    before = cpu_seconds(server.process.pid)
                    started = time.monotonic()
                    measured = load(
                        f"{server.base_url}/{endpoint}", token, args.duration, args.connections
                    )
                    elapsed = time.monotonic() - started
                    used = cpu_seconds(server.process.pid) - before
                    cpu_per_request[endpoint] = used / max(measured * elapsed, 1.0)
                    samples[endpoint].append(measured)
                session_ratios.append(samples["me"][-1] / samples["me-unchecked"][-1])
                if cpu_per_request["me"] > 0:
                    # Requests per CPU second: checked over unchecked, comparable to the above.
                    cpu_ratios.append(cpu_per_request["me-unchecked"] / cpu_per_request["me"])
        finally:
            server.stop()
    finally:
        database.drop()
    rps = {endpoint: statistics.median(values) for endpoint, values in samples.items()}
    return {
        "requests_per_second": {e: round(v, 1) for e, v in rps.items()},
        "samples": {e: [round(v, 1) for v in values] for e, values in samples.items()},
        "ratio_to_floor": round(rps["me"] / rps["noop"], 3),
        "ratio_to_handwritten": round(rps["me"] / rps["handwritten"], 3),
        "session_check_ratios": [round(r, 3) for r in session_ratios],
        "session_check_ratio": round(statistics.median(session_ratios), 3),
        "session_check_cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "session_check_cpu_ratio": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None,
    }


def postgres_url_from(args: argparse.Namespace) -> str | None:
    return (
        args.postgres_url
        or os.environ.get("AUTHKIT_BENCH_POSTGRES_URL")
        or os.environ.get("AUTHKIT_TEST_POSTGRES_URL")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per endpoint")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--load", choices=["wrk", "httpx"], default=None)
    parser.add_argument(
        "--mode",
        choices=["auto", "async", "thread"],
        default="auto",
        help="how current_user reads the row (UserStore.mode); auto is the library default",
    )
    parser.add_argument("--output", default=str(ROOT / "bench/results/current_user.json"))
    parser.add_argument("--_load", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._load:  # the httpx load generator's own process
        url, token, duration, connections = json.loads(args._load)
        print(asyncio.run(_httpx_load(url, token, duration, connections)))
        return

    if args.load is None:
        if wrk_available():
            args.load = "wrk"
        else:
            print(
                "wrk is not installed (Debian: apt-get install -y wrk); falling back to the "
                "async httpx load generator, which measures less precisely.",
                file=sys.stderr,
            )
            args.load = "httpx"
    elif args.load == "wrk" and not wrk_available():
        raise SystemExit("wrk is not installed: apt-get install -y wrk, or pass --load httpx")

    results: dict[str, Any] = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        postgres_url = postgres_url_from(args) if backend == "postgresql" else None
        if backend == "postgresql" and not postgres_url:
            print(
                "PostgreSQL skipped: pass --postgres-url or set AUTHKIT_BENCH_POSTGRES_URL",
                file=sys.stderr,
            )
            continue
        print(f"{backend}: measuring {', '.join(ENDPOINTS)} ...", file=sys.stderr)
        results[backend] = bench_backend(backend, args, postgres_url)

    print(
        f"\ncurrent_user benchmark ({args.load}, {args.connections} connections, mode {args.mode}, "
        f"{args.duration:g} s x {args.rounds})"
    )
    print(
        f"{'backend':<12}{'floor':>10}{'current_user':>14}{'hand-written':>14}"
        f"{'x floor':>10}{'x hand':>9}{'no check':>10}{'x no check':>12}"
    )
    for backend, result in results.items():
        rps = result["requests_per_second"]
        print(
            f"{backend:<12}{rps['noop']:>10.0f}{rps['me']:>14.0f}{rps['handwritten']:>14.0f}"
            f"{result['ratio_to_floor']:>10.2f}{result['ratio_to_handwritten']:>9.2f}"
            f"{rps['me-unchecked']:>10.0f}{result['session_check_ratio']:>12.3f}"
        )
    for backend, result in results.items():
        floor_ok = result["ratio_to_floor"] >= GOALS["floor"]
        hand_ok = result["ratio_to_handwritten"] >= GOALS["handwritten"]
        check_ok = result["session_check_ratio"] >= GOALS["session_check"]
        print(
            f"{backend}: goal >= {GOALS['floor']}x floor {'met' if floor_ok else 'NOT met'}, "
            f">= {GOALS['handwritten']}x hand-written {'met' if hand_ok else 'NOT met'}, "
            f"session check >= {GOALS['session_check']}x unchecked "
            f"{'met' if check_ok else 'NOT met'} (per round: {result['session_check_ratios']}; "
            f"requests per app CPU second, checked / unchecked: "
            f"{result['session_check_cpu_ratio']} per round {result['session_check_cpu_ratios']})"
        )

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "current_user",
        "load_generator": args.load,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "user_read_mode": args.mode,
        "goals": {
            "ratio_to_floor": GOALS["floor"],
            "ratio_to_handwritten": GOALS["handwritten"],
            "session_check_ratio": GOALS["session_check"],
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": results,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


if __name__ == "__main__":
    main()
