"""The ``fastapi-workos-authkit`` command line (also ``python -m fastapi_workos_authkit``).

Each subcommand runs one reconciler against the app's own `AuthKit` (``--app module:attribute``,
as uvicorn finds an app), so the app's handlers run exactly as they do for webhooks. Progress goes
to stderr (a bar on a terminal, plain lines otherwise); the summary goes to stdout, as JSON with
``--json``. Exit codes are listed in `ExitCode`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import IO, Any

import anyio
import anyio.to_thread
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ._authkit import AuthKit
from ._cli.doctor import add_doctor_command, run_doctor_command
from ._cli.webhooks import add_webhooks_commands, run_webhooks
from ._exceptions import AuthKitError, ConfigurationError, DatabaseUnavailableError, HandlerError
from ._recovery import Progress
from ._recovery.workos_api import WorkOSAPIError, WorkOSAuthenticationError
from ._sync.database import create_tables, driver_message, is_unavailable
from .dev import add_dev_commands, run_dev


class ExitCode(IntEnum):
    """Process exit codes, so a cron job or CI step can tell failures apart."""

    OK = 0
    FAILURE = 1
    """Anything else: a handler raised during a backfill, a lost lease, a bad ``--app``."""
    USAGE = 2
    """Bad arguments (argparse's own code)."""
    CONFIGURATION = 3
    """A required setting is missing, such as ``WORKOS_API_KEY``."""
    UNAUTHORIZED = 4
    """WorkOS refused the API key (401/403)."""
    WORKOS_UNAVAILABLE = 5
    """WorkOS kept failing (5xx, 429 or network errors) after every retry."""
    DATABASE_UNAVAILABLE = 6
    """The database could not be reached."""
    EVENTS_FAILED = 7
    """The run finished, but some events failed in a handler: see ``status``, then
    ``replay-failed`` once the handler is fixed."""


class CommandError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


# -- finding the app -----------------------------------------------------------------------


NEEDS_APP = frozenset(
    {
        "sync-events",
        "backfill-users",
        "backfill-organizations",
        "backfill-memberships",
        "replay-failed",
    }
)
"""Subcommands that run the app's handlers, and so refuse to run without ``--app``."""


def load_authkit(target: str | None, *, app_dir: str = ".") -> AuthKit:
    """Import ``module:attribute`` (dotted attributes allowed) and return the `AuthKit` there.

    ``app_dir`` (the current directory by default) is searched first, as uvicorn's ``--app-dir``
    is, but only while the module is imported: ``sys.path`` is left as it was found. Without a
    target, an `AuthKit` configured from the environment alone (no handlers).
    """
    if not target:
        return AuthKit()
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--app must look like module:attribute (for example main:authkit), not {target!r}",
            ExitCode.USAGE,
        )
    try:
        with _importable(app_dir):
            found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise _import_failed(module_name, exc) from None  # a module the app imports
        raise CommandError(
            f"Could not import {module_name!r} from {os.path.abspath(app_dir)} (set --app-dir to "
            f"the directory that holds it): {exc}",
            ExitCode.FAILURE,
        ) from None
    except Exception as exc:
        # Importing runs the app's module: whatever it raises is the user's to fix, and a
        # traceback through importlib tells them less than one line does.
        raise _import_failed(module_name, exc) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(
                f"{module_name!r} has no attribute {attribute!r}", ExitCode.FAILURE
            ) from None
    if not isinstance(found, AuthKit):
        raise CommandError(
            f"{target} is a {type(found).__name__}, not an AuthKit: point --app at the AuthKit "
            "instance your app configures (for example main:authkit)",
            ExitCode.FAILURE,
        )
    return found


def _import_failed(module_name: str, exc: Exception) -> CommandError:
    if isinstance(exc, ConfigurationError):
        return CommandError(
            f"importing {module_name!r} failed, because its module-level code asked for a "
            f"setting that is missing: {exc}",
            ExitCode.CONFIGURATION,
        )
    return CommandError(
        f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", ExitCode.FAILURE
    )


@contextmanager
def _importable(directory: str) -> Iterator[None]:
    """Put ``directory`` first on ``sys.path`` for the duration of an import, if it is missing.

    The CLI may run inside another program (a test, a task runner): a lasting change to
    ``sys.path`` would shadow that program's modules with whatever the directory holds.
    """
    path = os.path.abspath(directory)
    if path in sys.path:
        yield
        return
    sys.path.insert(0, path)
    try:
        yield
    finally:
        # The import may itself have edited sys.path: take out our entry only.
        with suppress(ValueError):
            sys.path.remove(path)


# -- progress ------------------------------------------------------------------------------


