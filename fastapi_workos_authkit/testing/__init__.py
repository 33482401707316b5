"""Test helpers: a fake WorkOS for your app's tests, also used by this package's own tests.

Nothing here talks to WorkOS: payloads are built locally and signed with your test secrets.
"""

from . import factories
from .actions import (
    authentication_action,
    invitation,
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from .config import (
    TEST_ACTION_SECRET,
    TEST_API_BASE_URL,
    TEST_API_KEY,
    TEST_CLIENT_ID,
    TEST_WEBHOOK_SECRET,
    WorkOSTestConfig,
)
from .fake_workos import FakeWorkOS, FakeWorkOSServer
from .tokens import FakeJWKS, RSAKeyPair, TokenFactory, tamper_header
from .webhooks import encode, signed_delivery

__all__ = [
    "TEST_ACTION_SECRET",
    "TEST_API_BASE_URL",
    "TEST_API_KEY",
    "TEST_CLIENT_ID",
    "TEST_WEBHOOK_SECRET",
    "FakeJWKS",
    "FakeWorkOS",
    "FakeWorkOSServer",
    "RSAKeyPair",
    "TokenFactory",
    "WorkOSTestConfig",
    "authentication_action",
    "encode",
    "factories",
    "invitation",
    "signed_action_request",
    "signed_delivery",
    "tamper_header",
    "user_registration_action",
    "verify_action_response",
]
