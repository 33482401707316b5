"""The first half of both signed routes: a bounded read, the signature check, the JSON decode.

Webhooks and Actions differ only in their secret, their tolerance and what they do with the
payload; everything before that is here, so the two can never drift apart.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

from .._config import Clock
from .._exceptions import SignatureError
from .._sync.untrusted_json import UnsafeJSONError, decode_json
from .body import read_limited_body
from .signatures import SIGNATURE_HEADER, verify_signature

logger = logging.getLogger("fastapi_workos_authkit")

SIGNATURE_HEADER_DOC: dict[str, Any] = {
    "name": SIGNATURE_HEADER,
    "in": "header",
    "required": True,
    "description": "t=<unix ms>, v1=<hex HMAC-SHA256 of 't.body'>",
    "schema": {"type": "string"},
}
"""The header, for ``openapi_extra``. It is read from the request rather than declared as a
FastAPI ``Header`` parameter: the parameter machinery costs more per request than the checks."""

SIGNED_REQUEST_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Signature missing or invalid, or timestamp outside the tolerance."},
    413: {"description": "The body is larger than the configured limit."},
}
"""The answers `read_signed_json` gives, for a route's ``responses``."""

JSON_BODY_DOC: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}


async def read_signed_json(
    request: Request,
    *,
    secret: str,
    tolerance: float,
    max_body_size: int,
    clock: Clock,
    route: str,
) -> Any:
    """Return the decoded JSON of a request whose ``WorkOS-Signature`` verifies.

    Answers (raises `HTTPException`) 401 for a missing or bad signature or a stale timestamp,
    413 for a body over ``max_body_size`` (refused before it is all read), and 400 for a body
    that verifies but is not JSON, is JSON nested deeper than `MAX_JSON_DEPTH` or holds a
    non-finite number, or that the client stopped sending half-way. Lone surrogates and NUL
    characters in strings come back replaced with U+FFFD (see `untrusted_json`). ``route``
    names the route in the logs, which never include the body.
    """
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        logger.warning("%s refused: the WorkOS-Signature header is missing", route)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "WorkOS-Signature header is missing")
    try:
        body = await read_limited_body(request, max_body_size)
    except ClientDisconnect:
        # The sender hung up mid-body: a delivery that never arrived, not a server fault. The
        # answer goes nowhere; WorkOS retries a webhook that got no 2xx.
        logger.warning("%s refused: the client disconnected before sending the whole body", route)
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "The client disconnected before sending the whole body"
        ) from None
    try:
        verify_signature(body, header, secret, tolerance=tolerance, now=clock)
    except SignatureError as exc:
        logger.warning("%s refused: %s", route, exc)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    try:
        return decode_json(body)
    except UnsafeJSONError as exc:
        # The message gives the reason only, never the body.
        logger.warning("%s refused: %s", route, exc)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except ValueError:
        logger.warning("%s refused: the body is not valid JSON", route)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Body is not valid JSON") from None
