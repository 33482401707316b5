"""The dev server's state folder (``./.workos-dev/`` by default): key, secrets, data, address.

Every file is written atomically with mode 0600 and the folder is 0700: it holds a signing key
and the secrets the app trusts. Layout:

* ``secrets.json``: the dev client id, API key, webhook secret and Action secret;
* ``signing_key.pem``: the RSA key that signs access tokens (its ``kid`` in ``secrets.json``);
* ``data.json``: users, organizations, memberships, sessions and the events log;
* ``server.json``: the running server's URL and process id, for the other verbs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..testing import RSAKeyPair

DEFAULT_STATE_DIR = ".workos-dev"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class DevSecrets:
    """The dev environment's identity: what ``dev serve`` prints as exports."""

    client_id: str
    api_key: str
    webhook_secret: str
    action_secret: str
    kid: str


class DevState:
    """The state folder of one dev server.

    Args:
        directory: The folder (created 0700 on first write).
    """

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> None:
        self.directory = Path(directory)

    # -- files -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _write(self, name: str, content: bytes) -> None:
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)
        final = self._path(name)
        temporary = self._path(f".{name}.tmp")
        # Created 0600 from the start, so a secret is never readable by others, even briefly.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, final)

    def _read_json(self, name: str) -> Any:
        path = self._path(name)
        if not path.exists():
            return None
        return json.loads(path.read_text("utf-8"))

    def _write_json(self, name: str, value: Any) -> None:
        self._write(name, json.dumps(value, indent=1).encode("utf-8"))

    # -- identity ----------------------------------------------------------------------------

    def load_or_create_identity(self) -> tuple[DevSecrets, RSAKeyPair]:
        """The secrets and signing key, generated and saved on the first run."""
        stored = self._read_json("secrets.json")
        key_path = self._path("signing_key.pem")
        if stored is not None and key_path.exists():
            private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(private, rsa.RSAPrivateKey):  # pragma: no cover - hand-edited
                raise ValueError(f"{key_path} is not an RSA private key: run `dev reset`")
            found = DevSecrets(**stored)
            return found, RSAKeyPair(private_key=private, kid=found.kid)
        key = RSAKeyPair.generate()
        created = DevSecrets(
            client_id="client_dev_" + secrets.token_hex(8),
            api_key="sk_test_dev_" + secrets.token_hex(16),
            webhook_secret="whsec_dev_" + secrets.token_hex(16),
            action_secret="action_dev_" + secrets.token_hex(16),
            kid=key.kid,
        )
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._write("signing_key.pem", pem)
        self._write_json("secrets.json", created.__dict__)
        return created, key

    # -- data --------------------------------------------------------------------------------

    def load_data(self) -> dict[str, Any]:
        """The saved users, organizations, memberships, sessions and events (empty at first)."""
        data = self._read_json("data.json") or {}
        for name in ("users", "organizations", "memberships", "sessions", "events"):
            data.setdefault(name, [])
        return dict(data)

    def save_data(self, data: dict[str, Any]) -> None:
        """Save the data (called after every change)."""
        self._write_json("data.json", data)

    # -- the running server ------------------------------------------------------------------

    def record_server(self, url: str, pid: int) -> None:
        """Say where the running server listens, for the other verbs."""
        self._write_json("server.json", {"url": url, "pid": pid})

    def server_url(self) -> str | None:
        """The running server's URL as last recorded, or ``None``."""
        found = self._read_json("server.json")
        return str(found["url"]) if isinstance(found, dict) and "url" in found else None

    def forget_server(self) -> None:
        """Remove ``server.json`` (the server stopped)."""
        self._path("server.json").unlink(missing_ok=True)

    def api_key(self) -> str | None:
        """The saved API key (the verbs authenticate to the server with it)."""
        stored = self._read_json("secrets.json")
        return str(stored["api_key"]) if isinstance(stored, dict) else None

    def reset(self) -> None:
        """Delete the whole folder: new key, new secrets, no users."""
        shutil.rmtree(self.directory, ignore_errors=True)
