"""Swagger UI sign-in: the Authorize button of ``/docs`` signs in through AuthKit.

Swagger UI runs the OAuth2 authorization-code flow with PKCE in the browser: it opens WorkOS's
``/user_management/authorize`` (which sends the person to the hosted AuthKit page and back to
``/docs/oauth2-redirect`` with a code), then posts the code to its *token URL* as an HTML form.
WorkOS's ``POST /user_management/authenticate`` takes JSON, and a confidential client must add
its API key as ``client_secret``, which must never reach a browser. So the token URL is a small
route of ours (`add_swagger_token_route`): it reads the form, calls WorkOS with JSON from the
server, and answers the OAuth2 token response Swagger expects.

The code, the verifier and the tokens are never logged; WorkOS's refusals are logged by their
OAuth2 error code only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.models import OAuth2, OAuthFlowAuthorizationCode, OAuthFlows
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .body import read_limited_body

logger = logging.getLogger("fastapi_workos_authkit")

TOKEN_PATH = "/swagger/token"  # noqa: S105 - a path, not a password
"""Where the token-exchange route lives under the router's prefix."""

MAX_FORM_SIZE = 16 * 1024
"""The largest token request accepted, in bytes: a code, a verifier and a redirect URI fit
in a few hundred."""

EXCHANGE_TIMEOUT_SECONDS = 10.0
"""How long the exchange waits for WorkOS. It is not retried: a code is used once."""

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1
# WorkOS's OAuth2 refusals passed on as they are; anything else becomes invalid_grant.
_PASSED_ON = frozenset(
    {"invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type"}
)


class SwaggerTokenResponse(BaseModel):
    """The OAuth2 token response (RFC 6749 §5.1) Swagger UI reads after signing in."""

    access_token: str = Field(description="The AuthKit access token (a JWT) to send as Bearer.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - RFC 6749's token type
    refresh_token: str | None = Field(
        default=None, description="WorkOS's refresh token (Swagger UI does not use it)."
    )


class OAuthError(BaseModel):
    """An OAuth2 error response (RFC 6749 §5.2)."""

    error: str = Field(description="`invalid_request`, `invalid_client`, `invalid_grant`...")
    error_description: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthError,
        "description": "`invalid_request` (not a form, or a field missing), "
        "`unsupported_grant_type`, or `invalid_grant`: WorkOS refused the code (unknown, used, "
        "expired, or the PKCE verifier does not match).",
    },
    401: {
        "model": OAuthError,
        "description": "`invalid_client`: another client id, or WorkOS refused this app's "
        "client id or API key.",
    },
    413: {"description": f"The form is larger than {MAX_FORM_SIZE} bytes."},
    502: {"model": OAuthError, "description": "WorkOS answered without an access token."},
    503: {
        "model": OAuthError,
        "description": "WorkOS could not be reached or answered 5xx; try again.",
    },
}


def authorization_url(api_base_url: str) -> str:
    """WorkOS's authorize endpoint with ``provider=authkit``.

    Swagger UI appends its own parameters with ``&`` (the URL already has a query):
    ``response_type=code``, ``client_id``, ``redirect_uri``, ``state``, ``code_challenge`` and
    ``code_challenge_method=S256``.
    """
    return f"{api_base_url.rstrip('/')}/user_management/authorize?provider=authkit"


def oauth2_scheme(*, authorization_url: str, token_url: str, scopes: Sequence[str] = ()) -> OAuth2:
    """The OpenAPI security scheme of the dependencies once Swagger sign-in is on."""
    return OAuth2(
        description=(
            "Sign in with AuthKit (authorization code with PKCE); or send an AuthKit access "
            "token yourself: `Authorization: Bearer <token>`."
        ),
        flows=OAuthFlows(
            authorizationCode=OAuthFlowAuthorizationCode(
                authorizationUrl=authorization_url,
                tokenUrl=token_url,
                scopes=dict.fromkeys(scopes, ""),
            )
        ),
    )


def _error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**_NO_STORE, **headers},
    )


