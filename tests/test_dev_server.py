"""The README's "Develop locally without a WorkOS account" story, with real processes.

``dev serve`` (a subprocess, on a port the OS picks), the quickstart's ``app.py`` unchanged under
uvicorn (a subprocess, with the environment ``dev serve`` printed), and the ``dev`` verbs (each a
subprocess): ``create-user``, then ``token``, then ``GET /me`` with that token answers 200 with
Ada's synced row.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "fastapi_workos_authkit", "dev"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck child
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_the_local_story_from_create_user_to_me(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    state = str(tmp_path / ".workos-dev")
    app_port = _free_port()
    dev_log = tmp_path / "dev.log"
    with dev_log.open("w") as log_file:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(  # noqa: S603 - our own command line
            [
                *CLI,
                "serve",
                "--port",
                "0",
                "--state-dir",
                state,
                "--app-url",
                f"http://127.0.0.1:{app_port}",
            ],
            stdout=subprocess.PIPE,
            # A file, not a pipe: the server logs each webhook attempt; a full pipe would block it.
            stderr=log_file,
            text=True,
            cwd=tmp_path,
        )
    processes.append(server)
    assert server.stdout is not None
    exports: dict[str, str] = {}
    while len(exports) < 5:
        line = server.stdout.readline()
        assert line, f"dev serve stopped: {dev_log.read_text()}"
        name, value = line.removeprefix("export ").strip().split("=", 1)
        exports[name] = value
    assert sorted(exports) == [
        "WORKOS_ACTION_SECRET",
        "WORKOS_API_BASE_URL",
        "WORKOS_API_KEY",
        "WORKOS_CLIENT_ID",
        "WORKOS_WEBHOOK_SECRET",
    ]
    assert exports["WORKOS_API_BASE_URL"].startswith("http://127.0.0.1:")

    shutil.copy(ROOT / "examples" / "quickstart.py", tmp_path / "app.py")
    env = {
        **os.environ,
        **exports,
        "AUTHKIT_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
    }
    app = subprocess.Popen(  # noqa: S603 - this interpreter's uvicorn
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app:app",
            "--port",
            str(app_port),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(app)  # type: ignore[arg-type]

    def dev(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - our own command line
            [*CLI, *args, "--state-dir", state], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # As in the README, the user may be created before the app is up: the webhook is retried.
    assert '"email": "ada@example.com"' in dev("create-user", "--email", "ada@example.com")
    token = dev("token", "--email", "ada@example.com").strip()
    assert token.count(".") == 2

    answer = None
    for _ in range(300):  # bounded: about a minute at most
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{app_port}/me",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
        except httpx.TransportError:
            answer = None  # uvicorn is still starting
        if answer is not None and answer.status_code == 200:
            break
        time.sleep(0.2)
    assert answer is not None
    assert answer.status_code == 200, f"{answer.text}\n{dev_log.read_text()}"
    assert answer.json()["email"] == "ada@example.com"
