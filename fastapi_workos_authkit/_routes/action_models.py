"""What an Action says and what it answers: the typed requests WorkOS sends
(`AuthenticationAction`, `UserRegistrationAction`), the allow/deny `ActionVerdict` a handler
returns through `ActionResponse`, and the signed reply (`compact_json`, `sign_action_response`,
`SignedActionResponse`) WorkOS verifies before it trusts the verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlmodel import Session

from .._exceptions import InvalidEventError
from .._sync.events import Organization, OrganizationMembership, User, UTCTimestamp, WorkOSModel
from .signatures import compute_signature

ActionType = Literal["authentication", "user_registration"]
"""The action types an app can handle: ``@authkit.action("user_registration")``."""

ACTION_TYPES: tuple[str, ...] = get_args(ActionType)

# --- Request models -------------------------------------------------------------------------


class UserData(WorkOSModel):
    """What a person typed when signing up: there is no WorkOS user yet."""

    object: str = "user_data"
    email: str
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Invitation(WorkOSModel):
    """The invitation a sign-up is accepting, when there is one."""

    object: str = "invitation"
    id: str
    email: str | None = None
    state: str | None = None
    organization_id: str | None = None
    inviter_user_id: str | None = None
    accepted_at: UTCTimestamp | None = None
    revoked_at: UTCTimestamp | None = None
    expires_at: UTCTimestamp | None = None
    created_at: UTCTimestamp | None = None
    updated_at: UTCTimestamp | None = None


class AuthenticationAction(WorkOSModel):
    """An ``authentication_action_context``: a known user is signing in.

    ``organization`` and ``organization_membership`` are set when the sign-in is for an
    organization. Unknown fields are kept (``model_extra``), as WorkOS adds fields over time.
    """

    object: Literal["authentication_action_context"]
    id: str
    user: User
    organization: Organization | None = None
    organization_membership: OrganizationMembership | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    device_fingerprint: str | None = None
    issuer: str | None = None

    @property
    def action_type(self) -> ActionType:
        """``"authentication"``: the name handlers are registered under."""
        return "authentication"


class UserRegistrationAction(WorkOSModel):
    """A ``user_registration_action_context``: someone is signing up.

    ``user_data`` holds what they entered; ``invitation`` is set when they accept one.
    """

    object: Literal["user_registration_action_context"]
    id: str
    user_data: UserData
    invitation: Invitation | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    device_fingerprint: str | None = None

    @property
    def action_type(self) -> ActionType:
        """``"user_registration"``: the name handlers are registered under."""
        return "user_registration"


Action: TypeAlias = AuthenticationAction | UserRegistrationAction
"""Any Action request this package understands."""

_ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Annotated[Action, Field(discriminator="object")])

_CONTEXT_SUFFIX = "_action_context"


def parse_action(payload: Any) -> Action:
    """Validate decoded JSON into a typed Action; raise `InvalidEventError` if it is not one."""
    if not isinstance(payload, dict):
        raise InvalidEventError("An Action request must be a JSON object")
    try:
        return _ACTION_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        # Name the fields, never echo their values: they hold personal data.
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise InvalidEventError("Invalid Action request: " + "; ".join(problems[:5])) from None


# --- Verdicts and the signed reply -------------------------------------------------------------


@dataclass(frozen=True)
class ActionVerdict:
    """A decision built by `ActionResponse.allow` or `ActionResponse.deny`.

    Attributes:
        action_type: Which action this answers (decides the reply's ``object``).
        verdict: ``"Allow"`` or ``"Deny"``, spelled as WorkOS expects.
        error_message: Shown to the person on a deny; ``None`` sends no message.
    """

    action_type: str
    verdict: Literal["Allow", "Deny"]
    error_message: str | None = None

    @property
    def allowed(self) -> bool:
        """Whether this verdict lets the sign-up or sign-in go ahead."""
        return self.verdict == "Allow"

    @property
    def response_object(self) -> str:
        """The reply's ``object``: ``authentication_action_response`` and so on."""
        return f"{self.action_type}_action_response"

    def payload(self, timestamp_ms: int) -> dict[str, Any]:
        """The payload to sign, keys in WorkOS's order; ``error_message`` only on a deny."""
        payload: dict[str, Any] = {"timestamp": timestamp_ms, "verdict": self.verdict}
        if self.verdict == "Deny" and self.error_message is not None:
            payload["error_message"] = self.error_message
        return payload


class ActionResponse:
    """Builds verdicts for one action; handlers receive it as their third argument.

    ``return response.allow()`` or ``return response.deny("Please use your work email")``.
    """

    __slots__ = ("action_type",)

    def __init__(self, action_type: ActionType) -> None:
        if action_type not in ACTION_TYPES:
            raise ValueError(f"Unknown action type {action_type!r}: use one of {ACTION_TYPES}")
        self.action_type: ActionType = action_type

    def allow(self) -> ActionVerdict:
        """Let the sign-up or sign-in go ahead."""
        return ActionVerdict(self.action_type, "Allow")

    def deny(self, message: str | None = None) -> ActionVerdict:
        """Refuse it; ``message`` is shown to the person (keep it short and helpful)."""
        if message is not None and not isinstance(message, str):
            raise TypeError("deny() takes the message to show as a string")
        return ActionVerdict(self.action_type, "Deny", message)

    def __repr__(self) -> str:
        return f"ActionResponse({self.action_type!r})"


def compact_json(value: Any) -> str:
    """JSON as JavaScript's ``JSON.stringify`` writes it: no spaces, non-ASCII characters raw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sign_action_response(verdict: ActionVerdict, secret: str, *, timestamp_ms: int) -> bytes:
    """Return the body of the signed reply to WorkOS for ``verdict`` (HTTP 200, JSON).

    The signature covers ``f"{timestamp}.{compact_json(payload)}"``, and the body carries the
    payload serialised the same way, so a verifier can recompute it from the bytes sent.
    """
    payload_json = compact_json(verdict.payload(timestamp_ms))
    signature = compute_signature(timestamp_ms, payload_json.encode("utf-8"), secret)
    # Assembled by hand so the payload bytes in the body are exactly the bytes that were signed.
    return (
        f'{{"object":{compact_json(verdict.response_object)},'
        f'"payload":{payload_json},"signature":"{signature}"}}'
    ).encode()


class ActionResponsePayload(BaseModel):
    """The signed part of the reply."""

    timestamp: int = Field(description="Unix time in milliseconds when the verdict was signed.")
    verdict: Literal["Allow", "Deny"]
    error_message: str | None = Field(
        default=None, description="Present only on a deny with a message."
    )


class SignedActionResponse(BaseModel):
    """The reply WorkOS verifies: the verdict, and its signature with the action secret."""

    object: Literal["authentication_action_response", "user_registration_action_response"]
    payload: ActionResponsePayload
    signature: str = Field(description="hex HMAC-SHA256 of '<timestamp>.<compact payload>'.")


# --- Handlers ------------------------------------------------------------------------------------

ActionHandler = Callable[[Session, Any, ActionResponse], Any]
"""``(session, action, response) -> ActionVerdict``, sync or async."""
