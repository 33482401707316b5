"""The ``webhooks`` command group: list, set up and delete the WorkOS webhook endpoints.

The work is done by `webhook_endpoints`; this module parses, confirms and prints. A change is
shown first and asked for; declining, or having no terminal to ask on and no ``--yes``, exits 1
with "nothing changed". The signing secret, returned by WorkOS only when it creates an endpoint,
is printed once with the variable to set, or written to ``--secret-file`` (mode 0600), whose
path is checked before anything is created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import IO, Any

import anyio

from .._authkit import AuthKit
from .._exceptions import ConfigurationError
from .._ops.webhook_endpoints import (
    SetupPlan,
    SetupResult,
    WebhookEndpoint,
    WebhookSetupError,
    delete_webhook_endpoints,
    list_webhook_endpoints,
    setup_webhook_endpoint,
)
from .._recovery.workos_api import WorkOSAPIError, WorkOSAuthenticationError

__all__ = ["add_app_arguments", "add_webhooks_commands", "run_webhooks"]

NOTHING_CHANGED = "nothing changed"


def add_app_arguments(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """``--app``, ``--app-dir`` (and ``--json``) after the verb too; when left out, the values
    given before the command (or their defaults) stay."""
    parser.add_argument(
        "--app",
        default=argparse.SUPPRESS,
        metavar="MODULE:ATTRIBUTE",
        help="the app's AuthKit, e.g. main:authkit (env AUTHKIT_APP): its handlers and mirrored "
        "kinds decide the event types",
    )
    parser.add_argument(
        "--app-dir", default=argparse.SUPPRESS, metavar="DIR", help="where to find the module"
    )
    if json_flag:
        parser.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )


def add_webhooks_commands(commands: Any) -> None:
    """Add the ``webhooks`` command group to the main parser's subcommands."""
    webhooks = commands.add_parser(
        "webhooks",
        help="list, set up and delete the WorkOS webhook endpoints (needs WORKOS_API_KEY)",
        description="Manage this WorkOS environment's webhook endpoints through its API, so "
        "that a deployment's endpoint is subscribed to exactly the event types the app needs.",
    )
    verbs = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="VERB")
    listing = verbs.add_parser(
        "list",
        help="every endpoint: id, status, URL and events (never a secret)",
        description="List every webhook endpoint of the environment the API key belongs to: "
        "its id, status, URL and subscribed event types. Secrets are never shown.",
    )
    add_app_arguments(listing)
    setup = verbs.add_parser(
        "setup",
        help="create or update the endpoint for a URL, subscribed to what the app needs",
        description="Create the endpoint for --url, or update the one with that URL, so that it "
        "is enabled and subscribed to exactly: user.created/updated/deleted, the types of every "
        "mirrored kind, every type with a handler (with --app), additional_event_types and "
        "--events. The difference is shown and confirmed first.",
    )
    setup.add_argument(
        "--url", required=True, help="where WorkOS posts, https://<app>{prefix}/webhook"
    )
    add_app_arguments(setup)
    setup.add_argument(
        "--events",
        action="extend",
        nargs="+",
        default=[],
        metavar="TYPE",
        help="more event types to subscribe to (exact names, comma- or space-separated)",
    )
    setup.add_argument("--yes", action="store_true", help="apply without asking")
    setup.add_argument(
        "--secret-file",
        default=None,
        metavar="PATH",
        help="on creation, write the signing secret here (mode 0600) instead of printing it",
    )
    delete = verbs.add_parser(
        "delete",
        help="delete the endpoint(s) with a URL (a torn-down preview deployment)",
        description="Delete every endpoint whose URL matches --url (scheme, host and path; a "
        "trailing slash and the query are ignored), after confirmation (--yes skips it).",
    )
    delete.add_argument("--url", required=True, help="the endpoint URL to delete")
    add_app_arguments(delete)
    delete.add_argument("--yes", action="store_true", help="delete without asking")


def run_webhooks(
    args: argparse.Namespace, out: IO[str], err: IO[str], *, stdin: IO[str] | None = None
) -> int:
    """Run one ``webhooks`` verb; returns the exit code."""
    from .common import CommandError, ExitCode, load_authkit

    source = sys.stdin if stdin is None else stdin
    try:
        if args.webhooks_command == "setup" and args.secret_file:
            _check_writable(args.secret_file)
        kit = load_authkit(args.app, app_dir=args.app_dir)
        return anyio.run(_run, kit, args, out, err, source)
    except CommandError as exc:
        err.write(f"error: {exc}\n")
        return int(exc.code)
    except ConfigurationError as exc:
        err.write(f"error: {exc}\n")
        return int(ExitCode.CONFIGURATION)
    except WorkOSAuthenticationError as exc:
        err.write(f"error: {exc}\n")
        return int(ExitCode.UNAUTHORIZED)
    except WorkOSAPIError as exc:
        err.write(f"error: {exc}\n")
        if args.webhooks_command == "setup":
            err.write(
                "The create call is never retried: if WorkOS received it, a new endpoint exists. "
                "Check with webhooks list before running setup again.\n"
            )
        return int(ExitCode.WORKOS_UNAVAILABLE)
    except WebhookSetupError as exc:
        err.write(f"error: {exc}\n")
        return int(ExitCode.FAILURE)


