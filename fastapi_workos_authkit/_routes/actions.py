"""WorkOS Actions: typed requests, allow/deny verdicts, the signed reply and the route.

WorkOS calls the Actions endpoint synchronously during a sign-up or a sign-in and waits for a
signed verdict. Anything other than a verified 200 makes WorkOS apply the endpoint's configured
fallback (deny by default), so every failure here answers a non-2xx status rather than guessing a
verdict on the app's behalf.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from .._config import Clock, UnhandledActionPolicy
from .._exceptions import InvalidEventError
from .._exceptions import SessionOnLoopError as SessionOnLoopError
from .action_models import _CONTEXT_SUFFIX
from .action_models import ACTION_TYPES as ACTION_TYPES
from .action_models import Action as Action
from .action_models import ActionHandler as ActionHandler
from .action_models import ActionResponse as ActionResponse
from .action_models import ActionResponsePayload as ActionResponsePayload
from .action_models import ActionType as ActionType
from .action_models import ActionVerdict as ActionVerdict
from .action_models import AuthenticationAction as AuthenticationAction
from .action_models import Invitation as Invitation
from .action_models import SignedActionResponse as SignedActionResponse
from .action_models import UserData as UserData
from .action_models import UserRegistrationAction as UserRegistrationAction
from .action_models import compact_json as compact_json
from .action_models import parse_action as parse_action
from .action_models import sign_action_response as sign_action_response
from .action_runner import _HandlerFailed, _Saturated, _TimedOut
from .action_runner import run_handler as run_handler
from .action_session import ActionSession as ActionSession
from .action_threads import MAX_SYNC_ACTION_HANDLERS as MAX_SYNC_ACTION_HANDLERS
from .action_threads import SyncHandlerSlots as SyncHandlerSlots
from .signed_requests import (
    JSON_BODY_DOC,
    SIGNATURE_HEADER_DOC,
    SIGNED_REQUEST_ERRORS,
    read_signed_json,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger("fastapi_workos_authkit")


class ActionRegistry:
    """At most one handler per action type: two verdicts for one request cannot be combined."""

    def __init__(self) -> None:
        self._handlers: dict[str, ActionHandler] = {}

    def add(self, action_type: str, handler: ActionHandler) -> None:
        """Register ``handler`` for ``action_type``; a second handler for a type is an error."""
        if action_type not in ACTION_TYPES:
            raise ValueError(
                f"Unknown action type {action_type!r}: use 'user_registration' or 'authentication'"
            )
        if not callable(handler):
            raise TypeError(f"The handler for {action_type!r} actions must be callable")
        if action_type in self._handlers:
            raise ValueError(f"A handler for {action_type!r} actions is already registered")
        self._handlers[action_type] = handler

    def get(self, action_type: str) -> ActionHandler | None:
        """The handler for ``action_type``, if any."""
        return self._handlers.get(action_type)

    def __bool__(self) -> bool:
        return bool(self._handlers)


# --- The route -----------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "The body verified but is not a valid Action request."},
    **SIGNED_REQUEST_ERRORS,
    500: {"description": "The handler raised or returned no verdict; WorkOS applies its fallback."},
    503: {
        "description": (
            "The database is unavailable, or every sync handler slot is taken "
            "(max_sync_action_handlers); WorkOS applies its fallback."
        )
    },
    504: {"description": "The handler ran past action_timeout; WorkOS applies its fallback."},
}


def add_action_route(
    router: APIRouter,
    *,
    secret: str | Callable[[], str],
    tolerance: float,
    max_body_size: int,
    clock: Clock,
    engine: Callable[[], Engine],
    handlers: ActionRegistry,
    slots: SyncHandlerSlots,
    timeout: float,
    unhandled: UnhandledActionPolicy,
) -> None:
    """Mount ``POST /action`` on ``router``.

    Args:
        secret: The Actions signing secret: verifies requests and signs the replies. A callable
            is asked on every request (`AuthKit.override` swaps the secret of a mounted app).
        tolerance: Accepted clock skew of a request's signature, in seconds.
        max_body_size: Largest accepted body, in bytes.
        clock: Returns Unix seconds (signature checks and reply timestamps).
        engine: Returns the engine the handlers' sessions use (it may be created lazily).
        handlers: The registered Action handlers, looked up per request.
        slots: Bounds the sync handler threads, abandoned ones included.
        timeout: Time budget of a handler, in seconds.
        unhandled: The verdict for an action type without a handler.
    """

    @router.post(
        "/action",
        response_class=Response,
        responses={
            200: {
                "model": SignedActionResponse,
                "description": "The signed verdict.",
            },
            **_ERRORS,
        },
        summary="Decide a WorkOS Action (sign-up or sign-in)",
        description=(
            "Verifies the `WorkOS-Signature` header over the raw body with the action secret, "
            "calls the app's handler for the action type, and answers its verdict signed with "
            "the same secret. Any non-2xx answer makes WorkOS apply the endpoint's fallback."
        ),
        openapi_extra={"parameters": [SIGNATURE_HEADER_DOC], "requestBody": JSON_BODY_DOC},
    )
    async def decide_action(request: Request) -> Response:
        started = time.perf_counter()
        key = secret() if callable(secret) else secret
        payload = await read_signed_json(
            request,
            secret=key,
            tolerance=tolerance,
            max_body_size=max_body_size,
            clock=clock,
            route="action",
        )
        unknown = _unknown_action_type(payload)
        if unknown is not None:
            # A type WorkOS added after this release: no model, so no handler; apply the policy.
            return _unhandled(clock, key, unhandled, payload, unknown, started)
        try:
            action = parse_action(payload)
        except InvalidEventError as exc:
            # The message names fields, never their values, so it is safe to log.
            logger.warning("action refused: %s", exc)
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None

        handler = handlers.get(action.action_type)
        if handler is None:
            return _unhandled(clock, key, unhandled, payload, action.action_type, started)
        try:
            verdict = await run_handler(handler, engine(), action, timeout, slots)
        except _Saturated:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Too many action handlers are still running; nothing was run",
                headers={"Retry-After": "5"},
            ) from None
        except _TimedOut:
            raise HTTPException(
                status.HTTP_504_GATEWAY_TIMEOUT,
                "The action handler ran past its time budget; nothing was committed",
            ) from None
        except _HandlerFailed as exc:
            if exc.unavailable:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "The database is unavailable"
                ) from None
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                "The action handler failed; nothing was committed",
            ) from None
        if verdict.action_type != action.action_type:
            # A verdict built for the other action type would be signed under the wrong object.
            verdict = ActionVerdict(action.action_type, verdict.verdict, verdict.error_message)
        return _answer(clock, key, action.id, verdict, started)


def _unknown_action_type(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    kind = payload.get("object")
    if not isinstance(kind, str) or not kind.endswith(_CONTEXT_SUFFIX):
        return None
    name = kind.removesuffix(_CONTEXT_SUFFIX)
    if name in ACTION_TYPES or not name.replace("_", "").isalpha() or len(name) > 64:
        return None
    return name


def _unhandled(
    clock: Clock,
    secret: str,
    policy: UnhandledActionPolicy,
    payload: dict[str, Any],
    action_type: str,
    started: float,
) -> Response:
    action_id = payload.get("id") if isinstance(payload.get("id"), str) else "<no id>"
    logger.warning(
        "action %s (%s): no handler is registered for this action type; answering %s "
        "(unhandled_action=%r)",
        action_id,
        action_type,
        policy,
        policy,
    )
    verdict = ActionVerdict(action_type, "Allow" if policy == "allow" else "Deny")
    return _answer(clock, secret, str(action_id), verdict, started)


def _answer(
    clock: Clock, secret: str, action_id: str, verdict: ActionVerdict, started: float
) -> Response:
    timestamp_ms = int(clock() * 1000)
    body = sign_action_response(verdict, secret, timestamp_ms=timestamp_ms)
    logger.info(
        "action %s (%s): %s in %.1f ms",
        action_id,
        verdict.action_type,
        verdict.verdict,
        (time.perf_counter() - started) * 1000,
    )
    return Response(content=body, media_type="application/json")
