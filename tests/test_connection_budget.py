"""The documented per-process connection budget holds under load, on a real PostgreSQL.

The test starts its own throwaway PostgreSQL whose ``max_connections`` is exactly the documented
per-process maximum plus ``superuser_reserved_connections``, so the app's role (not a superuser)
can open no connection beyond the budget: one more would be refused and answered 503. One real
uvicorn worker of an ``AuthKit(database_url=...)`` app then serves concurrent ``/me`` requests
(real RS256 tokens) and signed webhook deliveries, while a superuser connection samples
``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit._config import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_READ_POOL_SIZE,
)
from fastapi_workos_authkit._exceptions import ConfigurationError
from fastapi_workos_authkit.testing import RSAKeyPair, TokenFactory, factories, signed_delivery

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID = "client_01BUDGET"
WEBHOOK_SECRET = "whsec_budget"
USER_ID = "user_01BUDGETUSER"
RESERVED = 3  # PostgreSQL's default superuser_reserved_connections
CONCURRENCY = 24  # /me requests, and as many webhook deliveries, in flight at once
LOAD_SECONDS = 4.0

# The documented per-process maximum with the default options (docs/deployment.md).
DOCUMENTED_MAXIMUM = DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW + DEFAULT_READ_POOL_SIZE


def test_the_documented_maximum_is_what_authkit_reports() -> None:
    built = AuthKit(database_url="postgresql://app@db/app")
    assert DOCUMENTED_MAXIMUM == 20
    assert built.max_connections_per_process == DOCUMENTED_MAXIMUM
    sized = AuthKit(
        database_url="postgresql://app@db/app", pool_size=3, max_overflow=1, read_pool_size=2
    )
    assert sized.max_connections_per_process == 6
    assert AuthKit(database_url="sqlite:///./x.db").max_connections_per_process is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": 0}, "pool_size must be at least 1"),
        ({"max_overflow": -1}, "max_overflow must be at least 0"),
        ({"read_pool_size": 0}, "read_pool_size must be at least 1"),
    ],
)
def test_pool_sizes_are_checked(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AuthKit(database_url="postgresql://app@db/app", **options)


def test_pool_sizes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKIT_POOL_SIZE", "7")
    monkeypatch.setenv("AUTHKIT_MAX_OVERFLOW", "0")
    monkeypatch.setenv("AUTHKIT_READ_POOL_SIZE", "3")
    kit = AuthKit(database_url="postgresql://app@db/app")
    assert (kit.settings.pool_size, kit.settings.max_overflow, kit.settings.read_pool_size) == (
        7,
        0,
        3,
    )
    assert kit.max_connections_per_process == 10
    assert AuthKit(database_url="postgresql://app@db/app", pool_size=2).settings.pool_size == 2
    monkeypatch.setenv("AUTHKIT_POOL_SIZE", "many")
    with pytest.raises(ConfigurationError, match=r"pool_size must be a whole number.*POOL_SIZE"):
        AuthKit(database_url="postgresql://app@db/app")


# --- the budget under load -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        pytest.fail(f"{name} not found: run the suite through scripts/test (scripts/postgres.sh)")
    return candidates[-1]


def _run(command: list[str], *, check: bool = True) -> None:
    subprocess.run(command, check=check, capture_output=True)  # noqa: S603 - PostgreSQL's tools


class _Postgres:
    """A throwaway server (as scripts/postgres.sh starts one; as ``nobody`` when run as root)."""

    def __init__(self, max_connections: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="authkit-budget-pg.")
        self.port = _free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="nobody")
            self.run_as = ["runuser", "-u", "nobody", "--"]
        data = f"{self.dir}/data"
        initdb = [*self.run_as, _postgres_bin("initdb"), "-D", data, "-U", "postgres"]
        _run([*initdb, "-A", "trust", "--no-sync"])
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -F -c fsync=off "
            f"-c max_connections={max_connections} "
            f"-c superuser_reserved_connections={RESERVED}"
        )
        pg_ctl = [*self.run_as, _postgres_bin("pg_ctl"), "-D", data]
        _run([*pg_ctl, "-l", f"{self.dir}/log", "-w", "-t", "60", "-o", options, "start"])
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.app_url = f"postgresql://app@127.0.0.1:{self.port}/app"

    def stop(self) -> None:
        pg_ctl = [*self.run_as, _postgres_bin("pg_ctl"), "-D", f"{self.dir}/data"]
        _run([*pg_ctl, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def budget_postgres(backend: str) -> Iterator[_Postgres]:
    server = _Postgres(max_connections=DOCUMENTED_MAXIMUM + RESERVED)
    try:
        import psycopg

        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            # Not a superuser: the reserved slots are closed to it, as to a real app's role.
            admin.execute("CREATE ROLE app LOGIN NOSUPERUSER")
            admin.execute("CREATE DATABASE app OWNER app")
        yield server
    finally:
        server.stop()


_APP = """
import json, os
from typing import Annotated
import httpx
from fastapi import Depends, FastAPI
from sqlalchemy import text
from fastapi_workos_authkit import AuthKit, WorkOSUser

JWKS = json.loads(os.environ["BUDGET_JWKS"])
authkit = AuthKit(
    client_id=os.environ["BUDGET_CLIENT_ID"],
    webhook_secret=os.environ["BUDGET_WEBHOOK_SECRET"],
    database_url=os.environ["BUDGET_DATABASE_URL"],
    http_transport=httpx.MockTransport(lambda request: httpx.Response(200, json=JWKS)),
)


