"""conftest.py for the quickstart's app.py: point the plugin's fixtures at it."""

import os
import tempfile

# Before the app is imported: a test secret and a throwaway database.
os.environ["WORKOS_WEBHOOK_SECRET"] = "whsec_test"
os.environ["AUTHKIT_DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/test.db"

import pytest
from app import app, authkit
from fastapi import FastAPI

from fastapi_workos_authkit import AuthKit


@pytest.fixture
def workos_authkit() -> AuthKit:
    return authkit


@pytest.fixture
def workos_app() -> FastAPI:
    return app
