"""Decoding JSON from outside into values that every part of the package, and every database,
can handle the same way.

Python's ``json`` accepts things that later break far from the edge: nesting deep enough to make
any recursive consumer (pydantic, the JSON column's serialiser) raise `RecursionError`; ``NaN``,
``Infinity`` and overflowing numbers such as ``1e400``, which PostgreSQL's ``json`` type rejects
while SQLite stores them; and lone UTF-16 surrogates (``"\\ud800"``, or the raw bytes
``ED A0 80``), which no UTF-8 database driver can encode. Each is settled here, once, before
anything else sees the value:

* deeper than `MAX_JSON_DEPTH` levels: refused;
* a non-finite number: refused;
* a lone surrogate or a NUL character, in a key or a string: replaced with U+FFFD, the Unicode
  replacement character. WorkOS is written in JavaScript, whose ``JSON.stringify`` emits a lone
  surrogate as a ``\\ud800`` escape, so a real user's name can carry one; refusing it would lose
  that user's events for good. PostgreSQL's text columns cannot hold NUL either.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._exceptions import UnsafeJSONError as UnsafeJSONError

MAX_JSON_DEPTH = 64
"""The deepest nesting accepted, counting the outermost object as level 1.

A WorkOS event is about four levels deep at most (envelope, data, a list, its items); the rest is
headroom for metadata. Deeper input is refused before any recursive code can see it."""

TOO_DEEP = f"it is nested deeper than {MAX_JSON_DEPTH} levels"
NON_FINITE = "it holds a non-finite number (NaN, Infinity, or one too large for a double)"

# A lone surrogate, or NUL: characters a UTF-8 database text value cannot hold.
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with each lone surrogate and each NUL replaced by U+FFFD.

    A valid surrogate pair (as the raw bytes of CESU-8 decode to) becomes the character it
    encodes, so only what is really broken is replaced.
    """
    if _UNSTORABLE_CHARACTER.search(text) is None:
        return text  # the common case: no copy
    repaired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return repaired.replace("\x00", "\ufffd")


def clean_json(value: Any) -> tuple[Any, frozenset[str]]:
    """Return a copy of decoded JSON that any database can store, and the problems found.

    Strings and keys go through `storable_text`. A non-finite number becomes ``None`` and a
    container deeper than `MAX_JSON_DEPTH` becomes ``None``; each adds its reason (`NON_FINITE`,
    `TOO_DEEP`) to the problems, so a caller can refuse the input or keep the cleaned copy as a
    record of it. Iterative, so any depth is safe to walk.
    """
    problems: set[str] = set()

    def leaf(item: Any) -> Any:
        if isinstance(item, str):
            return storable_text(item)
        if isinstance(item, float) and not math.isfinite(item):
            problems.add(NON_FINITE)
            return None
        return item

    if not isinstance(value, dict | list):
        return leaf(value), frozenset(problems)
    root: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, dict[str, Any] | list[Any], int]] = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        pairs: Any = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in pairs:
            new: Any
            if isinstance(child, dict | list):
                if depth >= MAX_JSON_DEPTH:
                    problems.add(TOO_DEEP)
                    new = None
                else:
                    new = {} if isinstance(child, dict) else []
                    stack.append((child, new, depth + 1))
            else:
                new = leaf(child)
            if isinstance(target, dict):
                target[storable_text(key)] = new
            else:
                target.append(new)
    return root, frozenset(problems)


class _NumberWatch:
    """``json.loads`` hooks that note a non-finite number while decoding, for the fast path.

    ``parse_constant`` sees ``NaN`` and ``Infinity``; ``parse_float`` sees every float literal,
    so ``1e400`` and ``1000...0.0`` (which overflow a double) are caught where they are parsed.
    """

    __slots__ = ("non_finite",)

    def __init__(self) -> None:
        self.non_finite = False

    def parse_float(self, text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            self.non_finite = True
        return number

    def parse_constant(self, text: str) -> float:
        self.non_finite = True
        return float(text)


def _may_need_cleaning(body: bytes) -> bool:
    """Whether the walk could change or refuse what ``body`` decodes to, numbers aside.

    Byte searches, each a few hundred nanoseconds: a ``\\u`` escape (a lone surrogate or NUL
    can only be written as one in UTF-8 JSON), a raw surrogate encoded in UTF-8 (lead byte
    ``ED``), a NUL byte (UTF-16 or UTF-32, which ``json.loads`` also accepts and where these
    searches do not apply), or more opening brackets than the depth limit. Conservative: true
    only means the walk runs.
    """
    return (
        b"\\u" in body
        or b"\xed" in body
        or b"\x00" in body
        or body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH
    )


def decode_json(body: bytes) -> Any:
    """Decode a request body, applying the rules above.

    Raises `ValueError` when the body is not JSON at all, and `UnsafeJSONError` when it is JSON
    that is too deep or holds a non-finite number.
    """
    numbers = _NumberWatch()
    try:
        value = json.loads(
            body, parse_float=numbers.parse_float, parse_constant=numbers.parse_constant
        )
    except RecursionError:
        # The decoder itself gave up: far deeper than the limit.
        raise UnsafeJSONError(f"The body is refused: {TOO_DEEP}") from None
    if not numbers.non_finite and not _may_need_cleaning(body):
        return value  # what clean_json would return: the walk would change nothing
    cleaned, problems = clean_json(value)
    if problems:
        raise UnsafeJSONError("The body is refused: " + "; ".join(sorted(problems)))
    return cleaned
