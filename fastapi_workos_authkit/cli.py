"""The ``fastapi-workos-authkit`` command line (also ``python -m fastapi_workos_authkit``).

Each subcommand runs one reconciler against the app's own `AuthKit` (``--app module:attribute``,
as uvicorn finds an app), so the app's handlers run exactly as they do for webhooks. Progress goes
to stderr (a bar on a terminal, plain lines otherwise); the summary goes to stdout, as JSON with
``--json``. Exit codes are listed in `ExitCode`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

import anyio
import anyio.to_thread

from ._cli.common import NEEDS_APP, CommandError, load_authkit
from ._cli.common import ExitCode as ExitCode  # documented: the exit codes
from ._cli.doctor import add_doctor_command, run_doctor_command
from ._cli.jobs import plain, run_job, summary_lines
from ._cli.webhooks import add_webhooks_commands, run_webhooks
from ._exceptions import ConfigurationError
from .dev import add_dev_commands, run_dev


def _global_options(parser: argparse.ArgumentParser, *, subcommand: bool) -> None:
    """``--app``, ``--app-dir`` and ``--json``, accepted before or after the subcommand.

    On a subcommand their default is ``SUPPRESS``: given there, they win; not given, the value
    parsed before the subcommand (or its default) stays.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if subcommand else value

    parser.add_argument(
        "--app",
        default=default(os.environ.get("AUTHKIT_APP")),
        metavar="MODULE:ATTRIBUTE",
        help="the app's AuthKit instance, e.g. main:authkit (env AUTHKIT_APP); required by "
        "sync-events, backfill-users and replay-failed, which run the app's handlers",
    )
    parser.add_argument(
        "--app-dir",
        default=default("."),
        metavar="DIR",
        help="where to look for the --app module first (default: the current directory)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the summary as JSON"
    )


