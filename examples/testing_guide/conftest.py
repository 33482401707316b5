"""conftest.py for the quickstart's app.py: point the plugin's fixtures at its AuthKit."""

import os
from collections.abc import AsyncIterator
from typing import Any

# app.py mounts the webhook route when it is imported, which needs a secret; any value does,
# since the fixture below swaps in the testing kit's secret for each test.
os.environ.setdefault("WORKOS_WEBHOOK_SECRET", "whsec_replaced_in_tests")

import pytest
from app import app, authkit
from fastapi import FastAPI

from fastapi_workos_authkit import AuthKit


@pytest.fixture
async def workos_authkit(workos_authkit_options: dict[str, Any]) -> AsyncIterator[AuthKit]:
    # The app's own AuthKit, re-pointed at the fake WorkOS, its test secrets and client id,
    # and a fresh database, for this test only.
    async with authkit.override(**workos_authkit_options):
        yield authkit


@pytest.fixture
def workos_app() -> FastAPI:
    return app
