"""Time, in the two forms the package uses: an injectable Unix clock and "now" as aware UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""A function returning the current time as Unix seconds; injectable for tests."""


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp column stores)."""
    return datetime.now(UTC)
