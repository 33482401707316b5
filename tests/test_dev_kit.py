"""The dev server in-process: its state folder, webhook queue, Actions and PKCE sign-in.

Each test runs `DevServer` as an ASGI app over httpx; the app it talks to is a real AuthKit app
(also over ASGI), or a tiny ASGI app where a misbehaving endpoint is the point. The end-to-end
story with real processes is in ``test_dev_server.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from sqlmodel import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit._routes.signatures import verify_signature
from fastapi_workos_authkit.cli import main
from fastapi_workos_authkit.dev import DevError, DevServer, DevState
from fastapi_workos_authkit.dev.actions import call_action
from fastapi_workos_authkit.dev.delivery import WebhookQueue
from fastapi_workos_authkit.testing import factories, user_registration_action

from .conftest import app_client, session_for

pytestmark = pytest.mark.anyio


def _claims(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


@asynccontextmanager
async def dev_client(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {server.secrets.api_key}"}
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://dev", headers=headers
    ) as client:
        yield client


def _no_app() -> str:
    """The URL of a loopback port nothing listens on: an app that is not started yet."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- state --------------------------------------------------------------------------------------


async def test_state_survives_a_restart_in_0600_files(tmp_path: Path) -> None:
    state = DevState(tmp_path / ".workos-dev")
    first = DevServer(state, app_url=_no_app())
    ada = await first.create_user("ada@example.com", "Ada", "Lovelace")

    again = DevServer(DevState(tmp_path / ".workos-dev"), app_url=_no_app())
    assert again.secrets == first.secrets
    assert again.key.jwk == first.key.jwk
    user, token, _ = await again.sign_in("ada@example.com")
    assert user["id"] == ada["id"]
    claims = _claims(token)
    assert claims["sub"] == ada["id"]
    assert claims["iss"] == f"https://api.workos.com/user_management/{first.secrets.client_id}"
    assert claims["exp"] - claims["iat"] == 3600
    # The Events API still knows the first server's events, so an app's cursor stays valid.
    assert [e["event"] for e in again.fake.events] == ["user.created", "session.created"]

    folder = tmp_path / ".workos-dev"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["data.json", "secrets.json", "signing_key.pem"]
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name

    state.reset()
    assert not folder.exists()
    fresh = DevServer(DevState(folder), app_url=_no_app())
    assert fresh.secrets.client_id != first.secrets.client_id
    assert fresh.fake.users == []


async def test_jwks_serves_the_dev_key_and_hints_at_a_wrong_client_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = DevServer(DevState(tmp_path), app_url=_no_app())
    async with dev_client(server) as client:
        keys = (await client.get(f"/sso/jwks/{server.secrets.client_id}")).json()["keys"]
        assert [k["kid"] for k in keys] == [server.key.kid]
        with caplog.at_level(logging.WARNING, "fastapi_workos_authkit.dev"):
            wrong = await client.get("/sso/jwks/client_other")
    assert wrong.status_code == 404
    assert "export WORKOS_CLIENT_ID" in caplog.text
    assert server.secrets.client_id in caplog.text


async def test_verbs_need_the_api_key_and_explain_their_errors(tmp_path: Path) -> None:
    server = DevServer(DevState(tmp_path), app_url=_no_app())
    async with dev_client(server) as client:
        anonymous = await client.post(
            "/_dev/users", json={"email": "a@example.com"}, headers={"Authorization": ""}
        )
        assert anonymous.status_code == 401
        missing = await client.post("/_dev/tokens", json={"user": "nobody@example.com"})
        assert missing.status_code == 404
        assert "dev create-user" in missing.json()["message"]
        await client.post("/_dev/users", json={"email": "ada@example.com"})
        twice = await client.post("/_dev/users", json={"email": "ADA@example.com"})
        assert twice.status_code == 409
        await client.post("/_dev/organizations", json={"name": "Acme"})
        outsider = await client.post(
            "/_dev/tokens", json={"user": "ada@example.com", "org": "Acme"}
        )
        assert outsider.status_code == 400
        assert "dev add-member" in outsider.json()["message"]
        member = await client.post(
            "/_dev/memberships", json={"user": "ada@example.com", "org": "Acme", "role": "admin"}
        )
        assert member.json()["role"] == {"slug": "admin"}
        token = await client.post(
            "/_dev/tokens",
            json={"user": "ada@example.com", "org": "Acme", "permissions": ["todos:write"]},
        )
        claims = _claims(token.json()["access_token"])
        assert claims["org_id"] == member.json()["organization_id"]
        assert (claims["role"], claims["permissions"]) == ("admin", ["todos:write"])
        revoked = await client.post("/_dev/sessions/revoke", json={"user": "ada@example.com"})
        assert revoked.json()["revoked"] == [claims["sid"]]
    types = [e["event"] for e in server.fake.events]
    assert types == [
        "user.created",
        "organization.created",
        "organization_membership.created",
        "session.created",
        "session.revoked",
    ]
    assert server.queue.pending == len(types)  # queued for the app, in that order


