"""Signed Action requests, as WorkOS sends them, and an independent check of the signed reply.

Use them to test your Action handlers end to end::

    body, headers = signed_action_request(user_registration_action(email="ana@acme.test"), secret)
    reply = await client.post("/workos/action", content=body, headers=headers)
    assert verify_action_response(reply.content, secret).payload.verdict == "Allow"
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from .._exceptions import SignatureError
from .._routes.actions import SignedActionResponse, compact_json
from .factories import at, iso, new_id, user
from .webhooks import signed_delivery

_SIGN_IN_DEFAULTS = {
    "ip_address": "198.51.100.7",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
}


def authentication_action(
    user_payload: dict[str, Any] | None = None,
    *,
    action_id: str | None = None,
    organization: dict[str, Any] | None = None,
    organization_membership: dict[str, Any] | None = None,
    ip_address: str | None = _SIGN_IN_DEFAULTS["ip_address"],
    user_agent: str | None = _SIGN_IN_DEFAULTS["user_agent"],
    device_fingerprint: str | None = None,
    issuer: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An ``authentication_action_context`` payload: ``user_payload`` (default a new user) signs in.

    Optional objects are left out unless given; ``extra`` fields are added as-is, to simulate
    fields WorkOS adds later.
    """
    payload: dict[str, Any] = {
        "object": "authentication_action_context",
        "id": action_id or new_id("action"),
        "user": user_payload or user(),
        "ip_address": ip_address,
        "user_agent": user_agent,
    }
    optional = {
        "organization": organization,
        "organization_membership": organization_membership,
        "device_fingerprint": device_fingerprint,
        "issuer": issuer,
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    payload.update(extra)
    return payload


def user_registration_action(
    email: str = "marcelina.davis@example.com",
    *,
    action_id: str | None = None,
    first_name: str | None = "Marcelina",
    last_name: str | None = "Davis",
    name: str | None = None,
    invitation: dict[str, Any] | None = None,
    ip_address: str | None = _SIGN_IN_DEFAULTS["ip_address"],
    user_agent: str | None = _SIGN_IN_DEFAULTS["user_agent"],
    device_fingerprint: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``user_registration_action_context`` payload: someone signs up as ``email``."""
    payload: dict[str, Any] = {
        "object": "user_registration_action_context",
        "id": action_id or new_id("action"),
        "user_data": {
            "object": "user_data",
            "email": email,
            "name": name,
            "first_name": first_name,
            "last_name": last_name,
        },
        "ip_address": ip_address,
        "user_agent": user_agent,
    }
    if invitation is not None:
        payload["invitation"] = invitation
    if device_fingerprint is not None:
        payload["device_fingerprint"] = device_fingerprint
    payload.update(extra)
    return payload


def invitation(
    email: str = "marcelina.davis@example.com",
    *,
    organization_id: str | None = None,
    invitation_id: str | None = None,
) -> dict[str, Any]:
    """A pending WorkOS invitation for ``email``, to pass to `user_registration_action`."""
    stamp = iso(at(0))
    return {
        "object": "invitation",
        "id": invitation_id or new_id("invitation"),
        "email": email,
        "state": "pending",
        "organization_id": organization_id,
        "inviter_user_id": None,
        "accepted_at": None,
        "revoked_at": None,
        "expires_at": None,
        "created_at": stamp,
        "updated_at": stamp,
    }


def signed_action_request(
    payload: dict[str, Any] | bytes, secret: str, *, timestamp_ms: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Return ``(body, headers)`` for an Action request signed with the action ``secret``.

    WorkOS signs Action requests exactly as it signs webhooks, only with a different secret.
    """
    return signed_delivery(payload, secret, timestamp_ms=timestamp_ms)


def verify_action_response(body: bytes, secret: str) -> SignedActionResponse:
    """Check a reply from the Actions endpoint as WorkOS would, and return it parsed.

    Recomputes the signature from the payload bytes actually sent, independently of the code
    that signed it. Raises `SignatureError` if the signature does not match, or if the body does
    not carry the payload in the compact form that was signed.
    """
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("payload"), dict):
        raise SignatureError("An Action reply must be a JSON object with a payload object")
    payload_json = compact_json(document["payload"]).encode("utf-8")
    if b'"payload":' + payload_json not in body:
        raise SignatureError("The reply does not carry its payload in compact JSON form")
    timestamp = document["payload"].get("timestamp")
    message = f"{timestamp}.".encode("ascii") + payload_json
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    signature = str(document.get("signature", ""))
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise SignatureError("The reply's signature does not match its payload")
    return SignedActionResponse.model_validate(document)
