"""auth_config_providers(): exactly the seed's shape, from the client id alone."""

from __future__ import annotations

import pytest

from fastapi_workos_authkit import (
    AuthKit,
    AuthProvider,
    ConfigurationError,
    auth_config_providers,
    custom_domain_providers,
)

CLIENT_ID = "client_01TESTCLIENT"

SEED = [
    {
        "type": "customJwt",
        "issuer": "https://api.workos.com/",
        "algorithm": "RS256",
        "jwks": f"https://api.workos.com/sso/jwks/{CLIENT_ID}",
        "applicationID": CLIENT_ID,
    },
    {
        "type": "customJwt",
        "issuer": f"https://api.workos.com/user_management/{CLIENT_ID}",
        "algorithm": "RS256",
        "jwks": f"https://api.workos.com/sso/jwks/{CLIENT_ID}",
    },
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKOS_CLIENT_ID", "WORKOS_API_HOSTNAME", "WORKOS_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_module_function_emits_exactly_the_seed() -> None:
    providers = auth_config_providers(CLIENT_ID)
    assert providers == SEED
    assert [list(p) for p in providers] == [list(p) for p in SEED]  # same key order too


def test_module_function_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKOS_CLIENT_ID", CLIENT_ID)
    assert auth_config_providers() == SEED
    monkeypatch.setenv("WORKOS_API_HOSTNAME", "auth.example.com")
    custom = auth_config_providers()
    assert [p["issuer"] for p in custom] == [
        "https://auth.example.com/",
        f"https://auth.example.com/user_management/{CLIENT_ID}",
    ]
    # The keys stay WorkOS's, exactly as in the seed: only the issuer host changes.
    assert {p["jwks"] for p in custom} == {f"https://api.workos.com/sso/jwks/{CLIENT_ID}"}


@pytest.mark.parametrize(
    "hostname",
    [
        "auth.example.com",
        "https://auth.example.com/",
        "http://auth.example.com",
        " auth.example.com/",
    ],
)
def test_the_hostname_may_carry_a_scheme_and_a_slash(hostname: str) -> None:
    providers = auth_config_providers(CLIENT_ID, api_hostname=hostname)
    assert providers[0]["issuer"] == "https://auth.example.com/"
    assert custom_domain_providers(CLIENT_ID, hostname)[0].issuer == "https://auth.example.com/"


def test_a_custom_api_hostname_moves_the_issuers_not_the_jwks() -> None:
    authkit = AuthKit(client_id=CLIENT_ID, api_hostname="auth.example.com")
    providers = authkit.auth_config_providers()
    assert providers == auth_config_providers(CLIENT_ID, api_hostname="auth.example.com")
    assert {s.url for s in authkit.token_verifier.key_sources} == {
        f"https://api.workos.com/sso/jwks/{CLIENT_ID}"
    }
    assert "https://auth.example.com/" in authkit.token_verifier.issuers


def test_no_client_id_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="WORKOS_CLIENT_ID is not set"):
        auth_config_providers()


def test_no_secret_is_needed_and_none_is_emitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKOS_API_KEY", "sk_test_secret_value")
    text = repr(auth_config_providers(CLIENT_ID))
    assert "sk_test" not in text


def test_the_instance_gives_the_same_list_by_default() -> None:
    authkit = AuthKit(client_id=CLIENT_ID)
    assert authkit.auth_config_providers() == SEED


def test_the_instance_builds_jwks_from_its_api_base_url() -> None:
    authkit = AuthKit(client_id=CLIENT_ID, api_base_url="http://localhost:8001/")
    providers = authkit.auth_config_providers()
    assert [p["issuer"] for p in providers] == [p["issuer"] for p in SEED]
    assert {p["jwks"] for p in providers} == {f"http://localhost:8001/sso/jwks/{CLIENT_ID}"}


def test_extra_providers_are_emitted_and_verified() -> None:
    authkit = AuthKit(
        client_id=CLIENT_ID,
        extra_providers=[
            *custom_domain_providers(CLIENT_ID, "https://auth.example.com/"),
            {"issuer": "https://issuer.example.org", "jwks": "https://issuer.example.org/jwks"},
        ],
    )
    providers = authkit.auth_config_providers()
    assert providers[:2] == SEED
    assert providers[2] == {
        "type": "customJwt",
        "issuer": "https://auth.example.com/",
        "algorithm": "RS256",
        "jwks": f"https://api.workos.com/sso/jwks/{CLIENT_ID}",
        "applicationID": CLIENT_ID,
    }
    assert providers[4]["issuer"] == "https://issuer.example.org"
    # One source of truth: the verifier trusts exactly these issuers (with and without "/").
    issuers = authkit.token_verifier.issuers
    for provider in providers:
        assert provider["issuer"] in issuers
        assert provider["issuer"].rstrip("/") in issuers
    assert {s.url for s in authkit.token_verifier.key_sources} == {p["jwks"] for p in providers}
    # ...and the audience it accepts is the list's applicationID.
    assert authkit.token_verifier.audiences == {CLIENT_ID}


def test_providers_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="RS256"):
        AuthProvider(issuer="https://a.example/", jwks="https://a.example/jwks", algorithm="HS256")
    with pytest.raises(ConfigurationError, match="http"):
        AuthProvider(issuer="a.example", jwks="https://a.example/jwks")
    with pytest.raises(ConfigurationError, match="jwks"):
        AuthKit(client_id=CLIENT_ID, extra_providers=[{"issuer": "https://a.example/"}])


def test_verification_needs_the_client_id() -> None:
    with pytest.raises(ConfigurationError, match="WORKOS_CLIENT_ID"):
        _ = AuthKit().token_verifier