# -- webhook delivery ---------------------------------------------------------------------------


async def test_webhooks_are_delivered_in_order_with_retries_and_backoff() -> None:
    secret = "whsec_dev_test"
    received: list[str] = []
    answers = iter([503, 500])  # the first event fails twice, then everything succeeds

    async def webhook(request: Request) -> Response:
        body = await request.body()
        verify_signature(body, request.headers["workos-signature"], secret, tolerance=180)
        event_id = json.loads(body)["id"]
        status = next(answers, 200)
        if status == 200:
            received.append(event_id)
        return JSONResponse({}, status)

    app = Starlette(routes=[Route("/workos/webhook", webhook, methods=["POST"])])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as client:
        queue = WebhookQueue("http://app/workos/webhook", secret, client, (1, 2, 4), sleep)
        events = [factories.user_created() for _ in range(3)]
        async with anyio.create_task_group() as group:
            group.start_soon(queue.run)
            for event in events:
                queue.put(event)
            while queue.pending:
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()

    assert received == [e["id"] for e in events]
    assert waits == [1, 2]
    first = events[0]["id"]
    assert [(a.event_id, a.attempt, a.status) for a in queue.attempts[:3]] == [
        (first, 1, 503),
        (first, 2, 500),
        (first, 3, 200),
    ]


async def test_a_delivery_is_given_up_after_its_retries(caplog: pytest.LogCaptureFixture) -> None:
    async def sleep(_seconds: float) -> None:
        return None

    async with httpx.AsyncClient() as client:
        queue = WebhookQueue(_no_app() + "/workos/webhook", "whsec", client, (1, 1), sleep)
        with caplog.at_level(logging.INFO, "fastapi_workos_authkit.dev"):
            delivered = await queue.deliver(factories.user_created())
    assert delivered is False
    assert [a.error for a in queue.attempts] == ["ConnectError"] * 3
    assert "given up after 3 attempts" in caplog.text
    assert "whsec" not in caplog.text


@asynccontextmanager
async def app_of(state: DevState, engine: Any, kit: AuthKit | None = None) -> AsyncIterator[Any]:
    """A real AuthKit app configured as `dev serve` prints, and a dev server wired to it."""
    _found, _ = state.load_or_create_identity()
    kit = kit or dev_authkit(state, engine)
    async with app_client(kit) as app:
        yield DevServer(state, app_url="http://testserver", http_client=app)


def dev_authkit(state: DevState, engine: Any) -> AuthKit:
    found, _ = state.load_or_create_identity()
    return AuthKit(
        client_id=found.client_id,
        webhook_secret=found.webhook_secret,
        action_secret=found.action_secret,
        api_base_url="http://dev",
        engine=engine,
    )


async def drain(server: DevServer) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(server.queue.run)
        while server.queue.pending:
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()


async def test_create_user_reaches_the_app_as_a_signed_webhook(engine: Any, tmp_path: Path) -> None:
    async with app_of(DevState(tmp_path), engine) as server:
        ada = await server.create_user("ada@example.com", "Ada")
        await drain(server)
    assert [(a.event_type, a.status) for a in server.queue.attempts] == [("user.created", 200)]
    with session_for(engine) as session:
        row = session.exec(select(WorkOSUser).where(WorkOSUser.id == ada["id"])).one()
    assert (row.email, row.first_name) == ("ada@example.com", "Ada")


# -- Actions ------------------------------------------------------------------------------------


async def test_a_deny_from_the_apps_actions_is_honoured(engine: Any, tmp_path: Path) -> None:
    state = DevState(tmp_path)
    kit = dev_authkit(state, engine)

    @kit.action("user_registration")
    def work_email_only(_session: Any, action: Any, response: Any) -> Any:
        if action.user_data.email.endswith("@gmail.com"):
            return response.deny("Please use a work email address")
        return response.allow()

    @kit.action("authentication")
    def no_banned(_session: Any, action: Any, response: Any) -> Any:
        if action.user.first_name == "Banned":
            return response.deny("Your account is suspended")
        return response.allow()

    async with app_of(state, engine, kit) as server:
        with pytest.raises(DevError, match="Please use a work email address"):
            await server.create_user("someone@gmail.com")
        assert server.fake.users == []
        await server.create_user("ada@example.com", "Ada")
        await server.create_user("bob@example.com", "Banned")
        _, token, _ = await server.sign_in("ada@example.com")
        assert token
        with pytest.raises(DevError, match="Your account is suspended"):
            await server.sign_in("bob@example.com")
    assert sum(e["event"] == "session.created" for e in server.fake.events) == 1


