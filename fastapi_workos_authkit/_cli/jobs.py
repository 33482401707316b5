"""The recovery-job subcommands: running a job against the app's `AuthKit`, its progress on
stderr and its summary on stdout."""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from typing import IO, Any

import anyio
import anyio.to_thread
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .._authkit import AuthKit
from .._exceptions import AuthKitError, ConfigurationError, DatabaseUnavailableError, HandlerError
from .._recovery import Progress
from .._recovery.workos_api import WorkOSAPIError, WorkOSAuthenticationError
from .._sync.database import create_tables, driver_message, is_unavailable
from .common import CommandError, ExitCode


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


def _backfill(job: Callable[[AuthKit], Callable[..., Awaitable[Any]]]) -> Command:
    """The command for one of `AuthKit`'s backfills (they share their flags and contract)."""

    async def run(
        kit: AuthKit, args: argparse.Namespace, progress: ProgressPrinter
    ) -> tuple[Any, ExitCode]:
        result = await job(kit)(
            run_handlers=not args.no_handlers, restart=args.restart, progress=progress
        )
        return result, ExitCode.OK

    return run


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
    "backfill-users": _backfill(lambda kit: kit.backfill_users),
    "backfill-organizations": _backfill(lambda kit: kit.backfill_organizations),
    "backfill-memberships": _backfill(lambda kit: kit.backfill_memberships),
    "replay-failed": _replay_failed,
    "prune": _prune,
    "status": _status,
}


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of it rather than leak a password
        return "(the configured database)"


async def run_job(kit: AuthKit, args: argparse.Namespace, stderr: IO[str]) -> tuple[Any, ExitCode]:
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


def plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def summary_lines(command: str, result: Any) -> list[str]:
    data = plain(result)
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
