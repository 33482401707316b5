"""conftest.py for an app built by a factory: give it the plugin's AuthKit."""

import pytest
from app import create_app
from fastapi import FastAPI

from fastapi_workos_authkit import AuthKit


@pytest.fixture
def workos_app(workos_authkit: AuthKit) -> FastAPI:
    # workos_authkit is a new AuthKit per test, wired to the fake WorkOS and a fresh database.
    return create_app(workos_authkit)
