"""Swagger UI sign-in: the Authorize button of ``/docs``, against the dev server.

The app is a real FastAPI app with ``router(swagger=True)`` and ``swagger_ui_init_oauth``; its
calls to WorkOS (JWKS, the user fetch, the code exchange) reach the real `DevServer` over ASGI,
and the dev server reaches the app's Action endpoint the same way. The dev server's webhook
queue is not run, so the first call fetches the user just in time. Each step is what Swagger UI
does in the browser: open the authorize URL with its parameters, pick a user on the page,
follow the redirect, post the code as a form to the token URL, then call a route.
"""

import base64
import hashlib
import html
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import Engine
from sqlmodel import select

from fastapi_workos_authkit import AuthKit, ConfigurationError, WorkOSUser
from fastapi_workos_authkit._routes.swagger import MAX_FORM_SIZE
from fastapi_workos_authkit.dev import DevServer, DevState

from .conftest import session_for

pytestmark = pytest.mark.anyio

REDIRECT_URI = "http://testserver/docs/oauth2-redirect"
VERIFIER = base64.urlsafe_b64encode(b"swagger-ui-code-verifier-" * 2).rstrip(b"=").decode()
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
)


# --8<-- [start:swagger-app]
def build_app(authkit: AuthKit) -> FastAPI:
    app = FastAPI(
        lifespan=authkit.lifespan,
        # The Authorize button of /docs signs in through AuthKit (PKCE).
        swagger_ui_init_oauth=authkit.swagger_ui_oauth(),
    )
    # swagger=True mounts POST /workos/swagger/token, Swagger UI's token URL.
    app.include_router(authkit.router(swagger=True))

    @app.get("/me")
    async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
        return {"id": user.id, "email": user.email}

    return app
    # --8<-- [end:swagger-app]


@dataclass
class World:
    server: DevServer
    app: FastAPI
    client: httpx.AsyncClient  # to the app
    browser: httpx.AsyncClient  # to the dev server, as the browser reaches it
    ada: dict[str, Any]


@asynccontextmanager
async def world(
    tmp_path: Path, engine: Engine, *, api_key: str | None = None
) -> AsyncIterator[World]:
    """The dev server and an app configured as `dev serve` prints, each reaching the other."""
    state = DevState(tmp_path / ".workos-dev")
    identity, _ = state.load_or_create_identity()
    server: DevServer | None = None

    async def dev_server(scope: Any, receive: Any, send: Any) -> None:
        assert server is not None
        await server(scope, receive, send)

    authkit = AuthKit(
        client_id=identity.client_id,
        api_key=api_key or identity.api_key,
        webhook_secret=identity.webhook_secret,
        api_base_url="http://dev",
        engine=engine,
        http_transport=httpx.ASGITransport(app=dev_server),
    )
    app = build_app(authkit)
    to_app = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    server = DevServer(state, app_url="http://testserver", http_client=to_app)
    async with (
        authkit.lifespan(app),
        to_app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url="http://dev") as dev,
    ):
        # The app has no Action route (404): the dev server allows the registration.
        ada = await server.create_user("ada@example.com", "Ada")
        yield World(server, app, to_app, dev, ada)


