"""A local WorkOS for development: ``fastapi-workos-authkit dev``.

``dev serve`` runs the testing kit's `FakeWorkOS` on loopback with a persistent signing key and
secrets, delivers every change to the app as a signed webhook, calls the app's Action endpoint
before it registers a user or signs one in, and implements the AuthKit sign-in endpoints
(``/user_management/authorize`` and ``/user_management/authenticate``) for Swagger UI. The other
``dev`` verbs talk to the running server through its state folder (``./.workos-dev/``).

Modules: `state` (the folder), `delivery` (the webhook queue), `actions` (calling the app's
Action endpoint), `server` (the ASGI app) and `cli` (the verbs).
"""

from .cli import add_dev_commands, run_dev
from .server import DevError, DevServer
from .state import DevSecrets, DevState

__all__ = ["DevError", "DevSecrets", "DevServer", "DevState", "add_dev_commands", "run_dev"]
