"""OpenAPI documents the 401, 403 and 503 answers of every route using an AuthKit dependency."""

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from fastapi_workos_authkit import AccessTokenClaims, AuthKit, WorkOSUser

pytestmark = pytest.mark.anyio


def _app(authkit: AuthKit) -> FastAPI:
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())
    CurrentUser = Annotated[WorkOSUser, Depends(authkit.current_user)]

    def membership(user: CurrentUser) -> str:  # the app's own dependency, on top of ours
        return user.id

    @app.get("/me")
    def me(user: CurrentUser) -> WorkOSUser:
        return user

    @app.get("/maybe")
    def maybe(user: Annotated[WorkOSUser | None, Depends(authkit.optional_user)]) -> str:
        return "hi"

    @app.get("/claims")
    def claims(claims: Annotated[AccessTokenClaims, Depends(authkit.claims)]) -> str:
        return claims.sub

    @app.post("/admin", dependencies=[Depends(authkit.require_permissions("admin:write"))])
    def admin() -> str:
        return "ok"

    @app.get("/nested")
    def nested(member: Annotated[str, Depends(membership)]) -> str:
        return member

    @app.get("/own-401", responses={401: {"description": "Our own words"}})
    def own(user: CurrentUser) -> str:
        return user.id

    @app.get("/public")
    def public() -> str:
        return "hello"

    org = APIRouter(dependencies=[Depends(authkit.require_organization())])

    @org.get("/org/report")
    def report() -> str:
        return "report"

    app.include_router(org)
    return app


def _answers(schema: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    answers: dict[str, Any] = schema["paths"][path][method]["responses"]
    return answers


async def test_the_served_schema_lists_the_auth_answers_of_each_route(authkit: AuthKit) -> None:
    app = _app(authkit)
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        schema = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/me", "get"),
        ("/maybe", "get"),
        ("/claims", "get"),
        ("/admin", "post"),
        ("/nested", "get"),
        ("/org/report", "get"),
    ):
        assert set(_answers(schema, path, method)) >= {"200", "401", "403", "503"}, path
    assert set(_answers(schema, "/public")) == {"200"}
    assert "require_permissions" in _answers(schema, "/me")["403"]["description"]
    assert _answers(schema, "/own-401")["401"]["description"] == "Our own words"
    me_401 = _answers(schema, "/me")["401"]
    assert "another client id" in me_401["description"]
    assert "WWW-Authenticate" in me_401["headers"]
    assert "Retry-After" in _answers(schema, "/me")["503"]["headers"]
    # The webhook route keeps its own answers (no AuthKit dependency there).
    assert "403" not in _answers(schema, "/workos/webhook", "post")


def test_document_responses_works_without_the_lifespan_and_is_idempotent(
    authkit: AuthKit,
) -> None:
    app = _app(authkit)
    assert "401" not in _answers(app.openapi(), "/me")  # what FastAPI alone documents
    assert authkit.document_responses(app) is True
    assert authkit.document_responses(app) is False  # wrapped once
    schema = app.openapi()
    assert set(_answers(schema, "/me")) >= {"200", "401", "403", "503"}
    assert app.openapi() == schema
    assert set(_answers(app.openapi(), "/public")) == {"200"}
