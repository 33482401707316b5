"""The webhook endpoint's status table (issue 2): every row, and nothing written on a rejection."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from fastapi_workos_authkit import (
    AuthKit,
    ConfigurationError,
    WorkOSEventRecord,
    WorkOSUser,
    WorkOSUserTombstone,
)
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit.testing import factories, signed_delivery
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio


def counts(engine: Engine) -> tuple[int, int, int]:
    """Rows in the ledger, the user table and the tombstones."""
    with Session(engine) as session:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(table)).one()
            for table in (WorkOSEventRecord, WorkOSUser, WorkOSUserTombstone)
        )


async def test_success_then_duplicate_answer_200(client: httpx.AsyncClient, engine: Engine) -> None:
    payload = factories.user_created("user_01OK")
    first = await deliver(client, payload)
    second = await deliver(client, payload)
    assert (first.status_code, first.json()["status"]) == (200, "applied")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    assert counts(engine) == (1, 1, 0)


async def test_missing_signature_is_401(client: httpx.AsyncClient, engine: Engine) -> None:
    body = json.dumps(factories.user_created()).encode()
    response = await client.post("/workos/webhook", content=body)
    assert response.status_code == 401
    assert "missing" in response.json()["detail"]
    assert counts(engine) == (0, 0, 0)


async def test_wrong_secret_is_401(client: httpx.AsyncClient, engine: Engine) -> None:
    body, headers = signed_delivery(factories.user_created(), "whsec_someone_else")
    response = await client.post("/workos/webhook", content=body, headers=headers)
    assert response.status_code == 401
    assert counts(engine) == (0, 0, 0)


@pytest.mark.parametrize("age_seconds", [181, -181])
async def test_stale_or_future_timestamp_is_401(
    client: httpx.AsyncClient, engine: Engine, age_seconds: int
) -> None:
    stamp = int((time.time() - age_seconds) * 1000)
    response = await deliver(client, factories.user_created(), timestamp_ms=stamp)
    assert response.status_code == 401
    assert "tolerance" in response.json()["detail"]
    assert counts(engine) == (0, 0, 0)


async def test_pretty_printed_reserialisation_is_401(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    payload = factories.user_created()
    body, headers = signed_delivery(payload, WEBHOOK_SECRET)
    pretty = json.dumps(json.loads(body), indent=2).encode()
    response = await client.post("/workos/webhook", content=pretty, headers=headers)
    assert response.status_code == 401
    assert counts(engine) == (0, 0, 0)


async def test_signature_header_is_matched_case_insensitively(client: httpx.AsyncClient) -> None:
    body, headers = signed_delivery(factories.user_created(), WEBHOOK_SECRET)
    lowered = {"content-type": "application/json", "workos-signature": headers["WorkOS-Signature"]}
    response = await client.post("/workos/webhook", content=body, headers=lowered)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": "event_1"}',
        b'{"id": "event_1", "event": 7, "data": {}, "created_at": "2026-01-15T12:00:00Z"}',
        json.dumps(
            factories.event("user.created", {"id": "user_1", "email": "x@example.com"})
        ).encode(),  # a synced type without its timestamps
        b'{"event": "user.created", "data": {}, "created_at": "2026-01-15T12:00:00Z"}',
        "\ufeff{}".encode(),
    ],
    ids=["not-json", "array", "no-type", "type-not-string", "user-missing-fields", "no-id", "bom"],
)
async def test_verified_but_invalid_event_is_400(
    client: httpx.AsyncClient, engine: Engine, body: bytes
) -> None:
    response = await deliver(client, body)
    assert response.status_code == 400, response.text
    assert counts(engine) == (0, 0, 0)


async def test_invalid_event_message_names_fields_not_values(client: httpx.AsyncClient) -> None:
    payload = factories.event("user.created", {"id": "user_1", "email": "secret@example.com"})
    response = await deliver(client, payload)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "updated_at" in detail
    assert "secret@example.com" not in detail


async def test_oversized_declared_body_is_413(client: httpx.AsyncClient, engine: Engine) -> None:
    big = json.dumps(factories.user_created(padding="x" * (1024 * 1024))).encode()
    response = await deliver(client, big)
    assert response.status_code == 413
    assert counts(engine) == (0, 0, 0)


async def test_oversized_streamed_body_is_refused_without_buffering_it_all(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    sent = 0
    chunk = b"x" * 65536
    total_chunks = 160  # 10 MiB on offer; the server must stop reading after ~1 MiB

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(total_chunks):
            sent += 1
            yield chunk

    # No Content-Length: httpx sends a chunked body, so only the running total can catch it.
    headers = {"WorkOS-Signature": f"t={int(time.time() * 1000)}, v1={'0' * 64}"}
    response = await client.post("/workos/webhook", content=stream(), headers=headers)
    assert response.status_code == 413
    assert sent < total_chunks / 2
    assert counts(engine) == (0, 0, 0)


async def test_body_limit_is_configurable(engine: Engine) -> None:
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine, max_body_size=100)
    async with app_client(authkit) as client:
        response = await deliver(client, factories.user_created())
    assert response.status_code == 413
    assert "100 bytes" in response.json()["detail"]


async def test_event_without_handler_is_accepted_and_recorded(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    payload = factories.event("directory_user.created", {"id": "directory_user_1", "new": [1]})
    response = await deliver(client, payload)
    assert response.status_code == 200
    with Session(engine) as session:
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert record.status == "processed"
        assert record.event_type == "directory_user.created"
        assert record.payload == payload


async def test_handler_that_raises_rolls_back_and_records_the_failure(
    client: httpx.AsyncClient, engine: Engine, authkit: AuthKit, caplog: pytest.LogCaptureFixture
) -> None:
    broken = True

    @authkit.on("user.created")
    def flaky(session: Session, event: Any) -> None:
        if broken:
            raise RuntimeError("the app's mirror is not ready")

    payload = factories.user_created("user_01FLAKY", email="flaky@example.com")
    with caplog.at_level(logging.INFO, logger="fastapi_workos_authkit"):
        response = await deliver(client, payload)
    assert response.status_code == 500
    assert "flaky@example.com" not in caplog.text
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_01FLAKY") is None  # the upsert rolled back too
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert (record.status, record.attempts) == ("failed", 1)
        assert record.last_error == "RuntimeError: the app's mirror is not ready"

    assert (await deliver(client, payload)).status_code == 500
    broken = False
    retried = await deliver(client, payload)
    assert (retried.status_code, retried.json()["status"]) == (200, "applied")
    with Session(engine) as session:
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert (record.status, record.attempts, record.last_error) == ("processed", 3, None)
        assert session.get(WorkOSUser, "user_01FLAKY") is not None
    assert (await deliver(client, payload)).json()["status"] == "duplicate"


async def test_unreachable_database_is_503(backend: str, tmp_path: Any) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/no/such/folder/authkit.db"
    else:
        url = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=make_engine(url))
    app = FastAPI()  # no lifespan: the tables cannot be created on a database that is down
    app.include_router(authkit.router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await deliver(client, factories.user_created())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"


async def test_router_without_webhook_secret_names_the_variable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKOS_WEBHOOK_SECRET", raising=False)
    authkit = AuthKit(engine=engine)  # constructing never demands a secret
    with pytest.raises(ConfigurationError, match=r"WORKOS_WEBHOOK_SECRET.*Signing secret"):
        authkit.router()


def test_construction_demands_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKOS_CLIENT_ID", "WORKOS_API_KEY", "WORKOS_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    authkit = AuthKit()
    assert authkit.settings.client_id is None
    assert authkit.router(webhooks=False).routes == []


def test_options_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKOS_CLIENT_ID", "client_env")
    monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "whsec_env")
    monkeypatch.setenv("WORKOS_API_HOSTNAME", "auth.example.com")
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", "sqlite:///env.db")
    settings = AuthKit(client_id="client_explicit").settings
    assert settings.client_id == "client_explicit"
    assert settings.require_webhook_secret() == "whsec_env"
    assert settings.api_hostname == "auth.example.com"
    # REST and JWKS stay on WorkOS's API host: only the token issuer moves to a custom domain.
    assert settings.api_base_url == "https://api.workos.com"
    assert settings.database_url == "sqlite:///env.db"
    assert "whsec_env" not in repr(settings)


def test_missing_api_key_error_says_where_to_find_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKOS_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match=r"WORKOS_API_KEY.*API Keys"):
        _ = AuthKit().workos_api


@pytest.mark.parametrize(
    "options",
    [{"webhook_tolerance": 0}, {"max_body_size": 0}, {"prefix": "workos/"}],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AuthKit(**options)


async def test_custom_prefix(engine: Engine) -> None:
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine, prefix="/hooks/workos")
    async with app_client(authkit) as client:
        body, headers = signed_delivery(factories.user_created(), WEBHOOK_SECRET)
        response = await client.post("/hooks/workos/webhook", content=body, headers=headers)
    assert response.status_code == 200


async def test_a_huge_signature_timestamp_is_401(client: httpx.AsyncClient) -> None:
    body = json.dumps(factories.user_created()).encode()
    headers = {"WorkOS-Signature": f"t={'9' * 400}, v1={'a' * 64}"}
    response = await client.post("/workos/webhook", content=body, headers=headers)
    assert response.status_code == 401


async def test_a_handler_meeting_a_database_outage_answers_503(
    client: httpx.AsyncClient, authkit: AuthKit, engine: Engine
) -> None:
    @authkit.on("session.created")
    def query_a_database_that_is_down(session: Session, event: Any) -> None:
        # What a handler's query raises when the server has gone away mid-transaction.
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    payload = factories.session_created("user_01")
    response = await deliver(client, payload)
    assert response.status_code == 503
    with Session(engine) as session:
        assert session.get(WorkOSEventRecord, payload["id"]) is None  # an outage, not a failure
