"""The command line, end to end: a subprocess against a fake WorkOS served by uvicorn."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import WorkOSSyncState
from fastapi_workos_authkit._cli.jobs import ProgressPrinter
from fastapi_workos_authkit._recovery import Progress
from fastapi_workos_authkit.cli import ExitCode, main
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS, FakeWorkOSServer
from tests.test_reconcile import db_users, fake_users

APP_MODULE = textwrap.dedent(
    """
    import os
    from datetime import UTC, datetime

    from sqlmodel import Session

    from fastapi_workos_authkit import AuthKit, WorkOSSyncState

    authkit = AuthKit(api_base_url=os.environ["FAKE_WORKOS_URL"])


    @authkit.on("user.created")
    def remember(session: Session, event) -> None:
        session.add(WorkOSSyncState(key=f"created:{event.data.id}", updated_at=datetime.now(UTC)))


    @authkit.on("session.created")
    def fragile(session: Session, event) -> None:
        if os.environ.get("FAIL_SESSIONS"):
            raise RuntimeError("the session service is down")
    """
)


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key="sk_cli_key")


@pytest.fixture
def server(fake: FakeWorkOS) -> Iterator[FakeWorkOSServer]:
    with FakeWorkOSServer(fake) as server:
        yield server


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "cliapp.py").write_text(APP_MODULE)
    return directory


def run_cli(
    app_dir: Path, *args: str, env: dict[str, str], module: bool = True
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKOS_", "AUTHKIT_"))}
    if module:
        command = [sys.executable, "-m", "fastapi_workos_authkit", *args]
    else:
        command = [str(Path(sys.executable).parent / "fastapi-workos-authkit"), *args]
    return subprocess.run(  # noqa: S603 - our own command line, arguments from the test
        command,
        cwd=app_dir,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_env(server: FakeWorkOSServer, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "FAKE_WORKOS_URL": server.base_url,
        "WORKOS_API_KEY": "sk_cli_key",
        "AUTHKIT_DATABASE_URL": database_url,
        **extra,
    }


def test_fresh_database_equals_workos_after_backfill_and_sync(
    fake: FakeWorkOS, server: FakeWorkOSServer, app_dir: Path, database_url: str, engine: Engine
) -> None:
    ids = [fake.create_user()["id"] for _ in range(250)]
    for user_id in ids[::4]:
        fake.update_user(user_id, first_name="Changed")
    for user_id in ids[::9]:
        fake.delete_user(user_id)
    env = cli_env(server, database_url)

    backfill = run_cli(app_dir, "--app", "cliapp:authkit", "backfill-users", env=env)
    assert backfill.returncode == 0, backfill.stderr
    live = len(fake.users)
    assert f"backfill-users: {live} users in 3 pages: {live} inserted" in backfill.stdout
    assert "backfill-users: " in backfill.stderr  # plain progress lines: stderr is not a TTY

    fake.create_user()
    fake.update_user(ids[1], last_name="AfterBackfill")
    fake.delete_user(ids[2])
    sync = run_cli(app_dir, "--app", "cliapp:authkit", "sync-events", env=env, module=False)
    assert sync.returncode == 0, sync.stderr
    assert "failed" in sync.stdout
    assert db_users(engine) == fake_users(fake)

    status = run_cli(app_dir, "--app", "cliapp:authkit", "--json", "status", env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["users"] == len(fake.users)
    assert report["ledger"]["failed"] == 0
    assert report["cursors"]["events.cursor"] == fake.events[-1]["id"]
    assert report["leases"] == []
    with Session(engine) as session:
        marks = session.exec(
            select(WorkOSSyncState).where(
                WorkOSSyncState.key.startswith("created:")  # type: ignore[attr-defined]
            )
        )
        # One mark per user ever created, each once: the backfill inserted the live ones, and
        # the sync replayed the history of those deleted before it (created, then deleted).
        assert len(marks.all()) == 251


def test_failed_events_exit_7_and_replay_after_the_fix(
    fake: FakeWorkOS, server: FakeWorkOSServer, app_dir: Path, database_url: str
) -> None:
    user = fake.create_user()
    event = fake.add_event("session.created", factories.session_created(user["id"])["data"])
    broken = cli_env(server, database_url, FAIL_SESSIONS="1")
    sync = run_cli(app_dir, "--app", "cliapp:authkit", "sync-events", env=broken)
    assert sync.returncode == ExitCode.EVENTS_FAILED, sync.stderr
    assert "1 failed" in sync.stdout

    status = run_cli(app_dir, "--app", "cliapp:authkit", "status", env=broken)
    assert event["id"] in status.stdout
    assert "RuntimeError: the session service is down" in status.stdout

    again = run_cli(app_dir, "--app", "cliapp:authkit", "replay-failed", env=broken)
    assert again.returncode == ExitCode.EVENTS_FAILED
    assert "attempts 2" in again.stdout

    fixed = run_cli(
        app_dir, "--app", "cliapp:authkit", "replay-failed", env=cli_env(server, database_url)
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "1 replayed, 1 succeeded, 0 still failing" in fixed.stdout


def test_missing_api_key(server: FakeWorkOSServer, app_dir: Path, database_url: str) -> None:
    env = cli_env(server, database_url)
    del env["WORKOS_API_KEY"]
    result = run_cli(app_dir, "--app", "cliapp:authkit", "sync-events", env=env)
    assert result.returncode == ExitCode.CONFIGURATION
    assert "WORKOS_API_KEY is not set" in result.stderr
    assert "API Keys page" in result.stderr


def test_api_key_refused_by_workos(
    server: FakeWorkOSServer, app_dir: Path, database_url: str
) -> None:
    env = cli_env(server, database_url, WORKOS_API_KEY="sk_wrong_key")
    result = run_cli(app_dir, "--app", "cliapp:authkit", "backfill-users", env=env)
    assert result.returncode == ExitCode.UNAUTHORIZED
    assert "refused the API key (401)" in result.stderr
    assert "sk_wrong_key" not in result.stderr + result.stdout


def test_workos_unavailable(
    fake: FakeWorkOS, server: FakeWorkOSServer, app_dir: Path, database_url: str
) -> None:
    # 429 with Retry-After: 0, so the client's retries run out without waiting.
    fake.fail_with_429(1000, retry_after=0)
    env = cli_env(server, database_url)
    result = run_cli(app_dir, "--app", "cliapp:authkit", "sync-events", env=env)
    assert result.returncode == ExitCode.WORKOS_UNAVAILABLE
    assert "WorkOS answered 429" in result.stderr
    assert "run the command again" in result.stderr


def test_unreachable_database(server: FakeWorkOSServer, app_dir: Path) -> None:
    env = cli_env(server, "postgresql://authkit:hunter2@127.0.0.1:9/authkit")
    result = run_cli(app_dir, "--app", "cliapp:authkit", "status", env=env)
    assert result.returncode == ExitCode.DATABASE_UNAVAILABLE, result.stderr
    assert "Cannot reach the database at postgresql+psycopg://authkit:***@127.0.0.1:9" in (
        result.stderr
    )
    assert "hunter2" not in result.stderr


def test_usage_errors(
    server: FakeWorkOSServer, app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cli_env(server, f"sqlite:///{tmp_path / 'cli.db'}").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(app_dir)
    monkeypatch.delitem(sys.modules, "cliapp", raising=False)

    def cli(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    try:
        code, _, err = cli("--app", "cliapp:nothing", "status")
        assert (code, "has no attribute 'nothing'" in err) == (ExitCode.FAILURE, True)
        code, _, err = cli("--app", "os:path", "status")
        assert (code, "is a module, not an AuthKit" in err) == (ExitCode.FAILURE, True)
        code, _, err = cli("--app", "cliapp", "status")
        assert (code, "module:attribute" in err) == (ExitCode.USAGE, True)
        code, _, err = cli("--app", "no_such_module:authkit", "status")
        assert (code, "Could not import 'no_such_module'" in err) == (ExitCode.FAILURE, True)
        code, _, err = cli("--app", "cliapp:authkit", "prune", "--ledger-days", "1")
        assert (code, "at least 3 days" in err) == (ExitCode.USAGE, True)
        code, out, _ = cli("--app", "cliapp:authkit", "prune")
        assert (code, "prune: 0 processed events" in out) == (ExitCode.OK, True)
    finally:
        sys.modules.pop("cliapp", None)
    no_command = run_cli(app_dir, env={})
    assert no_command.returncode == ExitCode.USAGE
    assert "required: COMMAND" in no_command.stderr


def test_providers_prints_json(server: FakeWorkOSServer, app_dir: Path) -> None:
    env = cli_env(server, "sqlite://", WORKOS_CLIENT_ID="client_01CLI")
    result = run_cli(app_dir, "providers", env=env)
    assert result.returncode == 0, result.stderr
    providers = json.loads(result.stdout)
    assert providers[0]["applicationID"] == "client_01CLI"
    assert providers[1]["issuer"] == "https://api.workos.com/user_management/client_01CLI"
    from_app = json.loads(run_cli(app_dir, "--app", "cliapp:authkit", "providers", env=env).stdout)
    assert [p["issuer"] for p in from_app] == [p["issuer"] for p in providers]
    assert from_app[0]["jwks"] == f"{server.base_url}/sso/jwks/client_01CLI"  # the app's base URL
    missing = run_cli(app_dir, "providers", env={"FAKE_WORKOS_URL": server.base_url})
    assert missing.returncode == ExitCode.CONFIGURATION
    assert "WORKOS_CLIENT_ID" in missing.stderr


def test_progress_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream, tty=True)
    printer(Progress("replay-failed", 5, total=10, counts={"succeeded": 5}))
    printer(Progress("replay-failed", 10, total=10, counts={"succeeded": 10}))
    printer.close()
    output = stream.getvalue()
    assert output.count("\r") == 2
    assert "[###############...............] 5/10 (succeeded 5)" in output
    assert "[##############################] 10/10 (succeeded 10)" in output
    assert output.endswith("/s\n")  # the rate, then `close` ends the redrawn line


def test_plain_progress_lines_keep_the_last_count() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream, tty=False)
    for done in (100, 200, 300):
        printer(Progress("backfill-users", done, counts={"inserted": done}))
    printer.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("backfill-users: 100 (inserted 100)")
    assert lines[-1].startswith("backfill-users: 300 (inserted 300)")
    assert "\r" not in stream.getvalue()


def test_commands_that_run_handlers_need_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AUTHKIT_APP", raising=False)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    for command in ("sync-events", "backfill-users", "replay-failed"):
        out, err = io.StringIO(), io.StringIO()
        code = main([command], stdout=out, stderr=err)
        assert code == ExitCode.USAGE, command
        assert f"{command} needs --app MODULE:ATTRIBUTE" in err.getvalue()
        assert "handlers run" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["status"], stdout=out, stderr=err) == ExitCode.OK  # reads only: no app needed
    assert "ledger: failed 0, processed 0" in out.getvalue()


def test_a_changed_set_of_event_types_is_refused_until_the_cursor_restarts(
    fake: FakeWorkOS, server: FakeWorkOSServer, app_dir: Path, database_url: str, engine: Engine
) -> None:
    env = cli_env(server, database_url)
    user = fake.create_user()
    # role.* is no mirrored kind: it is pulled only once a handler asks for it.
    role = fake.add_event("role.created", {"object": "role", "slug": "editor"})
    first = run_cli(app_dir, "--app", "cliapp:authkit", "sync-events", env=env)
    assert first.returncode == 0, first.stderr

    # A new release handles role.created: its events so far were never asked for.
    (app_dir / "cliapp2.py").write_text(
        APP_MODULE
        + textwrap.dedent(
            """
            @authkit.on("role.created")
            def on_role(session: Session, event) -> None:
                session.add(WorkOSSyncState(key=f"org:{event.id}", updated_at=datetime.now(UTC)))
            """
        )
    )
    refused = run_cli(app_dir, "--app", "cliapp2:authkit", "sync-events", env=env)
    assert refused.returncode == ExitCode.FAILURE
    assert "new: role.created" in refused.stderr
    assert "--from" in refused.stderr

    bad = run_cli(app_dir, "--app", "cliapp2:authkit", "sync-events", "--from", "soon", env=env)
    assert bad.returncode == ExitCode.USAGE
    assert "not an ISO 8601 datetime" in bad.stderr
    since = user["created_at"]
    caught_up = run_cli(
        app_dir, "--app", "cliapp2:authkit", "--json", "sync-events", "--from", since, env=env
    )
    assert caught_up.returncode == 0, caught_up.stderr
    summary = json.loads(caught_up.stdout)
    assert (summary["processed"], summary["duplicates"]) == (1, 1)
    assert summary["failed_event_ids"] == []
    with Session(engine) as session:
        assert session.get(WorkOSSyncState, f"org:{role['id']}") is not None
    assert role["id"] == summary["cursor"]

    again = run_cli(app_dir, "--app", "cliapp2:authkit", "sync-events", "--reset-cursor", env=env)
    assert again.returncode == 0, again.stderr
    assert "0 processed, 2 duplicates" in again.stdout


def test_the_fake_workos_serves_from_its_own_process() -> None:
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(  # noqa: S603 - our own module
        [
            sys.executable,
            "-m",
            "fastapi_workos_authkit.testing",
            "--port",
            str(port),
            "--users",
            "3",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/user_management/users",
                    params={"limit": 2, "order": "asc"},
                    headers={"Authorization": "Bearer sk_test_key"},
                )
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("the fake WorkOS did not start")
        body = response.json()
        assert [u["first_name"] for u in body["data"]] == ["User0", "User1"]
        assert body["list_metadata"]["after"] == body["data"][-1]["id"]
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert "RuntimeWarning" not in errors


def test_status_reports_the_connection_budget_per_process(
    tmp_path: Path, backend: str, database_url: str
) -> None:
    env = {
        "AUTHKIT_DATABASE_URL": database_url,
        "AUTHKIT_POOL_SIZE": "3",
        "AUTHKIT_MAX_OVERFLOW": "2",
        "AUTHKIT_READ_POOL_SIZE": "4",
    }
    result = run_cli(tmp_path, "--json", "status", env=env)
    assert result.returncode == 0, result.stderr
    # PostgreSQL: pool_size + max_overflow + read_pool_size; SQLite opens no server connections.
    expected = 9 if backend == "postgresql" else None
    assert json.loads(result.stdout)["max_connections_per_process"] == expected
    text = run_cli(tmp_path, "status", env=env)
    line = "at most 9" if backend == "postgresql" else "not counted (SQLite"
    assert f"database connections per process: {line}" in text.stdout


PROBE_MODULE = (
    'from fastapi_workos_authkit import AuthKit\nauthkit = AuthKit(client_id="client_01{}")\n'
)


def _providers_of(module: str, *args: str) -> tuple[int, str, str]:
    """Run ``providers`` in this process for ``--app module:authkit``, then forget the module."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main([*args, "--app", f"{module}:authkit", "providers"], stdout=out, stderr=err)
    finally:
        sys.modules.pop(module, None)
    return code, out.getvalue(), err.getvalue()


def test_app_dir_is_importable_only_while_the_app_is_imported(tmp_path: Path) -> None:
    """``--app-dir`` is searched for the app like uvicorn's, and ``sys.path`` is left as found:
    the command line may run inside another program, whose imports it must not shadow."""
    (tmp_path / "cli_probe_dir.py").write_text(PROBE_MODULE.format("APPDIR"))
    before = list(sys.path)
    code, out, err = _providers_of("cli_probe_dir", "--app-dir", str(tmp_path))
    assert code == ExitCode.OK, err
    assert json.loads(out)[0]["applicationID"] == "client_01APPDIR"
    assert sys.path == before
    # Without --app-dir the module is not found, and the error says where it looked.
    code, _, err = _providers_of("cli_probe_dir")
    assert code == ExitCode.FAILURE
    assert "Could not import 'cli_probe_dir'" in err
    assert "--app-dir" in err
    assert sys.path == before


def test_the_current_directory_is_the_default_app_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_probe_cwd.py").write_text(PROBE_MODULE.format("CWD"))
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    code, out, err = _providers_of("cli_probe_cwd")
    assert code == ExitCode.OK, err
    assert json.loads(out)[0]["applicationID"] == "client_01CWD"
    assert sys.path == before
