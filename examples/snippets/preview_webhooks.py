"""A preview deployment's webhook endpoint from code, shown in docs/preview-environments.md and
run by tests/test_webhooks_cli.py against the testing kit's fake WorkOS."""

from collections.abc import Callable

from fastapi_workos_authkit import (
    AuthKit,
    delete_webhook_endpoints,
    setup_webhook_endpoint,
)


# --8<-- [start:hooks]
async def on_preview_deployed(
    authkit: AuthKit, url: str, store_secret: Callable[[str], None]
) -> None:
    """Subscribe the preview to exactly the events the app needs (creating its endpoint once)."""
    result = await setup_webhook_endpoint(authkit, f"{url}/workos/webhook")
    if result.secret is not None:
        # Only the create call returns the secret: keep it now, in the preview's environment
        # (WORKOS_WEBHOOK_SECRET). A later setup for the same URL updates and returns none.
        store_secret(result.secret)


async def on_preview_removed(authkit: AuthKit, url: str) -> None:
    """Delete the preview's endpoint, so WorkOS stops delivering to a URL that is gone."""
    await delete_webhook_endpoints(authkit, f"{url}/workos/webhook")


# --8<-- [end:hooks]
