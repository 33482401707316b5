"""`AuthKit.override`: a module-level AuthKit re-pointed at test credentials and a database."""

from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import Engine

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit.testing import (
    TEST_CLIENT_ID,
    TEST_WEBHOOK_SECRET,
    FakeWorkOS,
    TokenFactory,
    factories,
    signed_delivery,
)
from tests.conftest import session_for

pytestmark = pytest.mark.anyio


def _module_level_app(tmp_path: Path) -> tuple[AuthKit, FastAPI]:
    # As the quickstart builds it at import: production's secret and database, mounted at once.
    authkit = AuthKit(
        webhook_secret="whsec_production", database_url=f"sqlite:///{tmp_path / 'prod.db'}"
    )
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())

    @app.get("/me")
    def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> WorkOSUser:
        return user

    return authkit, app


async def _post(app: FastAPI, authkit: AuthKit, secret: str, payload: dict) -> httpx.Response:  # type: ignore[type-arg]
    body, headers = signed_delivery(payload, secret)
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        return await client.post("/workos/webhook", content=body, headers=headers)


async def test_a_mounted_app_follows_the_override_and_comes_back(
    engine: Engine, tmp_path: Path
) -> None:
    authkit, app = _module_level_app(tmp_path)
    tokens = TokenFactory(TEST_CLIENT_ID)
    fake = FakeWorkOS(api_key="sk_test", jwks=tokens.jwks(), client_id=TEST_CLIENT_ID)
    event = factories.user_created(email="ada@example.com")
    async with authkit.override(
        engine=engine,
        http_transport=fake.transport(),
        client_id=TEST_CLIENT_ID,
        webhook_secret=TEST_WEBHOOK_SECRET,
        api_base_url="https://api.workos.test",
    ) as same:
        assert same is authkit
        assert (await _post(app, authkit, "whsec_production", event)).status_code == 401
        response = await _post(app, authkit, TEST_WEBHOOK_SECRET, event)
        assert response.json() == {"status": "applied", "event_id": event["id"]}
        with session_for(engine) as session:
            assert session.get(WorkOSUser, event["data"]["id"]) is not None
        # A token minted for the test client id is verified against the fake's JWKS.
        async with (
            authkit.lifespan(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            token = tokens.mint(event["data"]["id"])
            me = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert (me.status_code, me.json().get("email")) == (200, "ada@example.com"), me.text
    # Back to production's configuration: its secret, its (empty) database, no client id.
    assert authkit.settings.client_id is None
    assert authkit.engine is not engine
    assert str(authkit.engine.url).endswith("prod.db")
    assert (await _post(app, authkit, TEST_WEBHOOK_SECRET, event)).status_code == 401
    back = await _post(app, authkit, "whsec_production", event)
    assert back.json()["status"] == "applied"  # a new row in prod.db, not a duplicate


async def test_a_database_url_override_gets_its_own_engine_disposed_after(
    tmp_path: Path,
) -> None:
    authkit, app = _module_level_app(tmp_path)
    url = f"sqlite:///{tmp_path / 'test.db'}"
    async with authkit.override(database_url=url, webhook_secret=TEST_WEBHOOK_SECRET):
        inside = authkit.engine
        assert str(inside.url) == url
        event = factories.user_created()
        assert (await _post(app, authkit, TEST_WEBHOOK_SECRET, event)).status_code == 200
    assert authkit.engine is not inside
    assert inside.pool.checkedout() == 0


async def test_options_fixed_at_build_time_cannot_be_overridden(tmp_path: Path) -> None:
    authkit, _ = _module_level_app(tmp_path)
    with pytest.raises(TypeError, match="cannot change mirror, prefix"):
        async with authkit.override(prefix="/elsewhere", mirror=[]):
            pass  # pragma: no cover
    assert authkit.settings.prefix == "/workos"
