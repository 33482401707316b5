"""Hostile input on the signed routes and poison events in the sync (issue 10, cases 1-5).

Every body here is correctly signed: the signature proves who sent it, not that it is sane.
Whatever it holds, the webhook and Action routes answer a documented status (never an unhandled
500), the log says why at WARNING without the body, and the same event from the Events API is
recorded as failed while later events go through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from fastapi_workos_authkit import AuthKit, WorkOSEventRecord, WorkOSUser
from fastapi_workos_authkit._recovery import EVENTS_CURSOR, ledger_id
from fastapi_workos_authkit._recovery.workos_api import RetryPolicy, WorkOSClient
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit._sync.events import (
    MAX_EMAIL_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_TYPE_LENGTH,
)
from fastapi_workos_authkit._sync.untrusted_json import MAX_JSON_DEPTH
from fastapi_workos_authkit.testing import factories, signed_delivery
from fastapi_workos_authkit.testing.actions import (
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS
from tests.conftest import ACTION_SECRET, WEBHOOK_SECRET, build_app, deliver

pytestmark = pytest.mark.anyio

LOGGER = "fastapi_workos_authkit"
MARK = b'"__HOSTILE__"'
"""A placeholder string in a payload, replaced by raw hostile JSON after encoding."""


def with_raw(payload: dict[str, Any], raw: bytes) -> bytes:
    """The compact encoding of ``payload`` with its ``"__HOSTILE__"`` value replaced by ``raw``:
    JSON that `json.dumps` would never write (NaN spelled as such, raw surrogate bytes...)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    assert body.count(MARK) == 1
    return body.replace(MARK, raw)


def user_event_with(raw: bytes, **fields: Any) -> bytes:
    """A ``user.created`` body whose ``data.metadata.x`` is ``raw``."""
    return with_raw(factories.user_created(metadata={"x": "__HOSTILE__"}, **fields), raw)


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def ledger_rows(engine: Engine) -> list[WorkOSEventRecord]:
    with Session(engine) as session:
        return list(session.exec(select(WorkOSEventRecord)).all())


def user_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(WorkOSUser)).one())


def warnings_about(caplog: pytest.LogCaptureFixture, route: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and r.getMessage().startswith(route)
    ]


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def assert_refused(
    response: httpx.Response,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    reason: str,
    body: bytes,
) -> None:
    """400, nothing stored, one WARNING naming ``reason`` and not quoting the body."""
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert ledger_rows(engine) == []
    assert user_count(engine) == 0
    (line,) = warnings_about(caplog, "webhook refused")
    assert reason in line
    assert "marcelina" not in line
    assert body[:40] not in line.encode()
    assert_no_errors(caplog)


