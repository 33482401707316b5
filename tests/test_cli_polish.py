"""The command line for a first-time user: one error line, flags anywhere, help everywhere."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_workos_authkit import AuthKit, ConfigurationError
from fastapi_workos_authkit.cli import ExitCode, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WORKOS_", "AUTHKIT_"))}
    return subprocess.run(  # noqa: S603 - our own command line, arguments from the test
        [sys.executable, "-m", "fastapi_workos_authkit", *args],
        cwd=project,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "examples" / "quickstart.py", project / "app.py")
    return project


def test_an_app_that_fails_at_import_for_want_of_a_secret_gets_one_error_line(
    quickstart: Path,
) -> None:
    # The quickstart mounts its router at import, which asks for the webhook secret.
    result = _run(quickstart, "--app", "app:authkit", "status")
    assert result.returncode == ExitCode.CONFIGURATION
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: importing 'app' failed")
    assert "WORKOS_WEBHOOK_SECRET is not set" in lines[0]
    assert "status does not need --app" in lines[0]


def test_any_exception_at_import_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('the settings file is missing')\n")
    result = _run(tmp_path, "status", "--app", "broken:authkit")
    assert result.returncode == ExitCode.FAILURE
    assert result.stderr == (
        "error: importing 'broken' failed: RuntimeError: the settings file is missing "
        "(status does not need --app: without it, it reads its settings from the environment "
        "alone)\n"
    )
    # A module the app imports that is missing is the app's error, not a wrong --app-dir.
    (tmp_path / "needs.py").write_text("import not_installed_anywhere\n")
    result = _run(tmp_path, "--app", "needs:authkit", "sync-events")
    assert result.returncode == ExitCode.FAILURE
    assert result.stderr.startswith("error: importing 'needs' failed: ModuleNotFoundError")
    assert "Traceback" not in result.stderr


def test_status_needs_no_secret_and_takes_the_flags_after_the_command(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("WORKOS_", "AUTHKIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", database_url)
    assert main(["status"]) == ExitCode.OK
    assert "ledger:" in capsys.readouterr().out
    assert main(["status", "--json"]) == ExitCode.OK
    after = json.loads(capsys.readouterr().out)
    assert main(["--json", "status"]) == ExitCode.OK
    before = json.loads(capsys.readouterr().out)
    assert after["ledger"] == before["ledger"] == {"processed": 0, "failed": 0}


def test_app_after_the_subcommand_wins_over_the_one_before() -> None:
    parser = build_parser()
    args = parser.parse_args(["--app", "a:kit", "status", "--app", "b:kit", "--json"])
    assert (args.app, args.json, args.app_dir) == ("b:kit", True, ".")
    args = parser.parse_args(["--app", "a:kit", "--app-dir", "src", "status"])
    assert (args.app, args.json, args.app_dir) == ("a:kit", False, "src")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


def test_every_subcommand_has_a_description() -> None:
    commands = _subcommands()
    assert set(commands) >= {"sync-events", "backfill-users", "replay-failed", "prune", "status"}
    for name, sub in commands.items():
        assert sub.description, name
        assert len(sub.description) > 40, name
        verbs = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if verbs:
            # A group (`dev`, `webhooks`): each of its verbs says what it does.
            for verb_name, verb in verbs[0].choices.items():
                assert verb.description, f"{name} {verb_name}"
            continue
        text = sub.format_help()
        assert "--app" in text, name
        assert "--json" in text, name


def test_prune_says_what_it_keeps_and_names_a_short_retention_plainly(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    help_text = " ".join(_subcommands()["prune"].format_help().split())
    assert "delete processed events received more than DAYS days ago (default: 30" in help_text
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", database_url)
    for days, shown in (("1", "1 day"), ("2.5", "2.5 days"), ("0.5", "12 hours")):
        err = io.StringIO()
        code = main(["prune", "--ledger-days", days], stdout=io.StringIO(), stderr=err)
        assert code == ExitCode.USAGE
        assert f"(got {shown}):" in err.getvalue(), err.getvalue()


def test_a_missing_api_key_is_explained_in_a_sentence() -> None:
    with pytest.raises(ConfigurationError) as error:
        _ = AuthKit(api_key=None).workos_api
    assert "WORKOS_API_KEY is not set; it is needed for calls to the WorkOS REST API" in str(
        error.value
    )
