"""The ``fastapi-workos-authkit dev`` verbs: serve a local WorkOS, and change what it holds.

``dev serve`` runs the server; every other verb finds it through the state folder's
``server.json`` and calls its ``/_dev`` routes with the dev API key, so the server (which holds
the key, calls the Actions and records the sessions) does the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from typing import IO, Any

import httpx

from .state import DEFAULT_STATE_DIR, DevState

STATE_DIR_ENV = "WORKOS_DEV_STATE_DIR"
EXIT_OK, EXIT_FAILURE = 0, 1


class DevCommandError(Exception):
    """A verb failed; the message says what to do."""


def add_dev_commands(commands: Any) -> None:
    """Add the ``dev`` command group to the main parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        default=os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR),
        metavar="DIR",
        help=f"the dev server's state folder (default {DEFAULT_STATE_DIR}, env {STATE_DIR_ENV})",
    )
    dev = commands.add_parser(
        "dev",
        help="a local WorkOS for development, no account needed",
        description="A local WorkOS for development: `dev serve` runs it; the other verbs "
        "change its users, organizations and sessions, and each change reaches your app as a "
        "signed webhook.",
    )
    verbs = dev.add_subparsers(dest="dev_command", required=True, metavar="VERB")

    def verb(name: str, summary: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(
            name, parents=[common], help=summary, description=summary + "."
        )
        return parser

    serve = verb("serve", "run the local WorkOS on 127.0.0.1 and print the exports for your app")
    serve.add_argument("--port", type=int, default=8787, help="0 picks a free port (default 8787)")
    serve.add_argument("--app-url", default="http://127.0.0.1:8000", help="where your app listens")
    serve.add_argument(
        "--prefix", default="/workos", help="your AuthKit router's prefix (default /workos)"
    )
    serve.add_argument(
        "--action-fallback",
        choices=("deny", "allow"),
        default="deny",
        help="when the Action endpoint fails or its reply does not verify (default deny)",
    )

    create = verb("create-user", "create a user (runs the registration Action; user.created)")
    create.add_argument("--email", required=True)
    create.add_argument("--first-name", default=None)
    create.add_argument("--last-name", default=None)

    update = verb("update-user", "change a user's email or names (user.updated)")
    update.add_argument("user", metavar="USER", help="the user's id or email")
    update.add_argument("--email", default=None, help="the new email")
    update.add_argument("--first-name", default=None)
    update.add_argument("--last-name", default=None)

    delete = verb("delete-user", "delete a user (user.deleted)")
    delete.add_argument("user", metavar="USER", help="the user's id or email")

    org = verb("create-org", "create an organization (organization.created)")
    org.add_argument("--name", required=True)

    member = verb("add-member", "add a user to an organization, or change their role")
    who = member.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", default=None, help="the user's email")
    who.add_argument("--user", default=None, help="the user's id")
    member.add_argument("--org", required=True, help="the organization's id or name")
    member.add_argument("--role", default="member", help="role slug (default member)")

    token = verb("token", "sign a user in and print only their access token (session.created)")
    subject = token.add_mutually_exclusive_group(required=True)
    subject.add_argument("--email", default=None, help="the user's email")
    subject.add_argument("--sub", default=None, help="the user's id")
    token.add_argument("--org", default=None, help="scope the session to this organization")
    token.add_argument("--role", default=None, help="role claim (default: the membership's)")
    token.add_argument(
        "--permission", action="append", default=[], help="a permission claim (repeatable)"
    )
    token.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")

    revoke = verb("revoke-session", "end a session, or every session of a user (session.revoked)")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--sid", default=None, help="the session id (the token's sid claim)")
    target.add_argument("--email", default=None, help="every active session of this user")

    verb("reset", "delete the state folder: new key and secrets, no users (stop serve first)")


def run_dev(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run one ``dev`` verb; returns the exit code."""
    state = DevState(args.state_dir)
    try:
        if args.dev_command == "serve":
            return _serve(args, state, out, err)
        if args.dev_command == "reset":
            if _running(state):
                raise DevCommandError(
                    f"a dev server is running on {state.server_url()}: stop it, then reset"
                )
            state.reset()
            out.write(f"removed {state.directory}\n")
            return EXIT_OK
        answer = _call(state, *_request(args))
    except DevCommandError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_FAILURE
    if args.dev_command == "token":
        out.write(answer["access_token"] + "\n")
    else:
        out.write(json.dumps(answer, indent=2) + "\n")
    return EXIT_OK


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    verb = args.dev_command
    if verb == "create-user":
        names = {"first_name": args.first_name, "last_name": args.last_name}
        return "POST", "/_dev/users", {"email": args.email, **names}
    if verb in ("update-user", "delete-user"):
        path = "/_dev/users/" + httpx.URL(args.user).raw_path.decode()
        if verb == "delete-user":
            return "DELETE", path, None
        fields = {"email": args.email, "first_name": args.first_name, "last_name": args.last_name}
        return "PATCH", path, {k: v for k, v in fields.items() if v is not None}
    if verb == "create-org":
        return "POST", "/_dev/organizations", {"name": args.name}
    if verb == "add-member":
        body = {"user": args.email or args.user, "org": args.org, "role": args.role}
        return "POST", "/_dev/memberships", body
    if verb == "token":
        return (
            "POST",
            "/_dev/tokens",
            {
                "user": args.email or args.sub,
                "org": args.org,
                "role": args.role,
                "permissions": args.permission,
                "lifetime": args.lifetime,
            },
        )
    if verb == "revoke-session":
        return "POST", "/_dev/sessions/revoke", {"sid": args.sid, "user": args.email}
    raise DevCommandError(f"unknown dev verb {verb!r}")  # pragma: no cover - argparse checks


def _running(state: DevState) -> bool:
    url = state.server_url()
    if url is None:
        return False
    try:
        httpx.get(url + "/_dev/health", timeout=2)
    except httpx.TransportError:
        return False
    return True


def _call(state: DevState, method: str, path: str, body: dict[str, Any] | None) -> Any:
    url, key = state.server_url(), state.api_key()
    if url is None or key is None:
        raise DevCommandError(
            f"no dev server is running with the state folder {state.directory}: start one with "
            "`fastapi-workos-authkit dev serve` (or pass its --state-dir)"
        )
    try:
        answer = httpx.request(
            method,
            url + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    except httpx.TransportError:
        raise DevCommandError(
            f"the dev server at {url} is not running: start it with "
            "`fastapi-workos-authkit dev serve`"
        ) from None
    if answer.status_code >= 400:
        try:
            message = answer.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {answer.status_code}"
        raise DevCommandError(message)
    return answer.json()


def _serve(args: argparse.Namespace, state: DevState, out: IO[str], err: IO[str]) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise DevCommandError(
            "dev serve needs uvicorn: pip install 'fastapi-workos-authkit[server]'"
        ) from None
    from .server import DevServer

    server = DevServer(
        state, app_url=args.app_url, prefix=args.prefix, action_fallback=args.action_fallback
    )
    # Loopback only: the folder's secrets are the only thing between this server and anyone.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as exc:
        raise DevCommandError(
            f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): pick another --port"
        ) from None
    sock.listen(128)  # accepted connections wait in the backlog until uvicorn takes over
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    state.record_server(base_url, os.getpid())
    for name, value in server.exports(base_url).items():
        out.write(f"export {name}={value}\n")
    out.flush()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("dev: %(message)s"))
    dev_logger = logging.getLogger("fastapi_workos_authkit.dev")
    dev_logger.addHandler(handler)
    dev_logger.setLevel(logging.INFO)
    config = uvicorn.Config(server, log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        dev_logger.removeHandler(handler)
    return EXIT_OK
