"""Testing an app that uses current_user: shown in docs/current-user.md, run by the test suite."""

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_workos_authkit import AuthKit, User, WorkOSUser
from fastapi_workos_authkit.testing import FakeJWKS, TokenFactory, factories


# --8<-- [start:override]
def test_me_as_a_fake_user(app: FastAPI, authkit: AuthKit) -> None:
    fake = WorkOSUser(
        id="user_01TEST",
        email="ada@example.com",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    app.dependency_overrides[authkit.current_user] = lambda: fake
    try:
        response = TestClient(app).get("/me")  # no token needed
        assert response.json() == {"id": "user_01TEST", "email": "ada@example.com"}
    finally:
        app.dependency_overrides.clear()


# --8<-- [end:override]


# --8<-- [start:real-tokens]
def test_me_with_a_real_token(build_app: Any, tmp_path: Any) -> None:
    tokens = TokenFactory(client_id="client_123")  # a real RS256 key, generated locally
    authkit = AuthKit(
        client_id="client_123",
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        http_transport=FakeJWKS(tokens).transport(),  # serves the key as WorkOS's JWKS
    )
    app = build_app(authkit)
    with TestClient(app) as client:  # runs the lifespan: tables, keys
        # A synced user, as a user.created webhook would leave it.
        authkit.pipeline.apply_user_snapshot(User.model_validate(factories.user("user_01A")))
        ok = client.get("/me", headers={"Authorization": f"Bearer {tokens.mint('user_01A')}"})
        assert ok.status_code == 200
        expired = tokens.mint("user_01A", expired=True)
        refused = client.get("/me", headers={"Authorization": f"Bearer {expired}"})
        assert refused.status_code == 401


# --8<-- [end:real-tokens]