def _check_writable(path: str) -> None:
    from .common import CommandError, ExitCode

    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        problem = "is a directory"
    elif os.path.exists(path):
        problem = "" if os.access(path, os.W_OK) else "is not writable"
    elif not os.path.isdir(directory):
        problem = f"is in a folder that does not exist ({directory})"
    else:
        problem = "" if os.access(directory, os.W_OK) else f"cannot be created in {directory}"
    if problem:
        raise CommandError(
            f"--secret-file {path} {problem}: choose a writable path; {NOTHING_CHANGED}",
            ExitCode.FAILURE,
        )


def _write_secret(path: str, secret: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through os.open
        os.write(descriptor, (secret + "\n").encode())
    finally:
        os.close(descriptor)


def _confirm(lines: list[str], yes: bool, stdin: IO[str], err: IO[str]) -> bool:
    err.write("\n".join(lines) + "\n")
    if yes:
        return True
    if not stdin.isatty():
        err.write(f"no terminal to confirm on and no --yes: {NOTHING_CHANGED}\n")
        return False
    err.write("Apply? [y/N] ")
    err.flush()
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    err.write(f"{NOTHING_CHANGED}\n")
    return False


def _endpoint_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {**asdict(endpoint), "events": list(endpoint.events)}


async def _run(
    kit: AuthKit, args: argparse.Namespace, out: IO[str], err: IO[str], stdin: IO[str]
) -> int:
    try:
        if args.webhooks_command == "list":
            endpoints = await list_webhook_endpoints(kit.workos_api)
            _print_list(endpoints, args.json, out)
            return 0
        if args.webhooks_command == "setup":
            return await _setup(kit, args, out, err, stdin)
        return await _delete(kit, args, out, err, stdin)
    finally:
        await kit.shutdown()


def _print_list(endpoints: list[WebhookEndpoint], as_json: bool, out: IO[str]) -> None:
    if as_json:
        out.write(json.dumps([_endpoint_dict(e) for e in endpoints], indent=2) + "\n")
        return
    if not endpoints:
        out.write("no webhook endpoints\n")
    for endpoint in endpoints:
        out.write(f"{endpoint.id}  {endpoint.status}  {endpoint.endpoint_url}\n")
        out.write(f"  events: {', '.join(endpoint.events) or '(none)'}\n")


async def _setup(
    kit: AuthKit, args: argparse.Namespace, out: IO[str], err: IO[str], stdin: IO[str]
) -> int:
    if not args.app:
        err.write(
            "note: without --app, handlers are unknown: only user.*, the mirrored kinds and "
            "additional_event_types are subscribed\n"
        )
    extra = [t.strip() for value in args.events for t in value.split(",") if t.strip()]

    def confirm(plan: SetupPlan) -> bool:
        return _confirm(plan.describe(), args.yes, stdin, err)

    result = await setup_webhook_endpoint(kit, args.url, events=extra, confirm=confirm)
    if not result.applied:
        return 1
    _print_setup(result, args, out, err)
    return 0


def _print_setup(result: SetupResult, args: argparse.Namespace, out: IO[str], err: IO[str]) -> None:
    plan = result.plan
    report: dict[str, Any] = {
        "action": plan.action,
        "endpoint": _endpoint_dict(result.endpoint) if result.endpoint else None,
        "added": list(plan.added),
        "removed": list(plan.removed),
    }
    lines: list[str] = []
    if plan.action == "none":
        lines.append(plan.describe()[0])
    elif plan.action == "update" and result.endpoint is not None:
        lines.append(
            f"updated {result.endpoint.id}: {len(result.endpoint.events)} event types, "
            f"{result.endpoint.status}"
        )
    if result.secret is not None and result.endpoint is not None:
        lines.append(f"created {result.endpoint.id} for {result.endpoint.endpoint_url}")
        if args.secret_file:
            _write_secret(args.secret_file, result.secret)
            report["secret_file"] = args.secret_file
            lines.append(
                f"wrote its signing secret to {args.secret_file} (mode 0600): set "
                "WORKOS_WEBHOOK_SECRET from it"
            )
        else:
            report["secret"] = result.secret
            lines.append(f"WORKOS_WEBHOOK_SECRET={result.secret}")
            err.write(
                "WorkOS shows this secret only now: set it as WORKOS_WEBHOOK_SECRET in the "
                "deployment's environment\n"
            )
    elif args.secret_file:
        err.write(
            f"the endpoint already existed: WorkOS returns a secret only when it creates one, "
            f"so nothing was written to {args.secret_file}; keep the secret from its creation\n"
        )
    if args.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        out.write("\n".join(lines) + "\n")


async def _delete(
    kit: AuthKit, args: argparse.Namespace, out: IO[str], err: IO[str], stdin: IO[str]
) -> int:
    declined = False

    def confirm(endpoints: list[WebhookEndpoint]) -> bool:
        nonlocal declined
        lines = [f"delete {e.id} ({e.endpoint_url})" for e in endpoints]
        declined = not _confirm(lines, args.yes, stdin, err)
        return not declined

    deleted = await delete_webhook_endpoints(kit, args.url, confirm=confirm)
    if declined:
        return 1
    if args.json:
        out.write(json.dumps([_endpoint_dict(e) for e in deleted], indent=2) + "\n")
    elif not deleted:
        out.write(f"no endpoint with the URL {args.url}: nothing to delete\n")
    else:
        out.write("".join(f"deleted {e.id} ({e.endpoint_url})\n" for e in deleted))
    return 0