@authkit.on("user.created")
def slow_handler(session, event) -> None:
    # Database work that keeps each delivery's connection for a while, so the deliveries in
    # flight need the whole engine pool at once.
    session.execute(text("SELECT pg_sleep(0.05)"))


app = FastAPI(lifespan=authkit.lifespan)
app.include_router(authkit.router())


@app.get("/me")
async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
    return {"id": user.id}
"""


class _Worker:
    """One uvicorn worker serving ``budget_app:app``."""

    def __init__(self, app_dir: Path, database_url: str, jwks: dict[str, Any]) -> None:
        (app_dir / "budget_app.py").write_text(textwrap.dedent(_APP))
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BUDGET_JWKS": json.dumps(jwks),
            "BUDGET_CLIENT_ID": CLIENT_ID,
            "BUDGET_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "BUDGET_DATABASE_URL": database_url,
            "PYTHONPATH": os.pathsep.join([str(app_dir), str(ROOT)]),
        }
        # The default total (20), with no overflow: an overflow connection that SQLAlchemy
        # closes on return keeps its server slot a moment longer than the client holds it, so
        # at a budget with no headroom the churn alone could be refused (see the guide).
        env["AUTHKIT_POOL_SIZE"] = str(DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW)
        env["AUTHKIT_MAX_OVERFLOW"] = "0"
        env.pop("AUTHKIT_READ_POOL_SIZE", None)
        command = [sys.executable, "-m", "uvicorn", "budget_app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen(  # noqa: S603 - uvicorn, arguments from the test
            command,
            cwd=app_dir,
            env=env,
            start_new_session=True,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"uvicorn exited: {self.stderr()}")
            try:
                httpx.get(f"{self.base_url}/docs", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail("uvicorn did not start within 30 s")

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.stderr()

    def stderr(self) -> str:
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            _, err = self.process.communicate()
        return err or ""


async def _sample(admin_url: str, stop: asyncio.Event, peaks: list[int]) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        while not stop.is_set():
            cursor = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE usename = 'app' AND backend_type = 'client backend'"
            )
            row = await cursor.fetchone()
            assert row is not None
            peaks.append(int(row[0]))
            await asyncio.sleep(0.02)


async def _drive(base_url: str, tokens: TokenFactory, statuses: list[int]) -> None:
    deadline = time.monotonic() + LOAD_SECONDS
    limits = httpx.Limits(max_connections=2 * CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

        async def read_me() -> None:
            headers = {"Authorization": f"Bearer {tokens.mint(USER_ID)}"}
            while time.monotonic() < deadline:
                response = await client.get("/me", headers=headers)
                statuses.append(response.status_code)

        async def deliver_webhooks() -> None:
            while time.monotonic() < deadline:
                body, headers = signed_delivery(factories.user_created(), WEBHOOK_SECRET)
                response = await client.post("/workos/webhook", content=body, headers=headers)
                statuses.append(response.status_code)

        await asyncio.gather(
            *(read_me() for _ in range(CONCURRENCY)),
            *(deliver_webhooks() for _ in range(CONCURRENCY)),
        )


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_one_worker_stays_within_the_documented_budget(
    budget_postgres: _Postgres, tmp_path: Path
) -> None:
    tokens = TokenFactory(CLIENT_ID, key=RSAKeyPair.generate(kid="budget"), lifetime=3600)
    worker = _Worker(tmp_path, budget_postgres.app_url, tokens.jwks())
    try:
        await asyncio.to_thread(worker.wait_ready)
        async with httpx.AsyncClient(base_url=worker.base_url) as client:
            body, headers = signed_delivery(
                factories.user_created(USER_ID, email="budget@example.com"), WEBHOOK_SECRET
            )
            seeded = await client.post("/workos/webhook", content=body, headers=headers)
            assert seeded.status_code == 200, seeded.text
        statuses: list[int] = []
        peaks: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(budget_postgres.admin_url, stop, peaks))
        try:
            await _drive(worker.base_url, tokens, statuses)
        finally:
            stop.set()
            await sampler
    finally:
        log = await asyncio.to_thread(worker.stop)
    counts = {code: statuses.count(code) for code in set(statuses)}
    assert counts.keys() == {200}, (counts, log[-3000:])
    assert statuses.count(200) >= 2 * CONCURRENCY
    assert max(peaks) <= DOCUMENTED_MAXIMUM, (max(peaks), peaks)
    # The load really pressed on the budget: the engine's pool overflowed (against the code
    # before the budget was honest, this load got 503s: its reads held a pool of their own).
    assert max(peaks) > DEFAULT_POOL_SIZE, (max(peaks), peaks)


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_an_exhausted_read_pool_is_a_clear_error_not_a_silent_503(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from fastapi_workos_authkit._auth.read_pool import ReadPool
    from fastapi_workos_authkit._exceptions import DatabaseUnavailableError

    pool = ReadPool(engine, size=1, timeout=0.2)
    await pool.open()
    try:
        busy = asyncio.create_task(pool.fetch_one("SELECT pg_sleep(1)", {}))
        await asyncio.sleep(0)  # let it take the one connection
        with (
            caplog.at_level(logging.ERROR, logger="fastapi_workos_authkit"),
            pytest.raises(DatabaseUnavailableError, match="read pool is exhausted"),
        ):
            await pool.fetch_one("SELECT 1", {})
        assert "all read_pool_size=1 connections stayed busy for 0.2 s" in caplog.text
        assert "Raise read_pool_size" in caplog.text
        await busy
        assert await pool.fetch_one("SELECT 1", {}) == (1,)  # and it recovers
    finally:
        await pool.aclose()
