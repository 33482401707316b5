"""`AuthKitSettings`: each option declared once; read from keywords, an object or the env."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fastapi_workos_authkit import AuthKit, AuthKitSettings, ConfigurationError

WORKOS_VARIABLES = (
    "WORKOS_CLIENT_ID",
    "WORKOS_API_KEY",
    "WORKOS_WEBHOOK_SECRET",
    "WORKOS_ACTION_SECRET",
    "WORKOS_API_HOSTNAME",
    "WORKOS_API_BASE_URL",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WORKOS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_settings_object_configures_authkit() -> None:
    settings = AuthKitSettings(client_id="client_obj", prefix="/auth", action_timeout=2)
    authkit = AuthKit(settings)
    assert authkit.settings is settings
    assert authkit.router(webhooks=False).prefix == "/auth"


def test_keywords_change_a_settings_object_and_are_validated() -> None:
    settings = AuthKitSettings(client_id="client_obj", webhook_secret="whsec_obj")
    authkit = AuthKit(settings, prefix="/other", action_tolerance=10)
    assert authkit.settings.prefix == "/other"
    assert authkit.settings.action_tolerance == 10
    assert authkit.settings.client_id == "client_obj"
    assert authkit.settings.require_webhook_secret() == "whsec_obj"
    assert settings.prefix == "/workos"  # the object given is left as it was
    with pytest.raises(ConfigurationError, match="prefix must start with '/'"):
        AuthKit(settings, prefix="other")


def test_an_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'webhook_tolerence'"):
        AuthKit(webhook_tolerence=30)
    with pytest.raises(TypeError, match="'webhook_tolerence'"):
        AuthKit(AuthKitSettings(), webhook_tolerence=30)


def test_a_wrongly_typed_value_is_a_configuration_error_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match=r"max_body_size: .*integer.*'lots'") as error:
        AuthKit(max_body_size="lots")
    assert "AUTHKIT_MAX_BODY_SIZE" in str(error.value)
    with pytest.raises(ConfigurationError, match="unhandled_action"):
        AuthKitSettings(unhandled_action="maybe")  # type: ignore[arg-type]


def test_an_invalid_environment_value_names_the_option_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKIT_ACTION_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match=r"action_timeout: .*AUTHKIT_ACTION_TIMEOUT"):
        AuthKit()
    monkeypatch.setenv("AUTHKIT_ACTION_TIMEOUT", "0")
    with pytest.raises(ConfigurationError, match="action_timeout must be a positive number"):
        AuthKit()


def test_options_without_a_workos_variable_read_authkit_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKIT_PREFIX", "/hooks")
    monkeypatch.setenv("AUTHKIT_CREATE_TABLES", "false")
    monkeypatch.setenv("AUTHKIT_EVENTS_POLL_INTERVAL", "300")
    monkeypatch.setenv("AUTHKIT_EVENTS_RANGE_START", "86400")
    monkeypatch.setenv("AUTHKIT_MAX_SYNC_ACTION_HANDLERS", "7")
    monkeypatch.setenv("AUTHKIT_ADDITIONAL_EVENT_TYPES", '["organization.created"]')
    authkit = AuthKit()
    assert authkit.settings.prefix == "/hooks"
    assert authkit.settings.create_tables is False
    assert authkit.events_poll_interval == 300
    assert authkit.events_range_start == timedelta(days=1)  # seconds, not a Unix timestamp
    assert authkit.sync_action_slots.size == 7
    assert authkit.settings.additional_event_types == ("organization.created",)
    assert AuthKit(prefix="/explicit").settings.prefix == "/explicit"  # explicit wins


def test_an_option_with_a_workos_variable_is_read_from_that_one_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKIT_CLIENT_ID", "client_wrong_name")
    monkeypatch.setenv("CLIENT_ID", "client_wrong_name")
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-elses/db")
    settings = AuthKit().settings
    assert settings.client_id is None
    assert settings.database_url == "sqlite:///./workos_authkit.db"


def test_api_base_url_falls_back_to_workos_api_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKOS_API_BASE_URL", "http://127.0.0.1:8787/")
    assert AuthKit().settings.api_base_url == "http://127.0.0.1:8787"
    assert AuthKit(api_base_url="https://api.workos.test").settings.api_base_url == (
        "https://api.workos.test"
    )


def test_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKOS_API_HOSTNAME", "")
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "")
    settings = AuthKit(client_id="").settings
    assert settings.api_hostname == "api.workos.com"
    assert settings.client_id is None
    with pytest.raises(ConfigurationError, match="WORKOS_WEBHOOK_SECRET is not set"):
        settings.require_webhook_secret()


def test_secrets_never_show_in_a_repr_or_a_dump() -> None:
    secrets = {"api_key": "sk_hidden", "webhook_secret": "whsec_hidden", "action_secret": "as_x"}
    settings = AuthKit(client_id="client_shown", **secrets).settings
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "client_shown" in shown
    for value in secrets.values():
        assert value not in shown
    assert settings.require_api_key("a test") == "sk_hidden"
    with pytest.raises(ConfigurationError) as error:
        AuthKit(webhook_secret=42)
    assert "42" not in str(error.value)  # an invalid secret is not echoed either


def test_the_token_verifier_takes_its_slice_of_the_settings() -> None:
    authkit = AuthKit(client_id="client_01T", token_leeway=20, jwks_timeout=2, token_cache_size=0)
    options = authkit.token_verifier.options
    assert (options.token_leeway, options.jwks_timeout, options.token_cache_size) == (20, 2, 0)
    assert options.jwks_cache_ttl == 600
