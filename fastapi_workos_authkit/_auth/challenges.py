"""The RFC 6750 answers of the token dependencies: the bearer token read from the
``Authorization`` header, the 401/403/503 errors with their ``WWW-Authenticate`` challenges
(WebSocket close codes on WebSocket routes), and the OpenAPI ``responses`` describing them.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, WebSocketException, status
from fastapi.requests import HTTPConnection

_WS_POLICY_VIOLATION = 1008  # RFC 6455: the close code for "not allowed"
_WS_TRY_AGAIN_LATER = 1013


def bearer_token(connection: HTTPConnection) -> str | None:
    """The request's bearer token; ``None`` without one; refused if the header is broken."""
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme (Basic...) carries no bearer credentials
    token = token.strip()
    if not token or " " in token:
        raise _refuse(connection, "The Authorization header must be 'Bearer <token>'")
    return token


def _quote(value: str) -> str:
    # RFC 6750 attribute values are quoted strings; our messages never need a quote or backslash.
    return value.replace("\\", "").replace('"', "'")


def _challenge(error: str | None = None, description: str | None = None, scope: str = "") -> str:
    parts = []
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quote(description)}"')
    if scope:
        parts.append(f'scope="{_quote(scope)}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def _is_websocket(connection: HTTPConnection) -> bool:
    return connection.scope.get("type") == "websocket"


def _unauthenticated(connection: HTTPConnection) -> Exception:
    message = "Authentication required: send 'Authorization: Bearer <access token>'"
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, message)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": _challenge()}
    )


def _refuse(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        description,
        headers={"WWW-Authenticate": _challenge("invalid_token", description)},
    )


def _forbid(connection: HTTPConnection, description: str, scope: str = "") -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_POLICY_VIOLATION, description)
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        description,
        headers={"WWW-Authenticate": _challenge("insufficient_scope", description, scope)},
    )


def _unavailable(connection: HTTPConnection, description: str) -> Exception:
    if _is_websocket(connection):
        return WebSocketException(_WS_TRY_AGAIN_LATER, description)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, description, headers={"Retry-After": "5"}
    )


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }


_401 = _error(
    "No valid access token: missing, expired or badly signed, its user unknown or deleted, or "
    'its session revoked (`WWW-Authenticate: Bearer error="invalid_token"`).'
)
_403 = _error(
    "The token is valid but does not grant this (`WWW-Authenticate: Bearer "
    'error="insufficient_scope"`); `detail` says why.'
)
_503 = _error(
    "The database, WorkOS's keys or WorkOS's API could not be reached; retry after "
    "`Retry-After` seconds."
)
RESPONSES_401_503: dict[int | str, dict[str, Any]] = {401: _401, 503: _503}
"""OpenAPI ``responses`` of ``current_user`` (pass ``responses=`` to a route)."""
RESPONSES_401_403_503: dict[int | str, dict[str, Any]] = {401: _401, 403: _403, 503: _503}
"""OpenAPI ``responses`` of the dependencies that can answer 403 too."""
