"""Test helpers: a fake WorkOS for your app's tests, also used by this package's own tests.

Nothing here talks to WorkOS: payloads are built locally and signed with your test secrets.
"""

from . import factories
from .webhooks import encode, signed_delivery

__all__ = ["encode", "factories", "signed_delivery"]
