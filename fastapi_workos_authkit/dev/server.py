"""The dev server: the testing kit's `FakeWorkOS`, made persistent, with webhooks and Actions.

`DevServer` is an ASGI app. It serves, on top of `FakeWorkOS` (users, organizations,
memberships, the Events API):

* ``GET /sso/jwks/{client_id}``: the dev signing key (another client id gets 404 and a hint in
  the log: the app is configured with a different ``WORKOS_CLIENT_ID``);
* ``GET /user_management/authorize``: a tiny page to pick a user, then a redirect back to
  ``redirect_uri`` with ``?code=...&state=...`` (the PKCE S256 challenge is remembered);
* ``POST /user_management/authenticate``: the JSON code exchange (``grant_type``,
  ``client_id``, ``code``, ``code_verifier``), answering ``{user, organization_id?,
  access_token, refresh_token, authentication_method}``;
* ``/_dev/...``: what the ``dev`` verbs call (API key required): create, update and delete
  users, create organizations and memberships, mint tokens, revoke sessions.

Every change is saved to the state folder and queued as a signed webhook to the app. Tokens are
issued as ``https://api.workos.com/user_management/<dev client id>``, so the app's default issuer
check passes while its keys come from ``WORKOS_API_BASE_URL``.

The routes above are one small web app and share the state and the delivery queue, so they
stay in one module, longer than most.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from ..testing import (
    FakeWorkOS,
    TokenFactory,
    authentication_action,
    factories,
    user_registration_action,
)
from .actions import ActionOutcome, Fallback, call_action
from .delivery import DEFAULT_BACKOFF, Sleep, WebhookQueue
from .state import DevState

logger = logging.getLogger("fastapi_workos_authkit.dev")

CODE_LIFETIME = 600  # seconds an authorization code stays valid, as WorkOS's 10 minutes
IP_ADDRESS, USER_AGENT = "127.0.0.1", "fastapi-workos-authkit dev"
CLIENT: dict[str, Any] = {"ip_address": IP_ADDRESS, "user_agent": USER_AGENT}


class DevError(Exception):
    """A request the dev server refuses: ``status`` and a message saying how to fix it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Code:
    user_id: str
    organization_id: str | None
    challenge: str | None
    redirect_uri: str
    expires: float


