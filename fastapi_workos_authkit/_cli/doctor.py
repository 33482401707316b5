"""The ``doctor`` command: `run_doctor`'s checks, one line each, non-zero on any fail."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import IO, Any

import anyio

from .._authkit import AuthKit
from .._ops.doctor import DoctorReport, run_doctor, summary
from .webhooks import add_app_arguments

__all__ = ["add_doctor_command", "run_doctor_command"]


def add_doctor_command(commands: Any) -> None:
    """Add ``doctor`` to the main parser's subcommands."""
    doctor = commands.add_parser(
        "doctor",
        help="check the settings, database, keys and webhook endpoint; non-zero on a fail",
        description="Check everything reachable: the secrets set (never shown), the database "
        "and its tables, the JWKS of the client id, the webhook endpoint's status and event "
        "types (with WORKOS_API_KEY), failed events, the catch-up's age and the leases. One "
        "line per check, ok/warn/fail with the fix; exit 1 on any fail.",
    )
    add_app_arguments(doctor)
    doctor.add_argument("--url", default=None, help="check only the webhook endpoint with this URL")


def run_doctor_command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``doctor``; returns 1 when any check failed, 0 otherwise."""
    from .common import CommandError, load_authkit

    try:
        kit = load_authkit(args.app, app_dir=args.app_dir)
    except CommandError as exc:
        err.write(f"error: {exc}\n")
        return int(exc.code)
    report = anyio.run(_run, kit, args.url, args.app)
    if args.json:
        payload = {"ok": not report.failed, "checks": [asdict(c) for c in report.checks]}
        out.write(json.dumps(payload, indent=2) + "\n")
    else:
        for check in report.checks:
            fix = f"  -> {check.fix}" if check.fix else ""
            out.write(f"{check.status:<5}{check.group:<12}{check.message}{fix}\n")
        out.write(f"doctor: {summary(report.checks)}\n")
    return 1 if report.failed else 0


async def _run(kit: AuthKit, url: str | None, app: str | None) -> DoctorReport:
    try:
        return await run_doctor(kit, url=url, app=app)
    finally:
        await kit.shutdown()
        if kit.owns_engine:  # the command is done with the database; close its connections
            kit.engine.dispose()