class ProgressPrinter:
    """Shows `Progress` reports: a redrawn bar on a terminal, a line a second otherwise."""

    def __init__(self, stream: IO[str], *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._started = time.monotonic()
        self._last_line = 0.0
        self._drawn = False
        self._pending: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + self._render(progress, now, bar=True))
            self._drawn = True
        elif not self._last_line or now - self._last_line >= 1.0:
            self.stream.write(self._render(progress, now, bar=False) + "\n")
            self._last_line = now
            self._pending = None
        else:
            self._pending = progress  # printed by `close`, so the last count always shows
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line, or print the last report that was throttled."""
        if self.tty and self._drawn:
            self.stream.write("\n")
        elif self._pending is not None:
            self.stream.write(self._render(self._pending, time.monotonic(), bar=False) + "\n")
        self.stream.flush()

    def _render(self, progress: Progress, now: float, *, bar: bool) -> str:
        elapsed = max(now - self._started, 1e-9)
        counts = ", ".join(f"{name} {value:,}" for name, value in progress.counts.items())
        rate = f"{progress.done / elapsed:,.0f}/s"
        if progress.total:
            done = f"{progress.done:,}/{progress.total:,}"
            if bar:
                filled = int(30 * progress.done / progress.total)
                done = f"[{'#' * filled}{'.' * (30 - filled)}] {done}"
        else:
            done = f"{progress.done:,}"
        return f"{progress.job}: {done} ({counts}) {rate}"


# -- commands ------------------------------------------------------------------------------

Command = Callable[[AuthKit, argparse.Namespace, ProgressPrinter], Awaitable[tuple[Any, ExitCode]]]


async def _sync_events(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    restart_from: datetime | timedelta | None = args.restart_from
    if args.reset_cursor:
        restart_from = kit.events_range_start
    result = await kit.sync_events(progress=progress, restart_from=restart_from)
    return result, ExitCode.EVENTS_FAILED if result.failed else ExitCode.OK


async def _backfill_users(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    result = await kit.backfill_users(
        run_handlers=not args.no_handlers, restart=args.restart, progress=progress
    )
    return result, ExitCode.OK


async def _backfill_organizations(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    result = await kit.backfill_organizations(
        run_handlers=not args.no_handlers, restart=args.restart, progress=progress
    )
    return result, ExitCode.OK


async def _backfill_memberships(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    result = await kit.backfill_memberships(
        run_handlers=not args.no_handlers, restart=args.restart, progress=progress
    )
    return result, ExitCode.OK


async def _replay_failed(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    result = await kit.replay_failed(limit=args.limit, progress=progress)
    return result, ExitCode.EVENTS_FAILED if result.failed else ExitCode.OK


async def _prune(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    try:
        result = await kit.prune(
            ledger_retention=timedelta(days=args.ledger_days),
            tombstone_retention=timedelta(days=args.tombstone_days),
            session_retention=timedelta(days=args.sessions_days),
        )
    except ValueError as exc:
        raise CommandError(str(exc), ExitCode.USAGE) from None
    return result, ExitCode.OK


async def _status(
    kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
) -> tuple[Any, ExitCode]:
    return await kit.sync_status(failures=args.failures), ExitCode.OK


_COMMANDS: dict[str, Command] = {
    "sync-events": _sync_events,
    "backfill-users": _backfill_users,
    "backfill-organizations": _backfill_organizations,
    "backfill-memberships": _backfill_memberships,
    "replay-failed": _replay_failed,
    "prune": _prune,
    "status": _status,
}


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of it rather than leak a password
        return "(the configured database)"


async def _run(kit: AuthKit, args: argparse.Namespace, stderr: IO[str]) -> tuple[Any, ExitCode]:
    progress = ProgressPrinter(stderr)
    try:
        try:
            if kit.settings.create_tables:
                await anyio.to_thread.run_sync(create_tables, kit.engine)
            return await _COMMANDS[args.command](kit, args, progress)
        finally:
            progress.close()
            await kit.shutdown()
    except ConfigurationError as exc:
        raise CommandError(str(exc), ExitCode.CONFIGURATION) from None
    except WorkOSAuthenticationError as exc:
        raise CommandError(str(exc), ExitCode.UNAUTHORIZED) from None
    except WorkOSAPIError as exc:
        raise CommandError(
            f"{exc}. Nothing after the last committed item was lost: run the command again.",
            ExitCode.WORKOS_UNAVAILABLE,
        ) from None
    except DatabaseUnavailableError as exc:
        raise _database_error(kit, exc) from None
    except SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise _database_error(kit, exc) from None
        raise
    except HandlerError as exc:
        raise CommandError(
            f"{exc}; the page was rolled back. Fix the handler and run the command again to "
            "resume where it stopped.",
            ExitCode.FAILURE,
        ) from None
    except AuthKitError as exc:
        raise CommandError(str(exc), ExitCode.FAILURE) from None


def _database_error(kit: AuthKit, exc: BaseException) -> CommandError:
    cause = exc.__cause__ or exc
    detail = driver_message(cause) or type(cause).__name__
    return CommandError(
        f"Cannot reach the database at {_safe_url(str(kit.engine.url))}: {detail}",
        ExitCode.DATABASE_UNAVAILABLE,
    )


# -- output --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _summary(command: str, result: Any) -> list[str]:
    data = _plain(result)
    if data.get("ran") is False:
        return [
            f"{command}: skipped, another instance is running it (lease held by "
            f"{data.get('lease_holder')})"
        ]
    if command == "sync-events":
        lines = [
            f"sync-events: {data['fetched']:,} events fetched, {data['processed']:,} processed, "
            f"{data['duplicates']:,} duplicates, {data['failed']:,} failed",
            f"  cursor: {data['cursor'] or '(none yet)'}",
        ]
        if data["failed"]:
            lines.append("  failed events stay in the ledger: fix the handler, then replay-failed")
        return lines
    if command in _BACKFILLED:
        return [
            f"{command}: {data['seen']:,} {_BACKFILLED[command]} in {data['pages']:,} pages: "
            f"{data['inserted']:,} inserted, {data['updated']:,} updated, "
            f"{data['unchanged']:,} unchanged"
            + (f" (resumed after {data['resumed_from']})" if data["resumed_from"] else "")
        ]
    if command == "replay-failed":
        lines = [
            f"replay-failed: {data['replayed']:,} replayed, {data['succeeded']:,} succeeded, "
            f"{data['failed']:,} still failing"
        ]
        lines += [
            f"  {e['event_id']} ({e['event_type']}): attempts {e['attempts']}: {e['last_error']}"
            for e in data["events"]
            if e["status"] != "processed"
        ]
        return lines
    if command == "prune":
        by_kind = ", ".join(
            f"{kind} {count:,}" for kind, count in sorted(data["tombstones_by_kind"].items())
        )
        return [
            f"prune: {data['events_deleted']:,} processed events received before "
            f"{data['events_before']} and {data['tombstones_deleted']:,} tombstones older than "
            f"{data['tombstones_before']} deleted" + (f" ({by_kind})" if by_kind else ""),
            f"  {data['sessions_deleted']:,} sessions ended or expired before "
            f"{data['sessions_before']} deleted",
        ]
    lines = [
        "ledger: " + ", ".join(f"{k} {v:,}" for k, v in sorted(data["ledger"].items())),
        f"users: {data['users']:,}, tombstones: {data['tombstones']:,}",
        "database connections per process: "
        + (
            f"at most {data['max_connections_per_process']}"
            if data.get("max_connections_per_process") is not None
            else "not counted (SQLite, or your engine's own pool_size + max_overflow)"
        ),
        "mirrored:",
    ]
    lines += [
        f"  {name}: {counts['rows']:,} rows, {counts['tombstones']:,} tombstones"
        for name, counts in sorted(data["kinds"].items())
    ] or ["  (none)"]
    lines.append("cursors:")
    lines += [f"  {k}: {v}" for k, v in sorted(data["cursors"].items())] or ["  (none)"]
    lines.append("leases:")
    lines += [
        f"  {x['name']}: {x['holder']} until {x['expires_at']}"
        + ("" if x["active"] else " (expired)")
        for x in data["leases"]
    ] or ["  (none held)"]
    lines.append("last failures:")
    lines += [
        f"  {f['event_id']} ({f['event_type']}, {f['source']}): attempts {f['attempts']}: "
        f"{f['last_error']}"
        for f in data["last_failures"]
    ] or ["  (none)"]
    return lines


_BACKFILLED = {
    "backfill-users": "users",
    "backfill-organizations": "organizations",
    "backfill-memberships": "memberships",
}


# -- entry point ---------------------------------------------------------------------------


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
            result, code = anyio.run(_run, kit, args, err)
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
        out.write(json.dumps(_plain(result), indent=2, default=str) + "\n")
    else:
        out.write("\n".join(_summary(args.command, result)) + "\n")
    return int(code)


def _providers(args: argparse.Namespace) -> list[dict[str, str]]:
    try:
        if args.app and not (args.client_id or args.api_hostname):
            return load_authkit(args.app, app_dir=args.app_dir).auth_config_providers()
        from ._auth.providers import auth_config_providers

        return auth_config_providers(client_id=args.client_id, api_hostname=args.api_hostname)
    except ConfigurationError as exc:
        raise CommandError(str(exc), ExitCode.CONFIGURATION) from None
