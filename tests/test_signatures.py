"""The WorkOS-Signature scheme, against known-good vectors (HMAC-SHA256 over "t.body")."""

from __future__ import annotations

import json

import pytest

from fastapi_workos_authkit._exceptions import SignatureError
from fastapi_workos_authkit._routes.signatures import (
    compute_signature,
    parse_signature_header,
    sign_header,
    verify_signature,
)

SECRET = "whsec_test_secret"
VECTOR_BODY = (
    b'{"id":"event_01HXYZ","event":"user.created","data":{"object":"user",'
    b'"id":"user_01E4ZCR3C56J083X43JQXF3JK5","email":"marcelina.davis@example.com",'
    b'"email_verified":true,"first_name":"Marcelina","last_name":"Davis",'
    b'"profile_picture_url":null,"external_id":null,"metadata":{},"last_sign_in_at":null,'
    b'"locale":null,"created_at":"2026-01-15T12:00:00.000Z","updated_at":"2026-01-15T12:00:00.000Z"},'
    b'"created_at":"2026-01-15T12:00:00.000Z"}'
)
VECTOR_T = "1768478400000"
VECTOR_V1 = "ff4f5414742a2be36d3f2ea7dea28064885575a09d0ea5214e963e13dc8652a4"
VECTOR_HEADER = f"t={VECTOR_T}, v1={VECTOR_V1}"


def at_vector_time() -> float:
    return int(VECTOR_T) / 1000


def test_vector_body_is_the_published_one() -> None:
    assert len(VECTOR_BODY) == 430


def test_spec_vector_signature() -> None:
    assert compute_signature(VECTOR_T, VECTOR_BODY, SECRET) == VECTOR_V1


def test_spec_vector_verifies() -> None:
    stamp = verify_signature(VECTOR_BODY, VECTOR_HEADER, SECRET, tolerance=180, now=at_vector_time)
    assert stamp == int(VECTOR_T)


def test_pretty_printed_body_fails() -> None:
    pretty = json.dumps(json.loads(VECTOR_BODY), indent=2).encode()
    # Often abbreviated "2c2569de…4a4d09"; the full value recomputed here ends in ...546a4d09.
    assert compute_signature(VECTOR_T, pretty, SECRET) == (
        "2c2569de8779a7a0bb20af7da7d53ebd8f8a5947d81e8f76b68918fd546a4d09"
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(pretty, VECTOR_HEADER, SECRET, tolerance=180, now=at_vector_time)


@pytest.mark.parametrize(
    "mangled",
    [
        json.dumps(json.loads(VECTOR_BODY), sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(json.loads(VECTOR_BODY), separators=(",", ":"), ensure_ascii=True)
        .replace("@", "\\u0040")
        .encode(),
        b"\xef\xbb\xbf" + VECTOR_BODY,
        VECTOR_BODY + b"\n",
    ],
    ids=["reordered", "u-escaped", "bom-prefixed", "trailing-newline"],
)
def test_reserialised_bodies_fail(mangled: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(mangled, VECTOR_HEADER, SECRET, tolerance=180, now=at_vector_time)


@pytest.mark.parametrize(
    "header",
    [
        f"t={VECTOR_T},v1={VECTOR_V1}",
        f"v1={VECTOR_V1}, t={VECTOR_T}",
        f"t={VECTOR_T}, v2=abc, v1={VECTOR_V1}",
        f"t={VECTOR_T}, v1={'0' * 64}, v1={VECTOR_V1}",
        f" t={VECTOR_T} ,  v1={VECTOR_V1} ",
    ],
    ids=["no-space", "reversed", "unknown-part", "rotated-secret", "extra-spaces"],
)
def test_lenient_header_forms(header: str) -> None:
    verify_signature(VECTOR_BODY, header, SECRET, tolerance=180, now=at_vector_time)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "timestamp"),
        (f"v1={VECTOR_V1}", "timestamp"),
        (f"t={VECTOR_T}", "v1"),
        (f"t=abc, v1={VECTOR_V1}", "timestamp"),
        (f"t={VECTOR_T}, v1=ÿÿÿ", "does not match"),
        (f"t={VECTOR_T}, v1={VECTOR_V1.upper()}", "does not match"),
        ("t=" + "9" * 5000, "too long"),
    ],
)
def test_malformed_headers(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_signature(VECTOR_BODY, header, SECRET, tolerance=180, now=at_vector_time)


def test_wrong_secret_fails() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(
            VECTOR_BODY, VECTOR_HEADER, "whsec_other", tolerance=180, now=at_vector_time
        )


@pytest.mark.parametrize("offset", [-181, 181])
def test_stale_and_future_timestamps_fail(offset: int) -> None:
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(
            VECTOR_BODY, VECTOR_HEADER, SECRET, tolerance=180, now=lambda: at_vector_time() + offset
        )


@pytest.mark.parametrize("offset", [-180, 180])
def test_timestamps_at_the_tolerance_edge_pass(offset: int) -> None:
    verify_signature(
        VECTOR_BODY, VECTOR_HEADER, SECRET, tolerance=180, now=lambda: at_vector_time() + offset
    )


def test_seconds_timestamp_is_outside_tolerance() -> None:
    seconds = VECTOR_T[:10]
    header = f"t={seconds}, v1={compute_signature(seconds, VECTOR_BODY, SECRET)}"
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(VECTOR_BODY, header, SECRET, tolerance=180, now=at_vector_time)


def test_sign_header_round_trips() -> None:
    header = sign_header(VECTOR_BODY, SECRET, timestamp_ms=int(VECTOR_T))
    assert header == VECTOR_HEADER
    parsed = parse_signature_header(header)
    assert parsed.timestamp == VECTOR_T
    assert parsed.signatures == (VECTOR_V1,)


def test_a_huge_timestamp_is_refused_not_crashed() -> None:
    header = f"t={'9' * 400}, v1={VECTOR_V1}"
    with pytest.raises(SignatureError, match="timestamp"):
        verify_signature(VECTOR_BODY, header, SECRET, tolerance=180, now=at_vector_time)