class DevServer:
    """A local WorkOS for one app, built on `FakeWorkOS` and saved in a `DevState` folder.

    Args:
        state: The state folder (key, secrets and data are loaded from it, or created).
        app_url: Where the app listens, e.g. ``http://127.0.0.1:8000``.
        prefix: The app's AuthKit router prefix (webhooks go to ``{prefix}/webhook``, Actions
            to ``{prefix}/action``).
        action_fallback: What to do when the Action endpoint fails or its reply does not
            verify: ``deny`` (WorkOS's default) or ``allow``.
        http_client: The client that reaches the app (tests pass one over an ASGI transport).
        backoff: Seconds between webhook retries (see `WebhookQueue`).
        sleep: How the webhook queue waits between retries.
    """

    def __init__(
        self,
        state: DevState,
        *,
        app_url: str = "http://127.0.0.1:8000",
        prefix: str = "/workos",
        action_fallback: Fallback = "deny",
        http_client: httpx.AsyncClient | None = None,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.state = state
        self.secrets, self.key = state.load_or_create_identity()
        data = state.load_data()
        self.fake = FakeWorkOS(api_key=self.secrets.api_key)
        self.fake.restore(
            users=data["users"],
            organizations=data["organizations"],
            memberships=data["memberships"],
            events=data["events"],
        )
        self.sessions: dict[str, dict[str, Any]] = {s["id"]: s for s in data["sessions"]}
        self._sent = len(data["events"])
        self.client = http_client or httpx.AsyncClient(timeout=10)
        base = app_url.rstrip("/") + prefix.rstrip("/")
        self.action_url = f"{base}/action"
        self.action_fallback: Fallback = action_fallback
        self.queue = WebhookQueue(
            f"{base}/webhook", self.secrets.webhook_secret, self.client, backoff, sleep
        )
        self._codes: dict[str, _Code] = {}
        self._lock = anyio.Lock()
        self.app = Starlette(
            routes=[
                Route("/sso/jwks/{client_id}", self._jwks, methods=["GET"]),
                Route("/user_management/authorize", self._authorize, methods=["GET"]),
                Route("/user_management/authenticate", self._authenticate, methods=["POST"]),
                Route("/_dev/health", self._admin(self._health), methods=["GET"]),
                Route("/_dev/users", self._admin(self._create_user), methods=["POST"]),
                Route(
                    "/_dev/users/{ref}",
                    self._admin(self._change_user),
                    methods=["PATCH", "DELETE"],
                ),
                Route("/_dev/organizations", self._admin(self._create_org), methods=["POST"]),
                Route("/_dev/memberships", self._admin(self._add_member), methods=["POST"]),
                Route("/_dev/tokens", self._admin(self._token), methods=["POST"]),
                Route("/_dev/sessions/revoke", self._admin(self._revoke), methods=["POST"]),
                Mount("/", app=self.fake),  # type: ignore[arg-type]
            ],
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(self.queue.run)
            for event in self.fake.events[self._sent :]:  # pragma: no cover - none at start
                self.queue.put(event)
            yield
            group.cancel_scope.cancel()
        # Here rather than after uvicorn returns: on SIGTERM uvicorn re-raises the signal once
        # it has shut down, so code after `run()` never runs.
        self.state.forget_server()

    def exports(self, base_url: str) -> dict[str, str]:
        """The environment the app needs to trust this server."""
        return {
            "WORKOS_CLIENT_ID": self.secrets.client_id,
            "WORKOS_API_KEY": self.secrets.api_key,
            "WORKOS_WEBHOOK_SECRET": self.secrets.webhook_secret,
            "WORKOS_ACTION_SECRET": self.secrets.action_secret,
            "WORKOS_API_BASE_URL": base_url,
        }

    # -- changes: saved, then queued as webhooks --------------------------------------------

    def _commit(self) -> None:
        events = self.fake.events
        for event in events[self._sent :]:
            self.queue.put(event)
        self._sent = len(events)
        self.state.save_data(
            {
                "users": self.fake.users,
                "organizations": self.fake.organizations,
                "memberships": self.fake.memberships,
                "sessions": list(self.sessions.values()),
                "events": events,
            }
        )

    def find_user(self, ref: str) -> dict[str, Any]:
        """A live user by id or email (case-insensitive)."""
        for user in self.fake.users:
            if user["id"] == ref or user["email"].lower() == ref.lower():
                return user
        raise DevError(404, f"no user {ref!r}: create it with `dev create-user --email ...`")

    def find_organization(self, ref: str) -> dict[str, Any]:
        """A live organization by id or name."""
        for organization in self.fake.organizations:
            if ref in (organization["id"], organization["name"]):
                return organization
        raise DevError(404, f"no organization {ref!r}: create it with `dev create-org --name ...`")

    def _membership(self, user_id: str, organization_id: str) -> dict[str, Any] | None:
        for membership in self.fake.memberships:
            if (
                membership["user_id"] == user_id
                and membership["organization_id"] == organization_id
            ):
                return membership
        return None

    async def _action(self, payload: dict[str, Any]) -> None:
        outcome: ActionOutcome = await call_action(
            self.client,
            self.action_url,
            self.secrets.action_secret,
            payload,
            fallback=self.action_fallback,
        )
        if not outcome.allowed:
            message = outcome.error_message or outcome.reason
            raise DevError(403, f"the app's Action denied it: {message}")

    async def create_user(
        self, email: str, first_name: str | None = None, last_name: str | None = None
    ) -> dict[str, Any]:
        """Register a user: the app's registration Action first, then ``user.created``."""
        if any(u["email"].lower() == email.lower() for u in self.fake.users):
            raise DevError(409, f"a user with email {email!r} already exists")
        await self._action(
            user_registration_action(email, first_name=first_name, last_name=last_name, **CLIENT)
        )
        async with self._lock:
            user = self.fake.create_user(email=email, first_name=first_name, last_name=last_name)
            self._commit()
        return user

    async def sign_in(
        self,
        user_ref: str,
        *,
        organization: str | None = None,
        role: str | None = None,
        permissions: Sequence[str] = (),
        lifetime: int = 3600,
        run_action: bool = True,
    ) -> tuple[dict[str, Any], str, str | None]:
        """Sign a user in: the authentication Action (unless ``run_action`` is false: it already
        ran), a new session (``session.created``) and an access token; returns ``(user, token,
        organization_id)``."""
        user = self.find_user(user_ref)
        org = self.find_organization(organization) if organization else None
        membership = self._membership(user["id"], org["id"]) if org else None
        if org is not None and membership is None:
            raise DevError(
                400,
                f"{user['email']} is not a member of {org['name']!r}: add them with "
                f"`dev add-member --user {user['email']} --org {org['id']}`",
            )
        if run_action:
            await self._action(
                authentication_action(
                    user, organization=org, organization_membership=membership, **CLIENT
                )
            )
        role = role or (membership["role"]["slug"] if membership else None)
        async with self._lock:
            now = datetime.now(UTC)
            session = factories.session(
                user["id"],
                organization_id=org["id"] if org else None,
                created_at=now,
                expires_at=now + timedelta(days=7),
                **CLIENT,
            )
            self.sessions[session["id"]] = session
            self.fake.add_event("session.created", session)
            self._commit()
        token = TokenFactory(self.secrets.client_id, key=self.key, lifetime=lifetime).mint(
            user["id"],
            sid=session["id"],
            org_id=org["id"] if org else None,
            role=role,
            roles=[role] if role else None,
            permissions=list(permissions) or None,
        )
        return user, token, org["id"] if org else None

    # -- admin routes (the verbs) -------------------------------------------------------------

    def _admin(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.secrets.api_key}":
                return JSONResponse({"message": "Unauthorized: use the dev API key"}, 401)
            try:
                body = await request.json() if request.method in ("POST", "PATCH") else {}
                return JSONResponse(await handler(request, body))
            except DevError as exc:
                return JSONResponse({"message": str(exc)}, exc.status)

        return endpoint

    async def _health(self, _request: Request, _body: Any) -> Any:
        return {"client_id": self.secrets.client_id, "pending_webhooks": self.queue.pending}

    async def _create_user(self, _request: Request, body: Any) -> Any:
        return await self.create_user(body["email"], body.get("first_name"), body.get("last_name"))

    async def _change_user(self, request: Request, body: Any) -> Any:
        user = self.find_user(request.path_params["ref"])
        async with self._lock:
            if request.method == "DELETE":
                self.fake.delete_user(user["id"])
                self._commit()
                return user
            fields = {k: v for k, v in body.items() if k in ("email", "first_name", "last_name")}
            if not fields:
                raise DevError(400, "nothing to change: give --email, --first-name or --last-name")
            changed = self.fake.update_user(user["id"], **fields)
            self._commit()
            return changed

    async def _create_org(self, _request: Request, body: Any) -> Any:
        if any(o["name"] == body["name"] for o in self.fake.organizations):
            raise DevError(409, f"an organization named {body['name']!r} already exists")
        async with self._lock:
            organization = self.fake.create_organization(name=body["name"])
            self._commit()
        return organization

    async def _add_member(self, _request: Request, body: Any) -> Any:
        user = self.find_user(body["user"])
        org = self.find_organization(body["org"])
        role = body.get("role") or "member"
        async with self._lock:
            existing = self._membership(user["id"], org["id"])
            if existing is not None:
                membership = self.fake.update_membership(existing["id"], role=role)
            else:
                membership = self.fake.create_membership(
                    user["id"], org["id"], role=role, organization_name=org["name"]
                )
            self._commit()
        return membership

    async def _token(self, _request: Request, body: Any) -> Any:
        lifetime = int(body.get("lifetime") or 3600)
        if lifetime <= 0:
            raise DevError(400, "--lifetime must be a positive number of seconds")
        _, token, _ = await self.sign_in(
            body["user"],
            organization=body.get("org"),
            role=body.get("role"),
            permissions=body.get("permissions") or (),
            lifetime=lifetime,
        )
        return {"access_token": token}

    async def _revoke(self, _request: Request, body: Any) -> Any:
        if body.get("sid"):
            targets = [self.sessions[body["sid"]]] if body["sid"] in self.sessions else []
            if not targets:
                raise DevError(404, f"no session {body['sid']!r}")
        else:
            user = self.find_user(body["user"])
            targets = [s for s in self.sessions.values() if s["user_id"] == user["id"]]
        revoked = []
        async with self._lock:
            for session in targets:
                if session["status"] != "active":
                    continue
                stamp = factories.iso(datetime.now(UTC))
                session.update(status="revoked", ended_at=stamp, updated_at=stamp)
                self.fake.add_event("session.revoked", copy.deepcopy(session))
                revoked.append(session["id"])
            self._commit()
        return {"revoked": revoked}

    # -- WorkOS routes ------------------------------------------------------------------------

    async def _jwks(self, request: Request) -> Response:
        wanted = request.path_params["client_id"]
        if wanted != self.secrets.client_id:
            logger.warning(
                "JWKS asked for client id %r, but this dev server's client id is %r: export "
                "WORKOS_CLIENT_ID as `dev serve` printed it",
                wanted,
                self.secrets.client_id,
            )
            return JSONResponse({"message": "Not found"}, 404)
        return JSONResponse({"keys": [self.key.jwk]})

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        problem = None
        if params.get("client_id") != self.secrets.client_id:
            problem = f"client_id must be this dev server's, {self.secrets.client_id}"
        elif params.get("response_type") != "code":
            problem = "response_type must be code"
        elif not params.get("redirect_uri"):
            problem = "redirect_uri is required"
        elif params.get("code_challenge") and params.get("code_challenge_method") != "S256":
            problem = "code_challenge_method must be S256"
        if problem is not None:
            return HTMLResponse(f"<p>Bad sign-in request: {html.escape(problem)}</p>", 400)
        chosen = params.get("user_id")
        if not chosen:
            return HTMLResponse(self._picker(request))
        try:
            user = await self._check_sign_in(chosen, params.get("organization_id"))
        except DevError as exc:
            return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", exc.status)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            user["id"],
            params.get("organization_id"),
            params.get("code_challenge"),
            params["redirect_uri"],
            time.time() + CODE_LIFETIME,
        )
        back = httpx.URL(params["redirect_uri"]).copy_merge_params(
            {"code": code, **({"state": params["state"]} if "state" in params else {})}
        )
        return RedirectResponse(str(back), 302)

    async def _check_sign_in(self, user_ref: str, organization: str | None) -> dict[str, Any]:
        # The authentication Action runs when the person picks a user, as on the hosted page.
        user = self.find_user(user_ref)
        org = self.find_organization(organization) if organization else None
        membership = self._membership(user["id"], org["id"]) if org else None
        await self._action(
            authentication_action(
                user, organization=org, organization_membership=membership, **CLIENT
            )
        )
        return user

    def _picker(self, request: Request) -> str:
        rows = []
        for user in self.fake.users:
            query = urlencode([*request.query_params.multi_items(), ("user_id", user["id"])])
            rows.append(
                f'<li><a href="?{html.escape(query)}">{html.escape(user["email"])}</a></li>'
            )
        listing = "".join(rows) or (
            "<li>No users yet: run <code>fastapi-workos-authkit dev create-user --email "
            "ada@example.com</code> and reload.</li>"
        )
        return (
            "<!doctype html><title>Sign in (dev)</title>"
            "<h1>Sign in to the local WorkOS</h1><p>Pick a user:</p>"
            f"<ul>{listing}</ul>"
        )

    async def _authenticate(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _oauth_error("invalid_request", "the body must be JSON")
        if not isinstance(body, dict):
            return _oauth_error("invalid_request", "the body must be a JSON object")
        if body.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", "grant_type must be authorization_code")
        if body.get("client_id") != self.secrets.client_id:
            return _oauth_error("invalid_client", "client_id is not this dev server's")
        if "client_secret" in body and body["client_secret"] != self.secrets.api_key:
            return _oauth_error("invalid_client", "client_secret is not the dev API key")
        found = self._codes.pop(str(body.get("code")), None)  # single use, even when refused
        if found is None or found.expires < time.time():
            return _oauth_error("invalid_grant", "the code is unknown, used or expired")
        if found.challenge is not None:
            verifier = str(body.get("code_verifier") or "")
            digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
            computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            if not secrets.compare_digest(computed, found.challenge):
                return _oauth_error("invalid_grant", "code_verifier does not match the challenge")
        elif body.get("client_secret") is None:
            return _oauth_error("invalid_client", "without PKCE, client_secret is required")
        try:
            user = self.find_user(found.user_id)
            # The Action already ran at `authorize`: start the session and mint the token.
            _, token, organization_id = await self.sign_in(
                found.user_id, organization=found.organization_id, run_action=False
            )
        except DevError as exc:
            return _oauth_error("invalid_grant", str(exc), exc.status)
        answer: dict[str, Any] = {
            "user": user,
            "access_token": token,
            "refresh_token": secrets.token_urlsafe(32),
            "authentication_method": "Password",
        }
        if organization_id is not None:
            answer["organization_id"] = organization_id
        return JSONResponse(answer)


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status)
