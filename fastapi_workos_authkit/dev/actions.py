"""Calling the app's Action endpoint before the dev server registers or signs in a user.

As WorkOS does, the request is signed with the Action secret and the reply's signature is always
checked. The outcomes, decided here once:

* 200 with a reply that verifies: its verdict;
* 404: the app has no Action route, so it has no Actions: allow;
* unreachable (connection refused, timeout): allow, with a warning, so that users can be seeded
  before the app starts;
* any other status, or a reply whose signature or shape does not verify: the fallback
  (``--action-fallback``, deny by default, as WorkOS's default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .. import SignatureError
from ..testing import signed_action_request, verify_action_response

logger = logging.getLogger("fastapi_workos_authkit.dev")

Fallback = Literal["deny", "allow"]


@dataclass(frozen=True)
class ActionOutcome:
    """What the dev server does: ``allowed`` or not, the app's message, and why."""

    allowed: bool
    reason: str
    error_message: str | None = None


async def call_action(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    fallback: Fallback = "deny",
    wait: float = 10.0,
) -> ActionOutcome:
    """POST the signed Action ``payload`` to ``url`` and decide, as WorkOS would; ``wait``
    is how many seconds the app has to answer (WorkOS waits 10)."""
    body, headers = signed_action_request(payload, secret)
    kind = payload["object"]
    try:
        answer = await client.post(url, content=body, headers=headers, timeout=wait)
    except httpx.TransportError as exc:
        logger.warning(
            "the app's Action endpoint %s is unreachable (%s): allowing the %s; start the app "
            "to run its Actions",
            url,
            type(exc).__name__,
            kind,
        )
        return ActionOutcome(True, "unreachable")
    if answer.status_code == 404:
        return ActionOutcome(True, "no Action route (404)")
    if answer.status_code != 200:
        return _fallback(fallback, f"the Action endpoint answered {answer.status_code}")
    try:
        verdict = verify_action_response(answer.content, secret).payload
    except (SignatureError, ValueError) as exc:
        # ValueError covers bad JSON and pydantic's ValidationError.
        return _fallback(fallback, f"the Action reply does not verify ({type(exc).__name__})")
    if verdict.verdict == "Allow":
        return ActionOutcome(True, "Allow")
    return ActionOutcome(False, "Deny", verdict.error_message)


def _fallback(fallback: Fallback, reason: str) -> ActionOutcome:
    logger.warning("%s: applying the fallback, %s", reason, fallback)
    return ActionOutcome(fallback == "allow", f"{reason}; fallback {fallback}")
