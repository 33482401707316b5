"""The identifiers and secrets the pytest fixtures give a test `AuthKit`; none of them is real.

They are public so that a test can name them: a token minted elsewhere for `TEST_CLIENT_ID`, an
environment set before the app is imported, a delivery signed by hand with
`TEST_WEBHOOK_SECRET`.
"""

from __future__ import annotations

from dataclasses import dataclass

TEST_CLIENT_ID = "client_01TESTCLIENT0000000000000"
"""The client id of ``workos_config``: the audience of ``workos_tokens`` and the fake's JWKS."""
TEST_API_KEY = "sk_test_fastapi_workos_authkit"
"""The API key the fake WorkOS of ``workos_fake`` accepts."""
TEST_WEBHOOK_SECRET = "whsec_test_fastapi_workos_authkit"
"""The webhook signing secret ``workos_send_webhook`` signs with."""
TEST_ACTION_SECRET = "action_secret_test_fastapi_workos_authkit"
"""The Actions signing secret ``workos_send_action`` signs with."""
TEST_API_BASE_URL = "https://api.workos.test"
"""Where the test `AuthKit` looks for WorkOS; the fake answers there, in-process."""


@dataclass(frozen=True)
class WorkOSTestConfig:
    """The identifiers and secrets a test `AuthKit` is given; none of them is real."""

    client_id: str = TEST_CLIENT_ID
    api_key: str = TEST_API_KEY
    webhook_secret: str = TEST_WEBHOOK_SECRET
    action_secret: str = TEST_ACTION_SECRET
    api_base_url: str = TEST_API_BASE_URL