async def _outcome(app: Starlette | None, fallback: Any = "deny") -> Any:
    payload = user_registration_action("ada@example.com")
    if app is None:
        async with httpx.AsyncClient() as client:
            return await call_action(client, _no_app() + "/workos/action", "s", payload)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        return await call_action(
            client, "http://app/workos/action", "s", payload, fallback=fallback
        )


def _answering(status: int, body: bytes = b"{}") -> Starlette:
    async def action(_request: Request) -> Response:
        return Response(body, status, media_type="application/json")

    return Starlette(routes=[Route("/workos/action", action, methods=["POST"])])


async def test_action_outcomes_without_a_verdict() -> None:
    no_route = await _outcome(Starlette())
    assert (no_route.allowed, no_route.reason) == (True, "no Action route (404)")
    unreachable = await _outcome(None)
    assert (unreachable.allowed, unreachable.reason) == (True, "unreachable")
    failing = await _outcome(_answering(500))
    assert failing.allowed is False
    assert "answered 500; fallback deny" in failing.reason
    assert (await _outcome(_answering(500), "allow")).allowed is True
    forged = json.dumps(
        {
            "object": "user_registration_action_response",
            "payload": {"timestamp": 1768478400000, "verdict": "Allow"},
            "signature": "0" * 64,
        },
        separators=(",", ":"),
    ).encode()
    unsigned = await _outcome(_answering(200, forged))
    assert unsigned.allowed is False
    assert "does not verify" in unsigned.reason
    assert (await _outcome(_answering(200, b"not json"), "allow")).allowed is True


# -- Swagger sign-in: authorize and authenticate --------------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(b"v" * 40).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


async def _code(client: httpx.AsyncClient, server: DevServer, user_id: str, challenge: str) -> str:
    query = {
        "response_type": "code",
        "client_id": server.secrets.client_id,
        "redirect_uri": "http://app/docs/oauth2-redirect",
        "provider": "authkit",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    page = await client.get("/user_management/authorize", params=query)
    assert page.status_code == 200
    assert "ada@example.com" in page.text
    picked = await client.get("/user_management/authorize", params={**query, "user_id": user_id})
    assert picked.status_code == 302
    back = httpx.URL(picked.headers["location"])
    assert back.path == "/docs/oauth2-redirect"
    assert back.params["state"] == "xyz"
    return back.params["code"]


async def test_pkce_sign_in_refuses_a_wrong_verifier(tmp_path: Path) -> None:
    server = DevServer(DevState(tmp_path), app_url=_no_app())
    ada = await server.create_user("ada@example.com", "Ada")
    verifier, challenge = _pkce()
    exchange = {"grant_type": "authorization_code", "client_id": server.secrets.client_id}
    async with dev_client(server) as client:
        code = await _code(client, server, ada["id"], challenge)
        wrong = await client.post(
            "/user_management/authenticate",
            json={**exchange, "code": code, "code_verifier": "not-the-verifier"},
        )
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
        reused = await client.post(
            "/user_management/authenticate",
            json={**exchange, "code": code, "code_verifier": verifier},
        )
        assert reused.status_code == 400  # a code is used once, even when refused

        code = await _code(client, server, ada["id"], challenge)
        answer = await client.post(
            "/user_management/authenticate",
            json={**exchange, "code": code, "code_verifier": verifier},
        )
    assert answer.status_code == 200
    body = answer.json()
    assert body["user"]["id"] == ada["id"]
    assert body["authentication_method"] == "Password"
    assert body["refresh_token"]
    assert "organization_id" not in body
    claims = _claims(body["access_token"])
    assert claims["sub"] == ada["id"]
    assert claims["sid"] in server.sessions


# -- the verbs without a server -------------------------------------------------------------------


def test_verbs_say_how_to_start_the_server_and_reset_clears_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / ".workos-dev"
    out, err = StringIO(), StringIO()
    code = main(
        ["dev", "token", "--email", "ada@example.com", "--state-dir", str(folder)],
        stdout=out,
        stderr=err,
    )
    assert code == 1
    assert err.getvalue().startswith("error: no dev server is running")
    assert "dev serve" in err.getvalue()

    DevState(folder).load_or_create_identity()
    DevState(folder).record_server(_no_app(), 1)  # a server that stopped without cleaning up
    code = main(
        ["dev", "create-user", "--email", "a@example.com", "--state-dir", str(folder)],
        stdout=out,
        stderr=err,
    )
    assert code == 1
    assert "is not running: start it with" in err.getvalue()
    assert main(["dev", "reset", "--state-dir", str(folder)], stdout=out, stderr=err) == 0
    assert not folder.exists()
