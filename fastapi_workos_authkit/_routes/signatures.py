"""The ``WorkOS-Signature`` scheme shared by webhooks and Actions (HMAC-SHA256, ms timestamps).

Header: ``t=<unix milliseconds>, v1=<hex HMAC-SHA256>``; the signed string is the ``t`` value as
sent, a ``.``, then the raw body bytes. Verification never parses JSON: a re-serialised body
(pretty-printed, reordered, escaped) must not verify.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from .._config import Clock
from .._exceptions import SignatureError

SIGNATURE_HEADER = "WorkOS-Signature"
_MAX_HEADER_LENGTH = 4096
# Real timestamps have 13 digits; a few more leave room, and the bound keeps int->float exact.
_MAX_TIMESTAMP_DIGITS = 15


@dataclass(frozen=True)
class ParsedSignature:
    """The parts of a ``WorkOS-Signature`` header that matter: the timestamp and the v1 MACs."""

    timestamp: str
    signatures: tuple[str, ...]


def parse_signature_header(header: str) -> ParsedSignature:
    """Parse a header leniently: any order, ``,`` or ``, ``, unknown parts ignored, many ``v1``."""
    if len(header) > _MAX_HEADER_LENGTH:
        raise SignatureError("WorkOS-Signature header is too long")
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value.strip()
        elif key == "v1":
            signatures.append(value.strip())
    if (
        not timestamp
        or not timestamp.isascii()
        or not timestamp.isdigit()
        or len(timestamp) > _MAX_TIMESTAMP_DIGITS
    ):
        raise SignatureError("WorkOS-Signature header has no valid t= timestamp")
    if not signatures:
        raise SignatureError("WorkOS-Signature header has no v1= signature")
    return ParsedSignature(timestamp=timestamp, signatures=tuple(signatures))


def compute_signature(timestamp: str | int, body: bytes, secret: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``f"{timestamp}." + body`` keyed by ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: float,
    now: Clock = time.time,
) -> int:
    """Check ``header`` against the raw ``body``; return the signed timestamp in milliseconds.

    Raises `SignatureError` when the header is missing or malformed, when the timestamp is further
    than ``tolerance`` seconds from ``now()`` in either direction, or when no ``v1`` value matches.
    """
    if not header:
        raise SignatureError("WorkOS-Signature header is missing")
    parsed = parse_signature_header(header)
    timestamp_ms = int(parsed.timestamp)
    if abs(now() * 1000 - timestamp_ms) > tolerance * 1000:
        raise SignatureError("WorkOS-Signature timestamp is outside the tolerance window")
    expected = compute_signature(parsed.timestamp, body, secret).encode("ascii")
    # Compare bytes: compare_digest raises on non-ASCII str, and a header is attacker-controlled.
    if not any(
        hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
        for candidate in parsed.signatures
    ):
        raise SignatureError("WorkOS-Signature does not match the body")
    return timestamp_ms


def sign_header(body: bytes, secret: str, *, timestamp_ms: int | None = None) -> str:
    """Build a ``WorkOS-Signature`` header value for ``body``, as WorkOS would send it."""
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return f"t={timestamp}, v1={compute_signature(timestamp, body, secret)}"
