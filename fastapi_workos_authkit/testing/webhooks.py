"""Signed webhook deliveries, byte for byte as WorkOS sends them."""

from __future__ import annotations

import json
import time
from typing import Any

from .._routes.signatures import sign_header


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise a payload compactly, as WorkOS does (one line, no spaces)."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def signed_delivery(
    payload: dict[str, Any] | bytes,
    secret: str,
    *,
    timestamp_ms: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Return ``(body, headers)`` for a delivery of ``payload`` signed with ``secret``."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    headers = {
        "Content-Type": "application/json",
        "WorkOS-Signature": sign_header(body, secret, timestamp_ms=stamp),
    }
    return body, headers
