"""The processes a run needs: a throwaway PostgreSQL and the bench app under uvicorn.

Both are started in their own process groups and always stopped by the harness, so a run leaves
nothing behind, even when a scenario fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_bindir() -> Path:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl") or "").parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if not candidates and os.getuid() == 0 and shutil.which("apt-get"):
        # As scripts/postgres.sh does: CI images may lack the server binaries.
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=environment
        )
        candidates = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4])
        )
    if not candidates:
        raise SystemExit("PostgreSQL binaries not found: apt-get install postgresql")
    return Path(candidates[-1])


class Postgres:
    """A PostgreSQL server in a temporary folder on a free loopback port, like scripts/postgres.sh.

    initdb refuses to run as root, so as root the server runs as ``nobody``.
    """

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="authkit-bench-pg."))
        self.port = free_port()
        self._run_as: list[str] = []
        if os.getuid() == 0:
            shutil.chown(self.directory, user="nobody")
            self._run_as = ["runuser", "-u", "nobody", "--"]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._run_as, str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Create the cluster and start the server; returns when it accepts connections."""
        subprocess.run(
            [
                *self._run_as,
                str(self.bindir / "initdb"),
                "-D",
                str(self.directory / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.directory} -F "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off"
        )
        self._pg_ctl("-l", str(self.directory / "log"), "-w", "-t", "60", "-o", options, "start")

    def restart(self) -> float:
        """Restart the server the way an operator would (fast shutdown); returns its duration."""
        began = time.perf_counter()
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "restart")
        self.restarts += 1
        return time.perf_counter() - began

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if (self.directory / "data").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found.extend(int(child) for child in Path(task).read_text().split())
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in KiB, from ``/proc/<pid>/status``."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


class AppServer:
    """``uvicorn bench.app:app --workers N`` on a free loopback port."""

    def __init__(self, env: dict[str, str], *, workers: int = 2, log_path: Path) -> None:
        self.port = free_port()
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env}
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the supervisor and wait until every worker answers."""
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.app:app",
                "--workers",
                str(self.workers),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=ROOT,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until ``workers`` workers are running and the app answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"uvicorn exited early; see {self._log_path}")
            if len(self.worker_pids()) == self.workers:
                try:
                    if httpx.get(f"{self.base_url}/bench/noop", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"the bench app did not start within {timeout} s; see {self._log_path}")

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (uvicorn spawns them with multiprocessing)."""
        if self._process is None:
            return []
        if self.workers == 1:
            # uvicorn runs a single worker in its own process, without a supervisor.
            return [self._process.pid]
        return [p for p in _children(self._process.pid) if b"spawn_main" in _cmdline(p)]

    def kill_worker(self) -> int:
        """SIGKILL one worker, as the OOM killer would; uvicorn's supervisor starts a new one."""
        victim = self.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        return victim

    def stop(self) -> None:
        """Stop the supervisor and its workers (SIGTERM, then SIGKILL of the group)."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
