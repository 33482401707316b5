"""A tiny local WorkOS stand-in serving the JWKS, so the workers fetch real keys over HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi_workos_authkit.testing.tokens import RSAKeyPair, TokenFactory

from .processes import free_port


class JWKSServer:
    """Serves ``GET /sso/jwks/<client_id>`` on loopback; every other path answers 404.

    A user lookup (the just-in-time fetch) also gets 404: the scenarios only mint tokens for
    users they have synced by webhook first.
    """

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.key = RSAKeyPair.generate(kid="sso_oidc_key_pair_bench")
        self.tokens = TokenFactory(client_id, key=self.key, lifetime=3600)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.fetches = 0
        body = json.dumps(self.tokens.jwks()).encode("utf-8")
        path = f"/sso/jwks/{client_id}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == path:
                    server.fetches += 1
                    self._answer(200, body)
                else:
                    self._answer(404, b'{"message":"Not Found"}')

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
