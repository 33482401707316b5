"""`decode_json` skips the cleaning walk only when the raw bytes show it would change nothing.

The fast path must be exactly as strict as the walk: every body gets the same value, or the same
refusal, as decoding and then walking it (`clean_json`) would give.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_workos_authkit._sync.untrusted_json import (
    MAX_JSON_DEPTH,
    UnsafeJSONError,
    clean_json,
    decode_json,
)
from fastapi_workos_authkit.testing import encode, factories


def _walked(body: bytes) -> Any:
    """What the walk alone decides for ``body``: the cleaned value, or UnsafeJSONError."""
    value, problems = clean_json(json.loads(body))
    if problems:
        raise UnsafeJSONError(", ".join(sorted(problems)))
    return value


def _same_decision(body: bytes) -> None:
    try:
        expected = _walked(body)
    except UnsafeJSONError:
        with pytest.raises(UnsafeJSONError):
            decode_json(body)
        return
    got = decode_json(body)
    # NaN never equals itself, but neither side may keep one: compare the JSON texts.
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


TRICKY = [
    encode(factories.user_created("user_01E4ZCR3C56J083X43JQXF3JK5")),  # digits then E: no number
    b'{"name": "Ren\\ud800e"}',  # an escaped lone surrogate
    b'{"name": "Ren\\uDFFFe"}',
    b'{"name": "a\\u0000b"}',  # an escaped NUL
    b'{"\\ud83d": 1}',  # in a key
    b'{"name": "\xed\xa0\x80"}',  # a raw surrogate (CESU-8 style bytes)
    b'{"n": 1e400}',
    b'{"n": -1E+400}',
    b"[1, 2.5e308]",
    b"1e400",
    b" \n-1e999",
    b'{"n": ' + b"1" + b"0" * 400 + b".0}",  # overflows a double without an exponent
    b'{"n": NaN}',
    b'{"n": [Infinity]}',
    b'{"n": -Infinity}',
    b'{"s": "NaN and Infinity and 1e400 as text"}',
    b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
    b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    b'{"a": "[[[[' + b"[" * 100 + b'"}',  # brackets inside a string only
    json.dumps({"name": "Ren\ud800e", "n": 1}).encode("utf-16"),  # UTF-16 with a BOM
    '{"name": "\\ud800"}'.encode("utf-16-le"),
    '{"n": NaN}'.encode("utf-32"),
]


@pytest.mark.parametrize("body", TRICKY)
def test_the_fast_path_decides_like_the_walk(body: bytes) -> None:
    _same_decision(body)


def test_a_plain_event_comes_back_equal_to_its_walk() -> None:
    body = encode(factories.user_created(metadata={"plan": "pro"}))
    assert decode_json(body) == json.loads(body)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.sampled_from(["utf-8", "utf-16", "utf-32"]), st.booleans())
def test_any_json_is_decided_like_the_walk(value: Any, encoding: str, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    body = text.encode(encoding, "surrogatepass")
    _same_decision(body)
