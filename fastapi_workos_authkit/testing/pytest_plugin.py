"""pytest fixtures for apps built on fastapi-workos-authkit, loaded automatically once installed.

The plugin is registered under the ``pytest11`` entry point, so a test suite gets these fixtures
as soon as the package is installed in its environment, without any import or ``conftest.py``
line. Every fixture's name starts with ``workos_``, so none clashes with a project's own. A suite
that does not want them turns the plugin off with ``pytest -p no:fastapi_workos_authkit`` (or
``addopts = "-p no:fastapi_workos_authkit"`` in its pytest configuration). Nothing in them talks
to WorkOS.

Fixtures, from the bottom up:

* ``workos_config``: the test client id, API key and secrets (`WorkOSTestConfig`, whose
  defaults are `TEST_CLIENT_ID` and friends in `fastapi_workos_authkit.testing`);
* ``workos_tokens``: a `TokenFactory` minting RS256 access tokens for that client id;
* ``workos_fake``: a stateful `FakeWorkOS` (users, events, JWKS) checking that API key;
* ``workos_database_url``: a fresh SQLite file per test (override it to use PostgreSQL);
  nothing in these fixtures is shared between tests;
* ``workos_authkit_options``: keyword arguments for ``AuthKit(...)`` wired to all of the above;
* ``workos_authkit``: ``AuthKit(**workos_authkit_options)``; override it to return your own
  (an app's module-level instance re-pointed with ``AuthKit.override``);
* ``workos_app``: a minimal app mounting ``workos_authkit``; override it to return your own;
* ``workos_client``: an ``httpx.AsyncClient`` talking to ``workos_app`` with its lifespan run;
* ``workos_send_webhook`` / ``workos_send_action``: POST a signed webhook delivery / Action
  request through it.

The async fixtures run under anyio's pytest plugin: mark async tests with
``pytest.mark.anyio``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

# From the public root, as an app imports it: the fixtures build and hand out the facade.
from .. import AuthKit
from .actions import signed_action_request
from .config import WorkOSTestConfig
from .fake_workos import FakeWorkOS
from .tokens import TokenFactory
from .webhooks import signed_delivery

__all__ = [
    "SendAction",
    "SendWebhook",
    "WorkOSTestConfig",
    "workos_app",
    "workos_authkit",
    "workos_authkit_options",
    "workos_client",
    "workos_config",
    "workos_database_url",
    "workos_fake",
    "workos_send_action",
    "workos_send_webhook",
    "workos_tokens",
]

SendWebhook = Callable[..., Awaitable[httpx.Response]]
"""``await workos_send_webhook(payload, *, secret=None, timestamp_ms=None)``."""

SendAction = Callable[..., Awaitable[httpx.Response]]
"""``await workos_send_action(payload, *, secret=None, timestamp_ms=None)``."""


@pytest.fixture
def workos_config() -> WorkOSTestConfig:
    """The test client id, API key and secrets; override it to change them."""
    return WorkOSTestConfig()


@pytest.fixture
def workos_tokens(workos_config: WorkOSTestConfig) -> TokenFactory:
    """Mints access tokens that ``workos_authkit`` accepts: ``workos_tokens.mint(user_id)``."""
    return TokenFactory(workos_config.client_id)


@pytest.fixture
def workos_fake(workos_config: WorkOSTestConfig, workos_tokens: TokenFactory) -> FakeWorkOS:
    """A fake WorkOS: ``create_user``/``update_user``/``delete_user``, the Events API, the JWKS."""
    return FakeWorkOS(
        api_key=workos_config.api_key,
        jwks=workos_tokens.jwks(),
        client_id=workos_config.client_id,
    )


@pytest.fixture
def workos_database_url(tmp_path: Path) -> str:
    """A fresh SQLite database for each test."""
    return f"sqlite:///{tmp_path / 'workos_authkit_test.db'}"


@pytest.fixture
def workos_authkit_options(
    workos_config: WorkOSTestConfig, workos_fake: FakeWorkOS, workos_database_url: str
) -> dict[str, Any]:
    """Keyword arguments for ``AuthKit(...)`` (or your factory) wired to the fake WorkOS."""
    return {
        "client_id": workos_config.client_id,
        "api_key": workos_config.api_key,
        "webhook_secret": workos_config.webhook_secret,
        "action_secret": workos_config.action_secret,
        "api_base_url": workos_config.api_base_url,
        "database_url": workos_database_url,
        "http_transport": workos_fake.transport(),
    }


@pytest.fixture
async def workos_authkit(
    workos_authkit_options: dict[str, Any], anyio_backend: Any
) -> AsyncIterator[AuthKit]:
    """An `AuthKit` wired to the fake WorkOS and a fresh database.

    After the test it is shut down (poller, WorkOS and JWKS clients closed) and its engine
    disposed.
    """
    authkit = AuthKit(**workos_authkit_options)
    try:
        yield authkit
    finally:
        await authkit.shutdown()
        authkit.engine.dispose()


@pytest.fixture
def workos_app(workos_authkit: AuthKit) -> FastAPI:
    """The app under test: by default the smallest app mounting ``workos_authkit``.

    Override it in your ``conftest.py`` to return your own app.
    """
    app = FastAPI(lifespan=workos_authkit.lifespan)
    app.include_router(workos_authkit.router())
    return app


@pytest.fixture
async def workos_client(
    workos_app: FastAPI, workos_authkit: AuthKit, anyio_backend: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``workos_app``, in-process, with the app's lifespan running.

    It depends on ``workos_authkit``, so an `AuthKit` re-pointed by that fixture is re-pointed
    before the lifespan starts (its tables go to the test's database) and restored after it ends.
    """
    async with (
        workos_app.router.lifespan_context(workos_app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=workos_app), base_url="http://testserver"
        ) as client,
    ):
        yield client


@pytest.fixture
def workos_send_webhook(workos_client: httpx.AsyncClient, workos_authkit: AuthKit) -> SendWebhook:
    """POST a signed webhook delivery to the app, as WorkOS would; returns the response.

    The body is signed with ``workos_authkit``'s webhook secret unless ``secret`` is given.
    """

    async def send(
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> httpx.Response:
        key = secret or workos_authkit.settings.require_webhook_secret("workos_send_webhook")
        body, headers = signed_delivery(payload, key, timestamp_ms=timestamp_ms)
        url = f"{workos_authkit.settings.prefix}/webhook"
        return await workos_client.post(url, content=body, headers=headers)

    return send


@pytest.fixture
def workos_send_action(workos_client: httpx.AsyncClient, workos_authkit: AuthKit) -> SendAction:
    """POST a signed Action request to the app, as WorkOS would; returns the response."""

    async def send(
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> httpx.Response:
        key = secret or workos_authkit.settings.require_action_secret("workos_send_action")
        body, headers = signed_action_request(payload, key, timestamp_ms=timestamp_ms)
        url = f"{workos_authkit.settings.prefix}/action"
        return await workos_client.post(url, content=body, headers=headers)

    return send
