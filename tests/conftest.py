"""Shared fixtures: a real database (SQLite file and PostgreSQL), a real app over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit.testing import signed_delivery

WEBHOOK_SECRET = "whsec_test_secret"
ACTION_SECRET = "action_secret_test"
CLIENT_ID = "client_01TESTCLIENT"

POSTGRES_URL = os.environ.get("AUTHKIT_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("AUTHKIT_REQUIRE_POSTGRES") == "1"


def _backends() -> list[Any]:
    postgres_marks = []
    if not POSTGRES_URL and not REQUIRE_POSTGRES:
        postgres_marks.append(pytest.mark.skip(reason="AUTHKIT_TEST_POSTGRES_URL is not set"))
    return ["sqlite", pytest.param("postgresql", marks=postgres_marks)]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The database kind a test runs on; every database test runs on both."""
    name: str = request.param
    if name == "sqlite" and request.node.get_closest_marker("postgres_only"):
        pytest.skip("PostgreSQL-only test")
    return name


@pytest.fixture
def database_url(backend: str, tmp_path: Any) -> Iterator[str]:
    """A URL to an empty database: a SQLite file, or a fresh schema on the test PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'authkit.db'}"
        return
    if not POSTGRES_URL:
        pytest.fail("AUTHKIT_REQUIRE_POSTGRES=1 but AUTHKIT_TEST_POSTGRES_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database, disposed afterwards."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def authkit(engine: Engine) -> AuthKit:
    """An AuthKit wired to the test database and test secrets."""
    return AuthKit(
        client_id=CLIENT_ID,
        webhook_secret=WEBHOOK_SECRET,
        action_secret=ACTION_SECRET,
        api_key="sk_test_key",
        api_base_url="https://api.workos.test",
        engine=engine,
    )


def build_app(authkit: AuthKit) -> FastAPI:
    """The smallest real app: the lifespan and the router."""
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())
    return app


@asynccontextmanager
async def app_client(
    authkit: AuthKit, app: FastAPI | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``authkit``'s lifespan on ``app`` (by default `build_app`, built now, after the
    handlers are registered) and yield an HTTP client talking to it through ASGITransport."""
    if app is None:
        app = build_app(authkit)
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a real app (lifespan run) through ASGITransport."""
    async with app_client(authkit) as client:
        yield client


async def deliver(
    client: httpx.AsyncClient, payload: dict[str, Any] | bytes, **kwargs: Any
) -> httpx.Response:
    """POST a signed webhook delivery, as WorkOS would."""
    body, headers = signed_delivery(payload, WEBHOOK_SECRET, **kwargs)
    return await client.post("/workos/webhook", content=body, headers=headers)


def session_for(engine: Engine) -> Session:
    """A plain session for assertions."""
    return Session(engine)


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}
