"""Ways to configure `AuthKit`, shown in the configuration guide and run by tests/test_docs.py."""

import logging

from fastapi_workos_authkit import AuthKit, AuthKitSettings, make_engine


# --8<-- [start:environment]
def from_the_environment() -> AuthKit:
    # WORKOS_CLIENT_ID, WORKOS_API_KEY, WORKOS_WEBHOOK_SECRET, WORKOS_ACTION_SECRET,
    # WORKOS_API_HOSTNAME, AUTHKIT_DATABASE_URL (and AUTHKIT_<OPTION> for every other option)
    # are read here; none is required yet.
    return AuthKit()


# --8<-- [end:environment]


# --8<-- [start:explicit]
def explicit(webhook_secret: str, database_url: str) -> AuthKit:
    return AuthKit(
        webhook_secret=webhook_secret,
        database_url=database_url,  # "postgresql://user:password@host/db" uses psycopg 3
        prefix="/auth/workos",  # routes: /auth/workos/webhook, /auth/workos/action
        webhook_tolerance=300,  # seconds of clock skew accepted on signatures
        max_body_size=256 * 1024,  # larger bodies are refused with 413
    )


# --8<-- [end:explicit]


# --8<-- [start:settings]
def from_a_settings_object() -> AuthKit:
    # One object holds the options (here: the environment, then two explicit values); the
    # keywords of AuthKit(...) may still change some of them.
    settings = AuthKitSettings(prefix="/auth/workos", action_timeout=3)
    return AuthKit(settings, unhandled_action="allow")


# --8<-- [end:settings]


# --8<-- [start:engine]
def sharing_the_apps_engine(database_url: str) -> AuthKit:
    # One engine (one connection pool) for the app's tables and the workos_* tables.
    engine = make_engine(database_url, pool_size=10)
    return AuthKit(engine=engine)


# --8<-- [end:engine]


# --8<-- [start:logging]
def show_debug_logs() -> None:
    # The package never sets its logger's level: the app does, like for any library.
    logging.getLogger("fastapi_workos_authkit").setLevel(logging.DEBUG)


# --8<-- [end:logging]


# --8<-- [start:migrations]
def schema_owned_by_migrations() -> AuthKit:
    # Alembic creates the workos_* tables (`alembic upgrade head`): start-up creates none.
    return AuthKit(create_tables=False)


# --8<-- [end:migrations]
