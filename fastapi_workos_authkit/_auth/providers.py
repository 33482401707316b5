"""Auth-config providers: who may issue access tokens, and where their signing keys live.

One list serves two readers. `auth_config_providers()` hands it to other services in the shape
Convex's ``auth.config.ts`` uses (``type, issuer, algorithm, jwks, applicationID``), and the token
verifier is built from the very same list: its issuer allow-list, its JWKS URLs and its audience.
Change the list, and both follow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._config import DEFAULT_API_BASE_URL, DEFAULT_API_HOSTNAME
from .._exceptions import ConfigurationError

_CLIENT_ID_HELP = (
    "WORKOS_CLIENT_ID is not set, and the auth-config providers need it: copy the Client ID "
    "from the WorkOS dashboard (API Keys page, 'Client ID'), then set WORKOS_CLIENT_ID in the "
    "environment or pass client_id=..."
)


@dataclass(frozen=True)
class AuthProvider:
    """One trusted token issuer: ``customJwt`` with RS256 keys served as a JWKS.

    Attributes:
        issuer: The exact ``iss`` value, as emitted (the verifier also accepts it with or
            without a trailing slash).
        jwks: The URL of the issuer's JSON Web Key Set.
        application_id: The expected audience (the WorkOS client id), emitted as
            ``applicationID``; ``None`` leaves it out, as the seed does for its second entry.
        type: Always ``customJwt`` for WorkOS.
        algorithm: Always ``RS256`` for WorkOS.
    """

    issuer: str
    jwks: str
    application_id: str | None = None
    type: str = "customJwt"
    algorithm: str = "RS256"

    def __post_init__(self) -> None:
        if self.algorithm != "RS256":
            raise ConfigurationError(
                f"Only RS256 providers are supported (got {self.algorithm!r} for {self.issuer})."
            )
        for name, value in (("issuer", self.issuer), ("jwks", self.jwks)):
            if not value.startswith(("https://", "http://")):
                raise ConfigurationError(f"A provider's {name} must be an http(s) URL: {value!r}")

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> AuthProvider:
        """Build a provider from the dict shape (``issuer``, ``jwks``, ``applicationID``...)."""
        try:
            return cls(
                issuer=str(value["issuer"]),
                jwks=str(value["jwks"]),
                application_id=value.get("applicationID"),
                type=str(value.get("type", "customJwt")),
                algorithm=str(value.get("algorithm", "RS256")),
            )
        except KeyError as exc:
            raise ConfigurationError(f"A provider needs {exc.args[0]!r}") from None

    def as_dict(self) -> dict[str, str]:
        """The provider in the seed's shape: ``type, issuer, algorithm, jwks[, applicationID]``."""
        out = {
            "type": self.type,
            "issuer": self.issuer,
            "algorithm": self.algorithm,
            "jwks": self.jwks,
        }
        if self.application_id is not None:
            out["applicationID"] = self.application_id
        return out


ProviderLike = AuthProvider | Mapping[str, Any]
"""An `AuthProvider`, or the same thing as a dict in the seed's shape."""


def workos_providers(client_id: str, api_hostname: str, api_base_url: str) -> list[AuthProvider]:
    """The two providers of one WorkOS client: the bare host issuer, then ``/user_management/``.

    ``api_hostname`` names the issuer host (``api.workos.com`` or a custom auth domain; a
    scheme and trailing slash are tolerated). ``api_base_url`` is where the JWKS is fetched
    from: ``https://api.workos.com`` even with a custom auth domain, as in the seed, and
    pointable elsewhere for tests and emulators. The first provider's ``applicationID`` (the
    client id) is the audience the verifier accepts.
    """
    host = _bare_host(api_hostname)
    jwks = f"{api_base_url.rstrip('/')}/sso/jwks/{client_id}"
    return [
        AuthProvider(issuer=f"https://{host}/", jwks=jwks, application_id=client_id),
        AuthProvider(issuer=f"https://{host}/user_management/{client_id}", jwks=jwks),
    ]


def _bare_host(value: str) -> str:
    """``auth.example.com`` from ``auth.example.com``, ``https://auth.example.com/``..."""
    return value.strip().removeprefix("https://").removeprefix("http://").rstrip("/")


def custom_domain_providers(
    client_id: str, domain: str, api_base_url: str = DEFAULT_API_BASE_URL
) -> list[AuthProvider]:
    """The providers for a WorkOS custom auth domain (``auth.example.com``).

    The tokens name the custom domain as issuer; the signing keys are still WorkOS's, served at
    ``{api_base_url}/sso/jwks/<client_id>``.
    """
    return workos_providers(client_id, domain, api_base_url)


def coerce_providers(providers: Iterable[ProviderLike]) -> tuple[AuthProvider, ...]:
    """Accept providers as objects or seed-shaped dicts."""
    return tuple(
        p if isinstance(p, AuthProvider) else AuthProvider.from_mapping(p) for p in providers
    )


def auth_config_providers(
    client_id: str | None = None, api_hostname: str | None = None
) -> list[dict[str, str]]:
    """The auth-config providers for a WorkOS client, in the shape Convex's auth config uses.

    Needs only the client id (``WORKOS_CLIENT_ID``), never a secret. ``api_hostname`` falls back
    to ``WORKOS_API_HOSTNAME``, then ``api.workos.com``; a custom auth domain replaces the host
    of the issuers, while the JWKS stays at ``https://api.workos.com/sso/jwks/<client_id>``.

    ```pycon
    >>> auth_config_providers("client_123")[1]["issuer"]
    'https://api.workos.com/user_management/client_123'
    ```

    Raises:
        ConfigurationError: no client id was given and ``WORKOS_CLIENT_ID`` is not set.
    """
    client_id = client_id or os.environ.get("WORKOS_CLIENT_ID") or None
    if not client_id:
        raise ConfigurationError(_CLIENT_ID_HELP)
    host = api_hostname or os.environ.get("WORKOS_API_HOSTNAME") or DEFAULT_API_HOSTNAME
    return [p.as_dict() for p in workos_providers(client_id, host, DEFAULT_API_BASE_URL)]
