"""A tiny local WorkOS stand-in serving the JWKS, so the workers fetch real keys over HTTP."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi_workos_authkit.testing.tokens import RSAKeyPair, TokenFactory

from .processes import free_port

# What the bench app may legitimately ask for besides the keys: a just-in-time user lookup by a
# plausible id (letters, digits, underscores; SPEC §5).
_USER_LOOKUP = re.compile(r"/user_management/users/[A-Za-z0-9_]{1,128}")


class JWKSServer:
    """Serves ``GET /sso/jwks/<client_id>`` on loopback; every other path answers 404.

    A user lookup (the just-in-time fetch) also gets 404: the scenarios only mint tokens for
    users they have synced by webhook first.

    The fuzzer swaps the served document (`serve`) to hand the workers broken JWKS documents,
    and reads `unexpected` afterwards: every request that is neither an anonymous JWKS fetch nor
    a user lookup by a plausible id (a token's ``sub`` smuggled into a REST path shows up here,
    even when the client normalised ``..`` back to the JWKS path, because it carries the API key).
    """

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.key = RSAKeyPair.generate(kid="sso_oidc_key_pair_bench")
        self.tokens = TokenFactory(client_id, key=self.key, lifetime=3600)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.fetches = 0
        self.normal_document = json.dumps(self.tokens.jwks()).encode("utf-8")
        self.document = self.normal_document
        self.document_name = "normal"
        self.fetches_by_document: Counter[str] = Counter()
        self.unexpected: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        path = f"/sso/jwks/{client_id}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with_api_key = self.headers.get("Authorization") is not None
                if self.path == path and not with_api_key:
                    with server._lock:
                        server.fetches += 1
                        server.fetches_by_document[server.document_name] += 1
                        body = server.document
                    self._answer(200, body)
                    return
                if self.path == path or not _USER_LOOKUP.fullmatch(self.path):
                    with server._lock:
                        server.unexpected.append(
                            {"path": self.path[:200], "with_api_key": with_api_key}
                        )
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

    def serve(self, name: str, document: bytes | None = None) -> None:
        """Serve ``document`` (raw bytes) as the JWKS from now on; ``None``: the real one."""
        with self._lock:
            self.document_name = name if document is not None else "normal"
            self.document = document if document is not None else self.normal_document

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
