"""Document the 401, 403 and 503 answers of routes that use an `AuthKit` dependency.

FastAPI lets a dependency declare a security scheme but no responses, so a route using
``authkit.current_user`` would list only its 200. Every `AuthKit` dependency *is* the
``WorkOSAccessToken`` security scheme, so FastAPI marks each operation that uses one (in the
route, in ``dependencies=[...]``, in a router's dependencies or nested in the app's own
dependencies) with that requirement; `add_auth_responses` adds the answers to exactly those
operations, keeping any answer a route documents itself. Reading the generated schema, rather
than FastAPI's route internals (which changed shape across versions), keeps this working on
every supported FastAPI. `AuthKit.lifespan` calls it on start-up;
call it yourself (``authkit.document_responses(app)``) when you export the schema without
running the lifespan.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from .._auth.dependencies import SCHEME_NAME

__all__ = ["AUTH_RESPONSES", "add_auth_responses", "document_auth_responses"]

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}


def _answer(description: str, *, header: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }
    if header is not None:
        response["headers"] = {
            header: {"description": header_doc(header), "schema": {"type": "string"}}
        }
    return response


def header_doc(header: str) -> str:
    """What the headers of these answers carry."""
    if header == "WWW-Authenticate":
        return 'RFC 6750: `Bearer error="invalid_token"` (or `insufficient_scope`) and why.'
    return "Seconds to wait before retrying."


AUTH_RESPONSES: dict[int, dict[str, Any]] = {
    401: _answer(
        "No access token, or one that does not verify: expired, not yet valid, signed by a key "
        "WorkOS did not publish, issued for another client id or issuer, or for a user that is "
        "deleted or unknown to WorkOS.",
        header="WWW-Authenticate",
    ),
    403: _answer(
        "Only from a route that requires a permission, role or organization "
        "(`require_permissions`, `require_roles`, `require_organization`): the token is valid "
        "but lacks it (`insufficient_scope`).",
        header="WWW-Authenticate",
    ),
    503: _answer(
        "The token could not be checked or its user loaded now: WorkOS's signing keys (JWKS) "
        "or its API could not be reached, or the database is unavailable. Retry later.",
        header="Retry-After",
    ),
}
"""The answers `document_auth_responses` adds, by status code."""

_MARK = "_fastapi_workos_authkit_documented"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def add_auth_responses(schema: dict[str, Any]) -> int:
    """Add `AUTH_RESPONSES` to every operation of an OpenAPI ``schema`` that requires the
    ``WorkOSAccessToken`` scheme; return how many operations gained one. Idempotent.

    FastAPI puts that requirement on every operation whose dependency tree holds an `AuthKit`
    dependency (route, router and nested dependencies alike), in every FastAPI version, so the
    schema itself says which routes to document.
    """
    changed = 0
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS or not isinstance(operation, dict):
                continue
            schemes = {name for entry in operation.get("security", []) for name in entry}
            if SCHEME_NAME not in schemes:
                continue
            answers = operation.setdefault("responses", {})
            added = False
            for code, answer in AUTH_RESPONSES.items():
                if str(code) not in answers:
                    answers[str(code)] = copy.deepcopy(answer)
                    added = True
            changed += added
    return changed


def document_auth_responses(app: FastAPI) -> bool:
    """Make ``app``'s OpenAPI schema list the 401, 403 and 503 answers of the routes that use
    `AuthKit` dependencies (see `add_auth_responses`).

    Wraps ``app.openapi`` (FastAPI's documented way to customise the schema), once; the
    schema is built again on the next request. Returns ``False`` if it was already wrapped.
    """
    if getattr(app.openapi, _MARK, False):
        return False
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        add_auth_responses(schema)
        return schema

    setattr(openapi, _MARK, True)
    app.openapi = openapi  # type: ignore[method-assign]
    app.openapi_schema = None
    return True