def _command(commands: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description
    )
    _global_options(parser, subcommand=True)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="fastapi-workos-authkit",
        description="Recover and inspect the WorkOS sync of a FastAPI app.",
    )
    _global_options(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sync = _command(
        commands,
        "sync-events",
        "catch up from the WorkOS Events API",
        "Fetch the events of the types the app handles from the WorkOS Events API, since this "
        "job's own cursor, and process each one once through the same pipeline as webhooks "
        "(the ledger skips those already processed). Needs --app and WORKOS_API_KEY.",
    )
    restart = sync.add_mutually_exclusive_group()
    restart.add_argument(
        "--from",
        dest="restart_from",
        type=_aware_datetime,
        default=None,
        metavar="DATETIME",
        help="forget the cursor and start again from this ISO 8601 time (UTC unless it says "
        "otherwise); events already processed are skipped by the ledger",
    )
    restart.add_argument(
        "--reset-cursor",
        action="store_true",
        help="forget the cursor and start again from the app's events_range_start",
    )
    backfill = _command(
        commands,
        "backfill-users",
        "copy every WorkOS user into the table",
        "Copy every WorkOS user into workos_users, oldest first, a page per transaction, "
        "under the same rules as webhooks (a newer row is kept, a deleted user stays deleted). "
        "An interrupted run resumes where it stopped. Needs --app and WORKOS_API_KEY.",
    )
    backfill.add_argument(
        "--no-handlers", action="store_true", help="do not run user.created/updated handlers"
    )
    backfill.add_argument(
        "--restart", action="store_true", help="ignore the cursor of an interrupted run"
    )
    for name, what, types in (
        ("backfill-organizations", "organization", "organization.created/updated"),
        (
            "backfill-memberships",
            "organization membership (every status)",
            "organization_membership.created/updated",
        ),
    ):
        more = _command(
            commands,
            name,
            f"copy every WorkOS {what} into its table",
            f"Copy every WorkOS {what} into its mirrored table, page by page under a lease, "
            "resuming after an interrupted run. Needs --app and WORKOS_API_KEY.",
        )
        more.add_argument("--no-handlers", action="store_true", help=f"do not run {types} handlers")
        more.add_argument(
            "--restart", action="store_true", help="ignore the cursor of an interrupted run"
        )
    replay = _command(
        commands,
        "replay-failed",
        "process failed ledger events again",
        "Process the events whose handler failed again, oldest first, once the handler is "
        "fixed. Needs --app, so that the app's handlers run.",
    )
    replay.add_argument("--limit", type=int, default=None, help="at most this many events")
    prune = _command(
        commands,
        "prune",
        "delete old processed events, tombstones and ended sessions",
        "Delete processed ledger rows, tombstones and ended or expired sessions older than their "
        "retention periods, never past what sync-events may still replay. Failed events are "
        "kept.",
    )
    prune.add_argument(
        "--ledger-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="delete processed events received more than DAYS days ago (default: 30; at "
        "least 3, since WorkOS retries a webhook for up to 3 days)",
    )
    prune.add_argument(
        "--tombstone-days",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="delete tombstones of objects deleted more than DAYS days ago (default: 30; at "
        "least 3)",
    )
    prune.add_argument(
        "--sessions-days",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="delete sessions that ended or expired more than DAYS days ago (default: 7; at "
        "least 3)",
    )
    status = _command(
        commands,
        "status",
        "ledger counts, mirrored rows per kind, cursors, failures, leases",
        "Show the ledger's counts by status, the rows and tombstones of each mirrored kind, the "
        "recovery jobs' cursors, the latest failures "
        "and the leases held. Reads the database only: no WorkOS credential or secret is "
        "needed, and no --app (without it, AUTHKIT_DATABASE_URL says which database).",
    )
    status.add_argument("--failures", type=int, default=10, help="how many failures to list")
    providers = _command(
        commands,
        "providers",
        "print auth_config_providers() as JSON",
        "Print the trusted token issuers (the client's two WorkOS providers) in the shape of "
        "auth_config_providers(), as JSON.",
    )
    providers.add_argument("--client-id", default=None, help="default: the app's or env's")
    providers.add_argument("--api-hostname", default=None, help="default: the app's or env's")
    add_dev_commands(commands)
    add_webhooks_commands(commands)
    add_doctor_command(commands)
    return parser


def _aware_datetime(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 datetime, such as 2026-01-31T00:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return run_dev(args, out, err)
    if args.command == "webhooks":
        return run_webhooks(args, out, err)
    if args.command == "doctor":
        return run_doctor_command(args, out, err)
    try:
        if args.command == "providers":
            out.write(json.dumps(_providers(args), indent=2) + "\n")
            return ExitCode.OK
        if args.command in NEEDS_APP and not args.app:
            # An AuthKit built from the environment has no handlers: it would mark events
            # processed without them, and ask the Events API for user.* only.
            raise CommandError(
                f"{args.command} needs --app MODULE:ATTRIBUTE (or AUTHKIT_APP), pointing at "
                "your app's AuthKit (for example --app main:authkit), so that its event "
                "handlers run and the events they handle are not skipped",
                ExitCode.USAGE,
            )
        try:
            kit = load_authkit(args.app, app_dir=args.app_dir)
        except CommandError as exc:
            if args.app and args.command not in NEEDS_APP:
                raise CommandError(
                    f"{exc} ({args.command} does not need --app: without it, it reads its "
                    "settings from the environment alone)",
                    exc.code,
                ) from None
            raise
        try:
            result, code = anyio.run(run_job, kit, args, err)
        finally:
            if not args.app:
                # The AuthKit built here from the environment is ours: close its connections
                # (main may run inside another program, such as a test).
                kit.engine.dispose()
    except CommandError as exc:
        err.write(f"error: {exc}\n")
        return int(exc.code)
    except KeyboardInterrupt:
        err.write("interrupted: the next run resumes after the last committed item\n")
        return 130
    if args.json:
        out.write(json.dumps(plain(result), indent=2, default=str) + "\n")
    else:
        out.write("\n".join(summary_lines(args.command, result)) + "\n")
    return int(code)


def _providers(args: argparse.Namespace) -> list[dict[str, str]]:
    try:
        if args.app and not (args.client_id or args.api_hostname):
            return load_authkit(args.app, app_dir=args.app_dir).auth_config_providers()
        from ._auth.providers import auth_config_providers

        return auth_config_providers(client_id=args.client_id, api_hostname=args.api_hostname)
    except ConfigurationError as exc:
        raise CommandError(str(exc), ExitCode.CONFIGURATION) from None
