"""The bench fuzzer builds every hostile input class of issue 10 the way it claims to.

No server here: these check the recipes themselves (signed correctly, and really as deep, as
long or as broken as their class says), and that the report shows them per class.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bench.harness import fuzz
from bench.harness.jwks import JWKSServer
from bench.report import render
from fastapi_workos_authkit._routes.signatures import verify_signature
from fastapi_workos_authkit.testing.tokens import RSAKeyPair, TokenFactory

SECRETS = {fuzz.WEBHOOK: "whsec_fuzz", fuzz.ACTION: "action_fuzz"}


@pytest.fixture(scope="module")
def recipes() -> list[fuzz.Recipe]:
    return fuzz.hostile_recipes(TokenFactory("client_01FUZZ"), repeat=1)


def _of(recipes: list[fuzz.Recipe], cls: str, path: str | None = None) -> list[fuzz.Recipe]:
    chosen = [r for r in recipes if r.cls == cls and (path is None or r.path == path)]
    assert chosen, f"no recipe of class {cls}"
    return chosen


def test_every_hostile_class_is_generated_with_its_expected_answers(
    recipes: list[fuzz.Recipe],
) -> None:
    assert {r.cls for r in recipes} | {"jwks_bad_documents"} == fuzz.HOSTILE_CLASSES
    for recipe in recipes:
        assert recipe.expect == fuzz.EXPECTED[(recipe.cls, recipe.path)]


def test_signed_bodies_carry_a_valid_signature(recipes: list[fuzz.Recipe]) -> None:
    signed = [r for r in recipes if r.path in SECRETS]
    assert {r.cls for r in signed} == {
        "deep_nesting",
        "surrogates",
        "non_finite_numbers",
        "over_long_values",
        "client_disconnect",
    }
    for recipe in signed:
        header = dict(fuzz._headers(recipe, SECRETS))[b"workos-signature"].decode()
        verify_signature(recipe.body, header, SECRETS[recipe.path], tolerance=30)


def test_each_signed_class_is_what_it_says(recipes: list[fuzz.Recipe]) -> None:
    for recipe in _of(recipes, "deep_nesting"):
        with pytest.raises(RecursionError):
            json.loads(recipe.body)
    for recipe in _of(recipes, "surrogates"):
        text = json.dumps(json.loads(recipe.body), ensure_ascii=False)
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    for recipe in _of(recipes, "non_finite_numbers"):
        score = json.loads(recipe.body)["data" if recipe.path == fuzz.WEBHOOK else "user"]
        assert not math.isfinite(score["fuzz_score"])
    lengths = {r.kind: json.loads(r.body) for r in _of(recipes, "over_long_values", fuzz.WEBHOOK)}
    assert len(lengths["event_id_66"]["id"]) > 64
    assert len(lengths["data_id_66"]["data"]["id"]) > 64
    assert len(lengths["event_type_130"]["event"]) > 128
    assert len(lengths["email_321"]["data"]["email"]) > 320
    # Only the stored surrogate events carry ids the rows check lets through.
    assert all(r.stores for r in _of(recipes, "surrogates", fuzz.WEBHOOK))
    assert not any(r.stores for r in recipes if r.cls != "surrogates")


def test_token_classes_go_to_the_verification_endpoint(recipes: list[fuzz.Recipe]) -> None:
    tokens = [r for r in recipes if r.cls.startswith("token_")]
    assert {r.path for r in tokens if r.cls != "token_path_in_sub"} == {fuzz.CLAIMS}
    assert {r.path for r in _of(recipes, "token_path_in_sub")} == {fuzz.ME}
    for recipe in _of(recipes, "token_nested_json"):
        # Under the verifier's 16 KiB limit, so the nesting reaches the JSON decode.
        assert recipe.authorization is not None
        assert len(recipe.authorization) < 16 * 1024


def test_jwks_documents_hold_the_broken_entries_and_the_rotation() -> None:
    jwks = JWKSServer("client_01FUZZ")
    jwks.start()
    try:
        rotated = RSAKeyPair.generate(kid="k3")
        documents = {name: body for name, body, _ in fuzz._jwks_documents(jwks, rotated)}
        no_n = json.loads(documents["entry_without_n"])["keys"]
        assert any("n" not in key for key in no_n)
        assert {key["n"] for key in json.loads(documents["n_is_1.5"])["keys"]} >= {1.5}
        with pytest.raises(RecursionError):
            json.loads(documents["deeply_nested_entry"])
        rotation = json.loads(documents["broken_then_k2_then_new_k3"])["keys"]
        assert "n" not in rotation[0]
        assert rotation[1:] == [jwks.key.jwk, rotated.jwk]
    finally:
        jwks.stop()


def test_the_report_shows_every_class_and_its_answers() -> None:
    by_class: dict[str, Any] = {
        "deep_nesting": {
            "webhook": {"sent": 4, "statuses": {"400": 4}, "expected": ["400"], "unexpected": 0}
        }
    }
    page = render(
        {
            "command": "bench/run.py --smoke",
            "commit": "0" * 40,
            "started_at": "2026-01-01T00:00:00+00:00",
            "total_seconds": 1.0,
            "machine": {"nproc": 2, "cpu": "x", "python": "3", "platform": "linux"},
            "failed_checks": [],
            "scenarios": {
                "5": {"figures": {"requests": 4, "by_class": by_class, "hostile_requests": 4}}
            },
        }
    )
    assert "| `deep_nesting` | webhook | 4 | 400: 4 | 400 | 0 |" in page
