"""The webhook route: bounded read, verify, parse, hand to the pipeline, answer.

Decisions live in `signatures` and `pipeline`; this module only maps their outcomes to HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from .._config import Clock
from .._exceptions import DatabaseUnavailableError, EventFailedError, InvalidEventError
from .._sync.events import MAX_EMAIL_LENGTH, MAX_EVENT_ID_LENGTH, MAX_EVENT_TYPE_LENGTH, parse_event
from .._sync.pipeline import EventPipeline
from .._sync.untrusted_json import MAX_JSON_DEPTH
from .signed_requests import (
    JSON_BODY_DOC,
    SIGNATURE_HEADER_DOC,
    SIGNED_REQUEST_ERRORS,
    read_signed_json,
)

logger = logging.getLogger("fastapi_workos_authkit")


class WebhookAck(BaseModel):
    """The answer to an accepted delivery; WorkOS shows it in the dashboard's delivery log."""

    status: Literal["applied", "unchanged", "stale", "tombstoned", "duplicate"] = Field(
        description="What the delivery did: `applied` (it changed its mirrored table and ran "
        "the handlers of that change, or its type is not mirrored and its own handlers ran), "
        "`unchanged` (the row already held this version), `stale` (the row is newer, or the "
        "session already ended), `tombstoned` (the object was deleted), `duplicate` (this "
        "event id was already processed). Only `applied` runs handlers."
    )
    event_id: str


_ERRORS: dict[int | str, dict[str, str]] = {
    400: {
        "description": "The body verified but is not a valid WorkOS event: not JSON, nested "
        f"deeper than {MAX_JSON_DEPTH} levels, a non-finite number, a value longer than its "
        f"column (an id over {MAX_EVENT_ID_LENGTH} characters, a type over "
        f"{MAX_EVENT_TYPE_LENGTH}, an email over {MAX_EMAIL_LENGTH}), or a client that "
        "disconnected mid-body."
    },
    **SIGNED_REQUEST_ERRORS,
    500: {
        "description": "An app handler raised (or the event could not be stored); nothing was "
        "committed, the failure is in the ledger (the reply says so if recording it failed "
        "too), and WorkOS will retry."
    },
    503: {"description": "The database is unavailable; WorkOS will retry."},
}


def add_webhook_route(
    router: APIRouter,
    *,
    secret: str | Callable[[], str],
    tolerance: float,
    max_body_size: int,
    clock: Clock,
    pipeline: EventPipeline,
) -> None:
    """Mount ``POST /webhook`` on ``router``.

    Args:
        secret: The webhook signing secret; a callable is asked on every delivery
            (`AuthKit.override` swaps the secret of a mounted app).
        tolerance: Accepted clock skew of a delivery's signature, in seconds.
        max_body_size: Largest accepted body, in bytes.
        clock: Returns Unix seconds, for the signature's timestamp check.
        pipeline: Where a verified event goes.
    """

    @router.post(
        "/webhook",
        response_model=WebhookAck,
        responses=_ERRORS,
        summary="Receive a signed WorkOS webhook event",
        description=(
            "Verifies the `WorkOS-Signature` header over the raw body, then records the event and "
            "applies it to the synced tables and the app's handlers in one transaction. "
            "Duplicates are acknowledged without effect."
        ),
        openapi_extra={"parameters": [SIGNATURE_HEADER_DOC], "requestBody": JSON_BODY_DOC},
    )
    async def receive_webhook(request: Request) -> WebhookAck:
        payload = await read_signed_json(
            request,
            secret=secret() if callable(secret) else secret,
            tolerance=tolerance,
            max_body_size=max_body_size,
            clock=clock,
            route="webhook",
        )
        try:
            event = parse_event(payload)
        except InvalidEventError as exc:
            # The message names fields, never their values, so it is safe to log.
            logger.warning("webhook refused: %s", exc)
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        try:
            result = await pipeline.threads.run_sync(
                lambda: pipeline.process(event, payload, source="webhook")
            )
        except EventFailedError as exc:
            # Only claim the ledger has the failure when writing it really succeeded.
            where = (
                "the failure is in the ledger"
                if exc.recorded
                else "recording the failure in the ledger failed too"
            )
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                f"{exc}; nothing was committed, {where}, and the delivery can be retried",
            ) from None
        except DatabaseUnavailableError:
            logger.error("webhook %s refused: the database is unavailable", event.id)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "The database is unavailable; retry later",
                headers={"Retry-After": "30"},
            ) from None
        return WebhookAck(status=result.acknowledgement.value, event_id=event.id)