# -- case 1: deep nesting --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_body",
    [
        pytest.param(lambda: nested(2000), id="2000-levels-top"),
        pytest.param(lambda: user_event_with(nested(10_000)), id="10000-levels-in-metadata"),
        # Deep enough to pass the decoder but past the limit: no recursive code may see it.
        pytest.param(lambda: user_event_with(nested(MAX_JSON_DEPTH - 2)), id="one-past-the-limit"),
    ],
)
async def test_deeply_nested_json_is_400(
    client: httpx.AsyncClient,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    make_body: Any,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    body = make_body()
    response = await deliver(client, body)
    assert_refused(response, engine, caplog, f"nested deeper than {MAX_JSON_DEPTH} levels", body)


async def test_nesting_up_to_the_limit_is_processed(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    # Envelope, data and metadata are three levels; the list fills the rest exactly.
    body = user_event_with(nested(MAX_JSON_DEPTH - 3))
    response = await deliver(client, body)
    assert response.json()["status"] == "applied"
    assert user_count(engine) == 1


# -- case 2: lone surrogates -----------------------------------------------------------------


async def test_lone_surrogates_are_replaced_and_the_event_stored(
    client: httpx.AsyncClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    payload = factories.user_created(
        "user_01SURROGATE",
        first_name="__FIRST__",
        last_name="__LAST__",
        metadata={"__KEY__": "ok", "pair": "__PAIR__"},
    )
    body = json.dumps(payload, separators=(",", ":")).encode()
    body = body.replace(b'"__FIRST__"', b'"A\\ud800"')  # escaped, as JSON.stringify writes it
    body = body.replace(b'"__LAST__"', b'"B\xed\xa0\x80"')  # raw bytes, decoded surrogatepass
    body = body.replace(b'"__KEY__"', b'"k\\udfff"')  # in a key
    # A correctly paired surrogate in raw (CESU-8) bytes is the character it encodes.
    body = body.replace(b'"__PAIR__"', b'"\xed\xa0\xbd\xed\xb8\x80"')
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"
    with Session(engine) as session:
        user = session.exec(select(WorkOSUser)).one()
    assert (user.first_name, user.last_name) == ("A\ufffd", "B\ufffd")
    assert user.user_metadata == {"k\ufffd": "ok", "pair": "\U0001f600"}
    (row,) = ledger_rows(engine)
    assert row.status == "processed"
    assert row.payload["data"]["first_name"] == "A\ufffd"
    assert_no_errors(caplog)


async def test_nul_characters_are_replaced_like_surrogates(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    # PostgreSQL's text columns cannot hold NUL; SQLite can. Both store U+FFFD instead.
    body = with_raw(factories.user_created(first_name="__HOSTILE__"), b'"A\\u0000B"')
    response = await deliver(client, body)
    assert response.status_code == 200, response.text
    with Session(engine) as session:
        assert session.exec(select(WorkOSUser.first_name)).one() == "A\ufffdB"


# -- case 3: non-finite numbers ----------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
async def test_non_finite_numbers_are_400(
    client: httpx.AsyncClient, engine: Engine, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    body = user_event_with(raw)
    response = await deliver(client, body)
    assert_refused(response, engine, caplog, "non-finite number", body)


# -- case 4: values longer than their column -----------------------------------------------


def over_long(kind: str) -> tuple[dict[str, Any], str]:
    if kind == "event id":
        return factories.user_created(event_id="event_" + "E" * (MAX_EVENT_ID_LENGTH - 5)), "id "
    if kind == "user id":
        return factories.user_created("user_" + "U" * (MAX_EVENT_ID_LENGTH - 4)), "data.id "
    if kind == "deleted user id":
        return factories.event("user.deleted", {"id": "user_" + "U" * 60}), "data.id "
    if kind == "session id":
        data = {"object": "session", "id": "session_" + "S" * 57, "user_id": "user_1"}
        return factories.event("session.created", data), "data.id "
    if kind == "email":
        email = "a" * (MAX_EMAIL_LENGTH - len("@example.com") + 1) + "@example.com"
        return factories.user_created(email=email), "data.email "
    assert kind == "event type"
    return factories.event("x" * (MAX_EVENT_TYPE_LENGTH + 1), {"id": "thing_1"}), "event "


@pytest.mark.parametrize(
    "kind", ["event id", "user id", "deleted user id", "session id", "email", "event type"]
)
async def test_values_longer_than_their_column_are_400(
    client: httpx.AsyncClient, engine: Engine, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    payload, field = over_long(kind)
    body, headers = signed_delivery(payload, WEBHOOK_SECRET)
    response = await client.post("/workos/webhook", content=body, headers=headers)
    assert_refused(response, engine, caplog, f"{field}is longer than", body)


async def test_ids_of_exactly_the_column_length_are_processed(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    event_id = "event_" + "E" * (MAX_EVENT_ID_LENGTH - 6)
    user_id = "user_" + "U" * (MAX_EVENT_ID_LENGTH - 5)
    response = await deliver(client, factories.user_created(user_id, event_id=event_id))
    assert response.json() == {"status": "applied", "event_id": event_id}
    assert user_count(engine) == 1


# -- case 5: a client that hangs up mid-body ----------------------------------------------------


async def call_with_disconnect(authkit: AuthKit, path: str, secret: str) -> list[dict[str, Any]]:
    """Drive the real app over ASGI: half the body, then ``http.disconnect``. Returns what the
    app sent (an exception escaping the app would fail the test)."""
    app = build_app(authkit)
    body, headers = signed_delivery(factories.user_created(), secret)
    messages = iter(
        [
            {"type": "http.request", "body": body[:20], "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    async with authkit.lifespan(app):
        await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "secret", "route"),
    [("/workos/webhook", WEBHOOK_SECRET, "webhook"), ("/workos/action", ACTION_SECRET, "action")],
)
async def test_client_disconnect_mid_body_is_one_warning(
    authkit: AuthKit,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    path: str,
    secret: str,
    route: str,
) -> None:
    caplog.set_level(logging.INFO)

    @authkit.action("user_registration")
    def decide(session: Session, action: Any, response: Any) -> Any:
        return response.allow()

    sent = await call_with_disconnect(authkit, path, secret)
    assert sent[0]["status"] == 400
    (line,) = warnings_about(caplog, f"{route} refused")
    assert "disconnected" in line
    assert_no_errors(caplog)
    assert ledger_rows(engine) == []


# -- the Action route with the same bodies -------------------------------------------------


@pytest.fixture
async def action_client(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    seen: list[Any] = []

    @authkit.action("user_registration")
    def decide(session: Session, action: Any, response: Any) -> Any:
        seen.append(action)
        return response.allow()

    app = build_app(authkit)
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        client.seen = seen  # type: ignore[attr-defined]
        yield client


async def post_action(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    body, headers = signed_action_request(body, ACTION_SECRET)
    return await client.post("/workos/action", content=body, headers=headers)


def action_with(raw: bytes) -> bytes:
    return with_raw(user_registration_action(email="ana@acme.test", user_agent="__HOSTILE__"), raw)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(nested(2000), "nested deeper", id="2000-levels"),
        pytest.param(action_with(nested(10_000)), "nested deeper", id="deep-inside"),
        pytest.param(action_with(nested(MAX_JSON_DEPTH)), "nested deeper", id="past-limit"),
        pytest.param(action_with(b"NaN"), "non-finite", id="nan"),
        pytest.param(action_with(b"-Infinity"), "non-finite", id="-infinity"),
        pytest.param(action_with(b"1e400"), "non-finite", id="1e400"),
    ],
)
async def test_action_refuses_deep_and_non_finite_bodies_with_400(
    action_client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    response = await post_action(action_client, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    (line,) = warnings_about(caplog, "action refused")
    assert reason in line
    assert "ana@acme.test" not in line
    assert action_client.seen == []  # type: ignore[attr-defined]
    assert_no_errors(caplog)


async def test_action_with_surrogates_and_long_strings_gets_a_verdict(
    action_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    payload = user_registration_action(
        email="ana@acme.test", first_name="__HOSTILE__", action_id="action_" + "A" * 500
    )
    payload["user_data"]["last_name"] = "L" * 10_000  # the Action stores nothing itself
    # Two high surrogates: an escaped one and a raw one, neither with its low half.
    body = with_raw(payload, b'"A\\ud800\xed\xa0\x80"')
    response = await post_action(action_client, body)
    assert response.status_code == 200, response.text
    assert verify_action_response(response.content, ACTION_SECRET).payload.verdict == "Allow"
    (action,) = action_client.seen  # type: ignore[attr-defined]
    assert action.user_data.first_name == "A\ufffd\ufffd"
    assert_no_errors(caplog)


# -- the same poison events from the Events API ---------------------------------------------


@pytest.fixture
async def kit(engine: Engine) -> AsyncIterator[tuple[AuthKit, FakeWorkOS]]:
    create_tables(engine)
    fake = FakeWorkOS(api_key="sk_test_key")

    async def no_sleep(_delay: float) -> None:
        return None

    kit = AuthKit(
        api_key="sk_test_key",
        webhook_secret=WEBHOOK_SECRET,
        api_base_url="https://api.workos.test",
        engine=engine,
        http_transport=fake.transport(),
    )
    kit.workos_api = WorkOSClient(
        base_url="https://api.workos.test",
        api_key="sk_test_key",
        transport=fake.transport(),
        retry=RetryPolicy(attempts=2),
        sleep=no_sleep,
    )
    yield kit, fake
    await kit.shutdown()


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


POISON: dict[str, tuple[dict[str, Any], str]] = {
    "nan": ({"metadata": {"x": float("nan")}}, "non-finite number"),
    "infinity": ({"metadata": {"x": float("inf")}}, "non-finite number"),
    # Past the limit, yet shallow enough for the API client's decoder.
    "deep": ({"metadata": {"x": deep(MAX_JSON_DEPTH + 10)}}, "nested deeper"),
    "long user id": ({"id": "user_" + "U" * 60}, "data.id is longer than"),
    "long email": ({"email": "a" * MAX_EMAIL_LENGTH + "@example.com"}, "data.email is longer"),
    "long event id": ({}, "id is longer than"),
}


@pytest.mark.parametrize("kind", list(POISON))
async def test_sync_events_records_a_poison_event_and_moves_on(
    kit: tuple[AuthKit, FakeWorkOS],
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    authkit, fake = kit
    fields, reason = POISON[kind]
    before = fake.create_user("user_01BEFORE")
    user = factories.user("user_01POISON")
    user.update(fields)
    event_id = "event_" + "P" * 80 if kind == "long event id" else None
    poison = fake.add_event("user.created", user, event_id=event_id)
    after = fake.create_user("user_01AFTER")
    last_event = fake.events[-1]["id"]

    result = await authkit.sync_events()
    recorded_as = ledger_id(poison["id"])
    assert (result.fetched, result.processed, result.failed) == (3, 2, 1)
    assert result.failed_event_ids == [recorded_as]
    assert result.cursor == last_event
    with Session(engine) as session:
        users = set(session.exec(select(WorkOSUser.id)).all())
    assert users == {before["id"], after["id"]}
    rows = {row.id: row for row in ledger_rows(engine)}
    assert rows[recorded_as].status == "failed"
    assert reason in (rows[recorded_as].last_error or "")
    assert rows[recorded_as].payload["id"] == poison["id"]  # the whole id, even when shortened
    (line,) = [m for m in warnings_about(caplog, "event ") if "invalid" in m]
    assert reason in line
    assert "@example.com" not in line
    assert_no_errors(caplog)

    again = await authkit.sync_events()
    assert (again.fetched, again.failed, again.cursor) == (0, 0, last_event)
    status = await authkit.sync_status()
    assert status.cursors[EVENTS_CURSOR] == last_event
    assert [f.event_id for f in status.last_failures] == [recorded_as]
    assert status.last_failures[0].event_type == "user.created"
    replay = await authkit.replay_failed()
    assert replay.replayed == 1
    assert (await authkit.replay_failed()).replayed <= 1  # it ends, run after run


async def test_sync_events_stores_surrogates_replaced(
    kit: tuple[AuthKit, FakeWorkOS], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    authkit, fake = kit
    # json.dumps writes a lone surrogate as a \\ud800 escape, as JSON.stringify does.
    fake.create_user("user_01SURROGATE", first_name="A\ud800", metadata={"k\udfff": "v"})
    fake.create_user("user_01AFTER")
    result = await authkit.sync_events()
    assert (result.processed, result.failed, result.cursor) == (2, 0, fake.events[-1]["id"])
    with Session(engine) as session:
        user = session.get(WorkOSUser, "user_01SURROGATE")
    assert user is not None
    assert (user.first_name, user.user_metadata) == ("A\ufffd", {"k\ufffd": "v"})
    assert_no_errors(caplog)