async def sign_in(w: World) -> str:
    """What Swagger UI does after Authorize: returns the code the redirect brings back."""
    scheme = (await w.client.get("/openapi.json")).json()["components"]["securitySchemes"]
    flow = scheme["WorkOSAccessToken"]["flows"]["authorizationCode"]
    init = w.app.swagger_ui_init_oauth
    assert init is not None
    # Swagger UI appends its parameters with "&" when the URL already has a query.
    query = [
        ("response_type", "code"),
        ("client_id", init["clientId"]),
        ("redirect_uri", REDIRECT_URI),
        ("scope", ""),
        ("state", "c3RhdGU"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    url = flow["authorizationUrl"] + "&" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
    page = await w.browser.get(url)
    assert page.status_code == 200
    # The person clicks their email on the page.
    links = dict(
        (text, html.unescape(href))
        for href, text in re.findall(r'<a href="([^"]+)">([^<]+)</a>', page.text)
    )
    picked = await w.browser.get(httpx.URL(url).join(links["ada@example.com"]))
    assert picked.status_code == 302
    back = httpx.URL(picked.headers["location"])
    assert str(back.copy_with(query=None)) == REDIRECT_URI
    assert back.params["state"] == "c3RhdGU"
    return back.params["code"]


def token_form(w: World, code: str, verifier: str = VERIFIER) -> dict[str, str]:
    """The form Swagger UI posts to the token URL (authorization code, PKCE, no secret)."""
    init = w.app.swagger_ui_init_oauth
    assert init is not None
    return {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": init["clientId"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }


async def test_swagger_sign_in_then_a_protected_route(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with world(tmp_path, engine) as w:
        code = await sign_in(w)
        exchanged = await w.client.post("/workos/swagger/token", data=token_form(w, code))
        assert exchanged.status_code == 200, exchanged.text
        assert exchanged.headers["cache-control"] == "no-store"
        answer = exchanged.json()
        assert answer["token_type"] == "bearer"
        assert answer["refresh_token"]
        assert set(answer) == {"access_token", "token_type", "refresh_token"}

        # "Try it out": Swagger UI sends the token as a Bearer header.
        headers = {"Authorization": f"Bearer {answer['access_token']}"}
        me = await w.client.get("/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json() == {"id": w.ada["id"], "email": "ada@example.com"}
        session_ids = list(w.server.sessions)
    # The unsynced user was fetched from the dev server's users API, just in time.
    with session_for(engine) as session:
        row = session.exec(select(WorkOSUser).where(WorkOSUser.id == w.ada["id"])).one()
    assert (row.email, row.first_name) == ("ada@example.com", "Ada")
    assert len(session_ids) == 1  # the exchange started one WorkOS session
    for secret in (code, VERIFIER, answer["access_token"], answer["refresh_token"]):
        assert secret not in caplog.text


async def test_a_wrong_verifier_is_invalid_grant_and_the_code_is_spent(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with world(tmp_path, engine) as w:
        code = await sign_in(w)
        wrong = await w.client.post(
            "/workos/swagger/token", data=token_form(w, code, verifier="not-the-verifier")
        )
        again = await w.client.post("/workos/swagger/token", data=token_form(w, code))
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert "code_verifier" in wrong.json()["error_description"]
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert code not in caplog.text
    assert "not-the-verifier" not in caplog.text
    assert "refused by WorkOS: 400 invalid_grant" in caplog.text


async def test_the_api_key_goes_as_client_secret(engine: Engine, tmp_path: Path) -> None:
    # A wrong API key proves it is sent: the dev server checks client_secret against its own.
    async with world(tmp_path, engine, api_key="sk_not_the_dev_key") as w:
        code = await sign_in(w)
        refused = await w.client.post("/workos/swagger/token", data=token_form(w, code))
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert "WORKOS_API_KEY" in refused.json()["error_description"]


async def test_malformed_token_requests_are_refused_before_workos(
    engine: Engine, tmp_path: Path
) -> None:
    async with world(tmp_path, engine) as w:
        form = token_form(w, "a-code")
        post = w.client.post
        as_json = await post("/workos/swagger/token", json=form)
        password = await post("/workos/swagger/token", data={**form, "grant_type": "password"})
        no_verifier = await post("/workos/swagger/token", data={**form, "code_verifier": ""})
        other_client = await post("/workos/swagger/token", data={**form, "client_id": "client_x"})
        too_large = await post(
            "/workos/swagger/token", data={**form, "redirect_uri": "x" * MAX_FORM_SIZE}
        )
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    assert (password.status_code, password.json()["error"]) == (400, "unsupported_grant_type")
    assert (no_verifier.status_code, no_verifier.json()["error"]) == (400, "invalid_request")
    assert "code_verifier" in no_verifier.json()["error_description"]
    assert (other_client.status_code, other_client.json()["error"]) == (401, "invalid_client")
    assert (too_large.status_code, too_large.json()["error"]) == (413, "invalid_request")


async def test_openapi_declares_the_oauth2_flow(engine: Engine, tmp_path: Path) -> None:
    async with world(tmp_path, engine) as w:
        schema = (await w.client.get("/openapi.json")).json()
        docs = await w.client.get("/docs")
    scheme = schema["components"]["securitySchemes"]["WorkOSAccessToken"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"] == {
        "authorizationCode": {
            "authorizationUrl": "http://dev/user_management/authorize?provider=authkit",
            "tokenUrl": "/workos/swagger/token",
            "scopes": {},
        }
    }
    assert schema["paths"]["/me"]["get"]["security"] == [{"WorkOSAccessToken": []}]
    token_route = schema["paths"]["/workos/swagger/token"]["post"]
    assert "application/x-www-form-urlencoded" in token_route["requestBody"]["content"]
    assert '"usePkceWithAuthorizationCodeGrant": true' in docs.text
    init = w.app.swagger_ui_init_oauth
    assert init is not None
    assert f'"clientId": "{init["clientId"]}"' in docs.text


async def test_dependencies_made_after_the_helper_declare_the_same_flow(engine: Engine) -> None:
    kit = AuthKit(client_id="client_x", prefix="/auth", engine=engine)
    before = kit.require_permissions("read")
    init = kit.swagger_ui_oauth(scopes=["openid"])
    after = kit.require_roles("admin")
    assert init == {
        "clientId": "client_x",
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": "openid",
    }
    for dependency in (kit.current_user, kit.optional_user, kit.claims, before, after):
        flows = dependency.model.model_dump(by_alias=True, exclude_none=True)["flows"]
        assert flows["authorizationCode"] == {
            "authorizationUrl": "https://api.workos.com/user_management/authorize?provider=authkit",
            "tokenUrl": "/auth/swagger/token",
            "scopes": {"openid": ""},
        }


async def test_the_route_and_the_flow_are_absent_unless_opted_in(engine: Engine) -> None:
    kit = AuthKit(client_id="client_x", webhook_secret="whsec_x", engine=engine)
    app = FastAPI()
    app.include_router(kit.router())

    @app.get("/me")
    async def me(user: Annotated[WorkOSUser, Depends(kit.current_user)]) -> str:
        return user.id

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        exchange = await client.post("/workos/swagger/token", data={"code": "x"})
        schema = (await client.get("/openapi.json")).json()
    assert exchange.status_code == 404
    assert "/workos/swagger/token" not in schema["paths"]
    scheme = schema["components"]["securitySchemes"]["WorkOSAccessToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def _workos_answering(answer: httpx.Response | Exception) -> httpx.MockTransport:
    """WorkOS's authenticate endpoint, misbehaving as ``answer`` says."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/user_management/authenticate"
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (httpx.ConnectError("refused"), 503, "temporarily_unavailable"),
        (httpx.Response(502, text="bad gateway"), 503, "temporarily_unavailable"),
        (httpx.Response(200, json={"user": {}}), 502, "server_error"),
        (httpx.Response(200, text="not json"), 502, "server_error"),
        (httpx.Response(400, json={"message": "no oauth error field"}), 400, "invalid_grant"),
        (httpx.Response(401, json={"error": "invalid_client"}), 401, "invalid_client"),
    ],
)
async def test_workos_failures_become_oauth2_errors(
    answer: httpx.Response | Exception, status: int, error: str
) -> None:
    kit = AuthKit(client_id="client_x", http_transport=_workos_answering(answer))
    app = FastAPI()
    app.include_router(kit.router(webhooks=False, swagger=True))
    form = {"grant_type": "authorization_code", "code": "c", "code_verifier": "v"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.post("/workos/swagger/token", data=form)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"
    if status == 503:
        assert response.headers["retry-after"] == "5"


def test_the_route_needs_the_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKOS_CLIENT_ID", raising=False)
    kit = AuthKit()
    with pytest.raises(ConfigurationError, match="WORKOS_CLIENT_ID"):
        kit.router(webhooks=False, swagger=True)
    with pytest.raises(ConfigurationError, match="WORKOS_CLIENT_ID"):
        kit.swagger_ui_oauth()