def add_swagger_token_route(
    router: APIRouter,
    *,
    client_id: Callable[[], str],
    api_key: Callable[[], str | None],
    api_base_url: Callable[[], str],
    transport: Callable[[], httpx.AsyncBaseTransport | None],
) -> None:
    """Mount ``POST /swagger/token`` on ``router``: Swagger UI's form in, WorkOS's JSON out.

    Args:
        client_id: The app's WorkOS client id; a form naming another one is refused.
        api_key: The API key, sent as ``client_secret`` when set (a confidential client).
        api_base_url: Where WorkOS's REST API lives (the dev server's URL locally).
        transport: The httpx transport of the calls to WorkOS (a test's fake), or ``None``.

    Each is asked on every request, so that `AuthKit.override` re-points a mounted app.
    """

    @router.post(
        TOKEN_PATH,
        response_model=SwaggerTokenResponse,
        responses=_ERRORS,
        summary="Exchange a Swagger UI sign-in code for an access token",
        description=(
            "The token URL of the `/docs` Authorize button. Takes the OAuth2 token request "
            "Swagger UI posts as a form (`grant_type=authorization_code`, `code`, "
            "`code_verifier`, `client_id`, `redirect_uri`), exchanges the code at WorkOS's "
            "`POST /user_management/authenticate` (adding the API key as `client_secret` "
            "when one is configured), and answers the access token."
        ),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                name: {"type": "string"}
                                for name in (
                                    "grant_type",
                                    "code",
                                    "code_verifier",
                                    "client_id",
                                    "redirect_uri",
                                )
                            },
                            "required": ["grant_type", "code", "code_verifier"],
                        }
                    }
                },
            }
        },
    )
    async def exchange_swagger_code(request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _error(
                400,
                "invalid_request",
                "Post the token request as an application/x-www-form-urlencoded form",
            )
        try:
            raw = await read_limited_body(request, MAX_FORM_SIZE)
            form = dict(parse_qsl(raw.decode("ascii"), keep_blank_values=True))
        except HTTPException as exc:
            return _error(exc.status_code, "invalid_request", str(exc.detail))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "invalid_request", "The form is not valid URL-encoded ASCII")
        if form.get("grant_type") != "authorization_code":
            return _error(400, "unsupported_grant_type", "grant_type must be authorization_code")
        missing = [name for name in ("code", "code_verifier") if not form.get(name)]
        if missing:
            return _error(
                400,
                "invalid_request",
                f"Missing {' and '.join(missing)}: enable PKCE in Swagger UI "
                "(swagger_ui_init_oauth=authkit.swagger_ui_oauth())",
            )
        ours = client_id()
        if form.get("client_id", ours) != ours:
            return _error(
                401,
                "invalid_client",
                "client_id is not this app's WorkOS client id: use "
                "swagger_ui_init_oauth=authkit.swagger_ui_oauth()",
            )
        body = {
            "grant_type": "authorization_code",
            "client_id": ours,
            "code": form["code"],
            "code_verifier": form["code_verifier"],
        }
        secret = api_key()
        if secret is not None:
            body["client_secret"] = secret
        return await _authenticate(api_base_url(), transport(), body)


async def _authenticate(
    base_url: str, transport: httpx.AsyncBaseTransport | None, body: dict[str, str]
) -> JSONResponse:
    path = "/user_management/authenticate"
    try:
        async with httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=EXCHANGE_TIMEOUT_SECONDS,
            headers={"User-Agent": "fastapi-workos-authkit"},
        ) as http:
            response = await http.post(path, json=body)
    except httpx.HTTPError as exc:
        logger.warning("Swagger sign-in: WorkOS could not be reached (%s)", type(exc).__name__)
        return _error(
            503,
            "temporarily_unavailable",
            "WorkOS could not be reached; try signing in again",
            **{"Retry-After": "5"},
        )
    answer = _json_object(response)
    if 400 <= response.status_code < 500:
        error = answer.get("error") if answer else None
        code = error if isinstance(error, str) and error in _PASSED_ON else "invalid_grant"
        logger.warning("Swagger sign-in refused by WorkOS: %s %s", response.status_code, code)
        if code == "invalid_client" or response.status_code in (401, 403):
            return _error(
                401,
                "invalid_client",
                "WorkOS refused this app's client credentials: check WORKOS_CLIENT_ID and "
                "WORKOS_API_KEY",
            )
        described = answer.get("error_description") if answer else None
        return _error(
            400,
            code,
            described
            if isinstance(described, str) and described
            else "WorkOS refused the code: it is unknown, used or expired, or the PKCE "
            "verifier does not match; sign in again",
        )
    if response.status_code >= 500:
        logger.warning("Swagger sign-in: WorkOS answered %s", response.status_code)
        return _error(
            503,
            "temporarily_unavailable",
            f"WorkOS answered {response.status_code}; try signing in again",
            **{"Retry-After": "5"},
        )
    token = answer.get("access_token") if answer else None
    if response.status_code != 200 or not isinstance(token, str) or not token:
        logger.error(
            "Swagger sign-in: WorkOS answered %s without an access token", response.status_code
        )
        return _error(
            502, "server_error", "WorkOS answered the code exchange without an access token"
        )
    refresh = answer.get("refresh_token") if answer else None
    result = SwaggerTokenResponse(
        access_token=token, refresh_token=refresh if isinstance(refresh, str) else None
    )
    return JSONResponse(result.model_dump(exclude_none=True), headers=_NO_STORE)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        decoded = response.json()
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None
