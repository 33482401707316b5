"""WorkOS Actions end to end: signed requests in, signed verdicts out, every failure mode."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import Engine, event
from sqlmodel import Field, Session, SQLModel, select

from fastapi_workos_authkit import (
    ActionResponse,
    ActionSession,
    ActionVerdict,
    AuthenticationAction,
    AuthKit,
    ConfigurationError,
    SignatureError,
    UserRegistrationAction,
)
from fastapi_workos_authkit._routes.actions import (
    MAX_SYNC_ACTION_HANDLERS,
    sign_action_response,
)
from fastapi_workos_authkit.testing import (
    authentication_action,
    factories,
    invitation,
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from tests.conftest import ACTION_SECRET, WEBHOOK_SECRET

pytestmark = pytest.mark.anyio

NOW = 1768478400.0  # the signature vectors' time, 2026-01-15 12:00 UTC
NOW_MS = 1768478400000
LOGGER = "fastapi_workos_authkit"


class ActionAuditRow(SQLModel, table=True):
    """What a handler records; used to prove what is and is not committed."""

    __tablename__ = "test_action_audit"

    id: int | None = Field(default=None, primary_key=True)
    action_id: str
    note: str


class SignupDomain(SQLModel, table=True):
    """Domains allowed to sign up; read by a handler."""

    __tablename__ = "test_signup_domains"

    domain: str = Field(primary_key=True)


TEST_TABLES = [ActionAuditRow.__table__, SignupDomain.__table__]  # type: ignore[attr-defined]

MakeKit = Callable[..., AuthKit]


@pytest.fixture
def make_kit(engine: Engine) -> MakeKit:
    """Build an AuthKit on the test database with the clock fixed at the vectors' time."""

    def make(**options: Any) -> AuthKit:
        options.setdefault("action_secret", ACTION_SECRET)
        options.setdefault("webhook_secret", WEBHOOK_SECRET)
        options.setdefault("clock", lambda: NOW)
        return AuthKit(engine=engine, **options)

    return make


@asynccontextmanager
async def running(authkit: AuthKit, **router_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A real app around ``authkit``, built only now: after the test registered its handlers."""
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router(**router_options))
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        await anyio.to_thread.run_sync(
            lambda: SQLModel.metadata.create_all(authkit.engine, tables=TEST_TABLES)
        )
        yield client


async def post_action(
    client: httpx.AsyncClient,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = ACTION_SECRET,
    timestamp_ms: int = NOW_MS,
) -> httpx.Response:
    """POST a signed Action request, as WorkOS would."""
    body, headers = signed_action_request(payload, secret, timestamp_ms=timestamp_ms)
    return await client.post("/workos/action", content=body, headers=headers)


def audit_notes(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [row.note for row in session.exec(select(ActionAuditRow)).all()]


def record(session: Session, action_id: str, note: str) -> None:
    """Write an audit row and flush it, so the database really holds uncommitted work."""
    session.add(ActionAuditRow(action_id=action_id, note=note))
    session.flush()


# --- Both action types, with and without the optional objects --------------------------------


@pytest.mark.parametrize("with_optionals", [False, True], ids=["bare", "with-invitation"])
async def test_user_registration_allowed_and_denied(
    make_kit: MakeKit, engine: Engine, with_optionals: bool
) -> None:
    authkit = make_kit()
    seen: list[UserRegistrationAction] = []

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        seen.append(action)
        if action.user_data.email.endswith("@gmail.com"):
            return response.deny("Please use your corporate email address")
        return response.allow()

    optionals: dict[str, Any] = {}
    if with_optionals:
        optionals = {
            "invitation": invitation("ana@acme.test", organization_id="org_01ACME"),
            "device_fingerprint": "fp_7f3a",
        }
    async with running(authkit) as client:
        allowed = await post_action(
            client, user_registration_action("ana@acme.test", action_id="action_ok", **optionals)
        )
        denied = await post_action(
            client, user_registration_action("bob@gmail.com", action_id="action_no", **optionals)
        )

    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["content-type"] == "application/json"
    assert allowed.json() == {
        "object": "user_registration_action_response",
        "payload": {"timestamp": NOW_MS, "verdict": "Allow"},
        "signature": allowed.json()["signature"],
    }
    assert denied.json()["payload"] == {
        "timestamp": NOW_MS,
        "verdict": "Deny",
        "error_message": "Please use your corporate email address",
    }
    for reply in (allowed, denied):
        verify_action_response(reply.content, ACTION_SECRET)

    first = seen[0]
    assert first.id == "action_ok"
    assert first.user_data.email == "ana@acme.test"
    assert first.user_data.first_name == "Marcelina"
    assert first.ip_address == "198.51.100.7"
    if with_optionals:
        assert first.invitation is not None
        assert first.invitation.organization_id == "org_01ACME"
        assert first.invitation.state == "pending"
        assert first.device_fingerprint == "fp_7f3a"
    else:
        assert first.invitation is None
        assert first.device_fingerprint is None


@pytest.mark.parametrize("with_optionals", [False, True], ids=["bare", "with-organization"])
async def test_authentication_allowed_and_denied(make_kit: MakeKit, with_optionals: bool) -> None:
    authkit = make_kit()
    seen: list[AuthenticationAction] = []

    @authkit.action("authentication")
    async def authentication(
        session: Session, action: AuthenticationAction, response: ActionResponse
    ) -> ActionVerdict:
        seen.append(action)
        if action.user.email_verified:
            return response.allow()
        return response.deny("Verify your email address first")

    optionals: dict[str, Any] = {}
    if with_optionals:
        org = factories.organization_created("Acme", organization_id="org_01ACME")["data"]
        membership = factories.organization_membership_created("user_01A", "org_01ACME")["data"]
        optionals = {
            "organization": org,
            "organization_membership": membership,
            "device_fingerprint": "fp_7f3a",
            "issuer": "https://auth.acme.test",
        }
    verified = factories.user("user_01A", email="ana@acme.test")
    unverified = factories.user("user_01B", email="bob@acme.test", email_verified=False)
    async with running(authkit) as client:
        allowed = await post_action(client, authentication_action(verified, **optionals))
        denied = await post_action(client, authentication_action(unverified, **optionals))

    assert allowed.status_code == 200, allowed.text
    assert verify_action_response(allowed.content, ACTION_SECRET).model_dump() == {
        "object": "authentication_action_response",
        "payload": {"timestamp": NOW_MS, "verdict": "Allow", "error_message": None},
        "signature": allowed.json()["signature"],
    }
    assert "error_message" not in allowed.json()["payload"]
    assert denied.json()["object"] == "authentication_action_response"
    assert denied.json()["payload"]["error_message"] == "Verify your email address first"

    action = seen[0]
    assert action.user.id == "user_01A"
    assert action.user.created_at.tzinfo is not None
    if with_optionals:
        assert action.organization is not None
        assert action.organization.name == "Acme"
        assert action.organization_membership is not None
        assert action.organization_membership.organization_id == "org_01ACME"
        assert action.issuer == "https://auth.acme.test"
    else:
        assert action.organization is None
        assert action.organization_membership is None
        assert action.issuer is None


async def test_unknown_fields_are_tolerated_and_kept(make_kit: MakeKit) -> None:
    authkit = make_kit()
    seen: list[UserRegistrationAction] = []

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        seen.append(action)
        return response.allow()

    payload = user_registration_action("ana@acme.test", risk_score={"level": "low"})
    payload["user_data"]["phone_number"] = "+15550100"
    async with running(authkit) as client:
        reply = await post_action(client, payload)
    assert reply.json()["payload"]["verdict"] == "Allow"
    assert seen[0].model_extra == {"risk_score": {"level": "low"}}
    assert seen[0].user_data.model_extra == {"phone_number": "+15550100"}


# --- The signed reply ------------------------------------------------------------------------

SPEC_VECTORS = [
    (None, "a095cc63727ac5c137656bf3931116b0765d680f3b36932eeee9fc45e5ceed88"),
    (
        "Please use a work email address",
        "91f5fa08059f306905d4974d3ba7e7a240c4167c97b7918329b45cb696aba182",
    ),
    (
        "Zugriff verweigert \u2013 Büro",  # an en dash
        "dd1b84bf85862d420f964dfc92609de6ccbb6a31f0b3629f330b79aa5c1c8880",
    ),
]


@pytest.mark.parametrize(("message", "expected"), SPEC_VECTORS, ids=["allow", "deny", "unicode"])
async def test_reply_matches_the_spec_vectors(
    make_kit: MakeKit, message: str | None, expected: str
) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow() if message is None else response.deny(message)

    async with running(authkit) as client:
        reply = await post_action(client, user_registration_action())

    payload = {"timestamp": NOW_MS, "verdict": "Allow" if message is None else "Deny"}
    if message is not None:
        payload["error_message"] = message
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    assert (
        reply.content
        == (
            '{"object":"user_registration_action_response",'
            f'"payload":{compact},"signature":"{expected}"}}'
        ).encode()
    )


@pytest.mark.parametrize(("message", "expected"), SPEC_VECTORS, ids=["allow", "deny", "unicode"])
def test_signing_function_matches_the_spec_vectors(message: str | None, expected: str) -> None:
    response = ActionResponse("authentication")
    verdict = response.allow() if message is None else response.deny(message)
    body = sign_action_response(verdict, ACTION_SECRET, timestamp_ms=NOW_MS)
    assert json.loads(body)["signature"] == expected


async def test_signature_recomputed_from_the_bytes_sent(make_kit: MakeKit) -> None:
    authkit = make_kit(clock=lambda: NOW + 1.5)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.deny('Accès refusé: 日本語 "quoted" \\ slash')

    async with running(authkit) as client:
        reply = await post_action(client, user_registration_action())

    raw = reply.content
    start = raw.index(b'"payload":') + len(b'"payload":')
    end = raw.index(b',"signature":')
    payload_bytes = raw[start:end]
    timestamp = json.loads(payload_bytes)["timestamp"]
    assert timestamp == NOW_MS + 1500
    mac = hmac.new(
        ACTION_SECRET.encode(), str(timestamp).encode() + b"." + payload_bytes, hashlib.sha256
    )
    assert reply.json()["signature"] == mac.hexdigest()
    # Non-ASCII characters are written raw, as JavaScript's JSON.stringify writes them.
    assert "日本語".encode() in payload_bytes
    assert b"\\u" not in payload_bytes


def test_verify_action_response_refuses_tampered_replies() -> None:
    body = sign_action_response(
        ActionResponse("authentication").deny("No"), ACTION_SECRET, timestamp_ms=NOW_MS
    )
    assert verify_action_response(body, ACTION_SECRET).payload.verdict == "Deny"
    with pytest.raises(SignatureError):
        verify_action_response(body, "another_secret")
    with pytest.raises(SignatureError):
        verify_action_response(body.replace(b'"Deny"', b'"Allow"'), ACTION_SECRET)
    with pytest.raises(SignatureError):
        verify_action_response(json.dumps(json.loads(body), indent=2).encode(), ACTION_SECRET)


# --- Handlers: I/O and the database -------------------------------------------------------


async def test_async_handler_awaits_network_io(make_kit: MakeKit) -> None:
    authkit = make_kit()

    @authkit.action("authentication")
    async def authentication(
        session: Session, action: AuthenticationAction, response: ActionResponse
    ) -> ActionVerdict:
        async with httpx.AsyncClient() as http:
            risk = await http.post(
                "https://risk.example.test/score", json={"ip": action.ip_address}
            )
        if risk.json()["score"] > 50:
            return response.deny("This sign-in looks unusual; contact support")
        return response.allow()

    with respx.mock(assert_all_called=True) as risk_api:
        route = risk_api.post("https://risk.example.test/score").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"score": 90 if b"203.0.113.9" in request.content else 10}
            )
        )
        async with running(authkit) as client:
            calm = await post_action(client, authentication_action(ip_address="198.51.100.7"))
            risky = await post_action(client, authentication_action(ip_address="203.0.113.9"))
    assert route.call_count == 2
    assert calm.json()["payload"]["verdict"] == "Allow"
    assert risky.json()["payload"] == {
        "timestamp": NOW_MS,
        "verdict": "Deny",
        "error_message": "This sign-in looks unusual; contact support",
    }


async def test_sync_handler_reads_the_database(make_kit: MakeKit, engine: Engine) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        domain = action.user_data.email.rpartition("@")[2]
        if session.get(SignupDomain, domain) is None:
            return response.deny("Your organization is not registered")
        return response.allow()

    async with running(authkit) as client:
        with Session(engine) as session:
            session.add(SignupDomain(domain="acme.test"))
            session.commit()
        member = await post_action(client, user_registration_action("ana@acme.test"))
        stranger = await post_action(client, user_registration_action("eve@evil.test"))
    assert member.json()["payload"]["verdict"] == "Allow"
    assert stranger.json()["payload"]["error_message"] == "Your organization is not registered"


@pytest.mark.parametrize("deny", [False, True], ids=["allow", "deny"])
async def test_writes_of_a_handler_that_returns_a_verdict_are_committed(
    make_kit: MakeKit, engine: Engine, deny: bool
) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        record(session, action.id, "decided")
        return response.deny("No") if deny else response.allow()

    async with running(authkit) as client:
        reply = await post_action(client, user_registration_action())
    assert reply.status_code == 200
    assert audit_notes(engine) == ["decided"]


async def test_concurrent_actions_each_get_their_own_verdict(make_kit: MakeKit) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    async def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        await anyio.lowlevel.checkpoint()  # let the other requests interleave
        return response.deny(action.id)

    replies: dict[str, httpx.Response] = {}
    async with running(authkit) as client:

        async def one(action_id: str) -> None:
            replies[action_id] = await post_action(
                client, user_registration_action(action_id=action_id)
            )

        async with anyio.create_task_group() as group:
            for number in range(20):
                group.start_soon(one, f"action_{number:02d}")
    assert len(replies) == 20
    for action_id, reply in replies.items():
        assert verify_action_response(reply.content, ACTION_SECRET).payload.error_message == (
            action_id
        )


# --- Failure modes -------------------------------------------------------------------------


async def test_handler_that_raises_answers_500_logs_without_personal_data_and_writes_nothing(
    make_kit: MakeKit, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        record(session, action.id, "before the crash")
        raise LookupError(f"no tenant for {action.user_data.email}")

    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with running(authkit) as client:
        reply = await post_action(
            client, user_registration_action("secret.person@acme.test", action_id="action_boom")
        )
    assert reply.status_code == 500
    assert audit_notes(engine) == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "action_boom" in errors[0].getMessage()
    assert "LookupError" in errors[0].getMessage()
    assert all("secret.person" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("result", [None, True, "Allow", {"verdict": "Allow"}])
async def test_handler_that_returns_no_verdict_is_treated_as_a_raise(
    make_kit: MakeKit, engine: Engine, caplog: pytest.LogCaptureFixture, result: object
) -> None:
    authkit = make_kit()

    @authkit.action("authentication")
    async def authentication(
        session: ActionSession, action: AuthenticationAction, response: ActionResponse
    ) -> object:
        await session.run_sync(record, action.id, "forgot to return")
        return result

    caplog.set_level(logging.ERROR, logger=LOGGER)
    async with running(authkit) as client:
        reply = await post_action(client, authentication_action(action_id="action_none"))
    assert reply.status_code == 500
    assert audit_notes(engine) == []
    assert "action_none" in caplog.text
    assert "instead of" in caplog.text or "TypeError" in caplog.text


async def test_async_handler_past_the_time_budget_answers_504_and_writes_nothing(
    make_kit: MakeKit, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    authkit = make_kit(action_timeout=0.05)

    @authkit.action("user_registration")
    async def registration(
        session: ActionSession, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        await session.run_sync(record, action.id, "slow")
        await anyio.sleep(30)
        return response.allow()

    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running(authkit) as client:
        reply = await post_action(client, user_registration_action(action_id="action_slow"))
    assert reply.status_code == 504
    assert audit_notes(engine) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "action_slow" in errors[0]
    assert "action_timeout" in errors[0]


async def test_sync_handler_past_the_time_budget_answers_504_and_is_rolled_back(
    make_kit: MakeKit, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Long enough for the handler's thread to start before the request gives up, even on a
    # loaded machine: this test is about a handler that runs and is then abandoned.
    authkit = make_kit(action_timeout=1.0)
    release = threading.Event()
    rolled_back = threading.Event()

    def on_rollback(connection: object) -> None:
        rolled_back.set()

    event.listen(engine, "rollback", on_rollback)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        record(session, action.id, "slow")
        release.wait(10)
        return response.allow()

    caplog.set_level(logging.ERROR, logger=LOGGER)
    try:
        async with running(authkit) as client:
            reply = await post_action(client, user_registration_action(action_id="action_stuck"))
            assert reply.status_code == 504
            rolled_back.clear()
            # The worker thread cannot be killed; once it returns its writes must be discarded.
            release.set()
            assert await anyio.to_thread.run_sync(rolled_back.wait, 10)
        assert audit_notes(engine) == []
        assert "action_stuck" in caplog.text
    finally:
        release.set()
        event.remove(engine, "rollback", on_rollback)


async def test_abandoned_sync_handlers_are_bounded_and_then_refused_with_503(
    make_kit: MakeKit, caplog: pytest.LogCaptureFixture
) -> None:
    assert make_kit().sync_action_slots.size == MAX_SYNC_ACTION_HANDLERS == 20
    # Long enough for each handler's thread to start before its request gives up, even on a
    # loaded machine (a thread that never started gives its slot back at once).
    authkit = make_kit(action_timeout=1.0, max_sync_action_handlers=2)
    release = threading.Event()
    calls: list[str] = []

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        calls.append(action.id)
        session.exec(select(SignupDomain)).all()  # holds a database connection...
        release.wait(10)  # ...and hangs
        return response.allow()

    slots = authkit.sync_action_slots
    caplog.set_level(logging.ERROR, logger=LOGGER)
    try:
        async with running(authkit) as client:
            for n in range(2):
                reply = await post_action(client, user_registration_action(action_id=f"a_{n}"))
                assert reply.status_code == 504
            # Answered, but their threads still run: their slots are still held.
            assert slots.taken == 2
            reply = await post_action(client, user_registration_action(action_id="a_full"))
            assert reply.status_code == 503
            assert reply.headers["Retry-After"] == "5"
            assert calls == ["a_0", "a_1"]  # refused without running the handler
            assert "2 sync handlers are still running" in caplog.text
            release.set()
            for _ in range(1000):  # the threads end on their own; wait for them
                if slots.taken == 0:
                    break
                await anyio.to_thread.run_sync(threading.Event().wait, 0.01)
            assert slots.taken == 0
            reply = await post_action(client, user_registration_action(action_id="a_after"))
            assert reply.status_code == 200
            assert calls == ["a_0", "a_1", "a_after"]
            assert slots.taken == 0
    finally:
        release.set()


async def test_a_slow_commit_after_a_timely_verdict_still_answers_the_verdict(
    make_kit: MakeKit, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Generous for the handler itself, short next to the commit below.
    authkit = make_kit(action_timeout=0.5)
    commit_started = threading.Event()

    def slow_commit(session: Session) -> None:
        commit_started.set()
        # Longer than the budget: the deadline passes while the commit is under way.
        threading.Event().wait(1.5)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        record(session, action.id, "decided in time")
        return response.allow()

    caplog.set_level(logging.WARNING, logger=LOGGER)
    event.listen(Session, "before_commit", slow_commit)
    try:
        async with running(authkit) as client:
            reply = await post_action(client, user_registration_action())
    finally:
        event.remove(Session, "before_commit", slow_commit)
    # Whichever side of the deadline the commit ends on, the verdict and the writes agree.
    assert commit_started.is_set()
    assert reply.status_code == 200
    assert reply.json()["payload"]["verdict"] == "Allow"
    assert audit_notes(engine) == ["decided in time"]
    assert "passed during the commit" in caplog.text


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "webhook-secret", "missing", "garbled", "stale", "future", "seconds", "body"],
)
async def test_unverified_requests_answer_401_without_calling_the_handler(
    make_kit: MakeKit, engine: Engine, tamper: str
) -> None:
    authkit = make_kit()
    calls: list[str] = []

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        calls.append(action.id)
        record(session, action.id, "called")
        return response.allow()

    payload = user_registration_action()
    secret, stamp = ACTION_SECRET, NOW_MS
    if tamper == "wrong-secret":
        secret = "not_the_action_secret"
    elif tamper == "webhook-secret":
        secret = WEBHOOK_SECRET
    elif tamper == "stale":
        stamp = NOW_MS - 31_000
    elif tamper == "future":
        stamp = NOW_MS + 31_000
    elif tamper == "seconds":
        stamp = NOW_MS // 1000
    body, headers = signed_action_request(payload, secret, timestamp_ms=stamp)
    if tamper == "missing":
        del headers["WorkOS-Signature"]
    elif tamper == "garbled":
        headers["WorkOS-Signature"] = "v1=abc, t=now"
    elif tamper == "body":
        body = json.dumps(json.loads(body), indent=2).encode()
    async with running(authkit) as client:
        reply = await client.post("/workos/action", content=body, headers=headers)
    assert reply.status_code == 401
    assert calls == []
    assert audit_notes(engine) == []


async def test_tolerance_is_configurable(make_kit: MakeKit) -> None:
    authkit = make_kit(action_tolerance=120)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow()

    async with running(authkit) as client:
        late = await post_action(client, user_registration_action(), timestamp_ms=NOW_MS - 90_000)
        too_late = await post_action(
            client, user_registration_action(), timestamp_ms=NOW_MS - 121_000
        )
    assert late.status_code == 200
    assert too_late.status_code == 401


def _malformed_bodies() -> list[Any]:
    no_email = user_registration_action()
    del no_email["user_data"]["email"]
    no_user = authentication_action()
    del no_user["user"]
    bad_user = authentication_action(factories.user("user_01A"))
    bad_user["user"]["email_verified"] = "sometimes"
    no_id = user_registration_action()
    del no_id["id"]
    return [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param({"id": "action_x"}, id="no-object"),
        pytest.param({"object": 7, "id": "action_x"}, id="object-not-string"),
        pytest.param({"object": "user", "id": "action_x"}, id="not-an-action"),
        pytest.param(no_email, id="registration-without-email"),
        pytest.param(no_user, id="authentication-without-user"),
        pytest.param(bad_user, id="authentication-with-bad-user"),
        pytest.param(no_id, id="no-id"),
    ]


@pytest.mark.parametrize("payload", _malformed_bodies())
async def test_verified_but_malformed_requests_answer_400(
    make_kit: MakeKit, engine: Engine, payload: dict[str, Any] | bytes
) -> None:
    authkit = make_kit()
    calls: list[object] = []

    @authkit.action("user_registration")
    def registration(session: Session, action: object, response: ActionResponse) -> ActionVerdict:
        calls.append(action)
        return response.allow()

    authkit.add_action_handler("authentication", registration)
    async with running(authkit) as client:
        reply = await post_action(client, payload)
    assert reply.status_code == 400, reply.text
    assert calls == []
    assert audit_notes(engine) == []
    # The error names fields but never echoes their values.
    assert "marcelina" not in reply.text.lower()


async def test_oversized_body_answers_413(make_kit: MakeKit) -> None:
    authkit = make_kit(max_body_size=2048)
    calls: list[str] = []

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        calls.append(action.id)
        return response.allow()

    async with running(authkit) as client:
        reply = await post_action(client, user_registration_action(padding="x" * 4096))
    assert reply.status_code == 413
    assert calls == []


@pytest.mark.parametrize(
    ("policy", "verdict"), [(None, "Deny"), ("deny", "Deny"), ("allow", "Allow")]
)
async def test_action_type_without_handler_follows_the_policy(
    make_kit: MakeKit, caplog: pytest.LogCaptureFixture, policy: str | None, verdict: str
) -> None:
    authkit = make_kit() if policy is None else make_kit(unhandled_action=policy)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow()

    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running(authkit) as client:
        reply = await post_action(client, authentication_action(action_id="action_orphan"))
    assert reply.status_code == 200
    checked = verify_action_response(reply.content, ACTION_SECRET)
    assert checked.object == "authentication_action_response"
    assert checked.payload.verdict == verdict
    assert checked.payload.error_message is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "action_orphan" in warnings[0]
    assert "no handler" in warnings[0]


async def test_a_future_action_type_follows_the_policy(make_kit: MakeKit) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow()

    payload = {"object": "password_reset_action_context", "id": "action_new", "user": {}}
    async with running(authkit) as client:
        reply = await post_action(client, payload)
    assert reply.status_code == 200
    assert reply.json()["object"] == "password_reset_action_response"
    assert reply.json()["payload"]["verdict"] == "Deny"


# --- Audit log ---------------------------------------------------------------------------------


async def test_each_decision_is_logged_at_info_without_the_email(
    make_kit: MakeKit, caplog: pytest.LogCaptureFixture
) -> None:
    authkit = make_kit()

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.deny("Not today")

    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with running(authkit) as client:
        await post_action(
            client, user_registration_action("private.person@acme.test", action_id="action_log")
        )
    decisions = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(decisions) == 1
    assert "action_log" in decisions[0]
    assert "user_registration" in decisions[0]
    assert "Deny" in decisions[0]
    assert " ms" in decisions[0]
    assert "private.person" not in caplog.text
    assert ACTION_SECRET not in caplog.text


# --- Mounting and configuration --------------------------------------------------------------


async def test_actions_only_app_needs_no_webhook_secret(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKOS_WEBHOOK_SECRET", raising=False)
    authkit = AuthKit(action_secret=ACTION_SECRET, engine=engine, clock=lambda: NOW)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow()

    with pytest.raises(ConfigurationError, match="WORKOS_WEBHOOK_SECRET"):
        authkit.router()
    async with running(authkit, webhooks=False) as client:
        reply = await post_action(client, user_registration_action())
        webhook = await client.post("/workos/webhook", content=b"{}")
    assert reply.json()["payload"]["verdict"] == "Allow"
    assert webhook.status_code == 404


def test_mounting_actions_without_the_action_secret_fails_at_router_time(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKOS_ACTION_SECRET", raising=False)
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine)

    @authkit.action("authentication")
    def authentication(
        session: Session, action: AuthenticationAction, response: ActionResponse
    ) -> ActionVerdict:
        return response.allow()

    with pytest.raises(ConfigurationError, match="WORKOS_ACTION_SECRET") as error:
        authkit.router()
    assert "/workos/action" in str(error.value)
    # Opting out of the route needs no action secret.
    assert authkit.router(actions=False).routes


def test_action_secret_comes_from_the_environment(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKOS_ACTION_SECRET", "from_env")
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine)
    assert authkit.settings.require_action_secret() == "from_env"
    paths = {route.path for route in authkit.router(actions=True).routes}  # type: ignore[attr-defined]
    assert "/workos/action" in paths


async def test_route_is_mounted_only_with_handlers_unless_asked(make_kit: MakeKit) -> None:
    async with running(make_kit()) as client:
        absent = await post_action(client, user_registration_action())
    assert absent.status_code == 404
    async with running(make_kit(), actions=True) as client:
        forced = await post_action(client, user_registration_action())
    assert forced.status_code == 200
    assert forced.json()["payload"]["verdict"] == "Deny"


def test_registration_errors(make_kit: MakeKit) -> None:
    authkit = make_kit()

    def handler(session: Session, action: object, response: ActionResponse) -> ActionVerdict:
        return response.allow()

    with pytest.raises(ValueError, match="Unknown action type"):
        authkit.action("user_registered")(handler)  # type: ignore[arg-type]
    authkit.action("authentication")(handler)
    with pytest.raises(ValueError, match="already registered"):
        authkit.action("authentication")(handler)
    with pytest.raises(TypeError, match="callable"):
        authkit.add_action_handler("user_registration", "not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"action_timeout": 0},
        {"action_timeout": -1},
        {"unhandled_action": "maybe"},
    ],
)
def test_invalid_options_are_refused(make_kit: MakeKit, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        make_kit(**options)


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_max_sync_action_handlers_must_be_a_whole_positive_number(
    make_kit: MakeKit, size: Any
) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        make_kit(max_sync_action_handlers=size)


def test_deny_message_must_be_text() -> None:
    with pytest.raises(TypeError):
        ActionResponse("user_registration").deny(42)  # type: ignore[arg-type]
    assert ActionResponse("user_registration").deny().payload(NOW_MS) == {
        "timestamp": NOW_MS,
        "verdict": "Deny",
    }


async def test_an_object_with_an_async_call_is_awaited(make_kit: MakeKit) -> None:
    class Gate:
        """A handler kept as an object, e.g. to hold a client."""

        async def __call__(
            self, session: Session, action: AuthenticationAction, response: ActionResponse
        ) -> ActionVerdict:
            await anyio.lowlevel.checkpoint()
            return response.deny(f"closed for {action.user.id}")

    authkit = make_kit()
    authkit.add_action_handler("authentication", Gate())
    async with running(authkit) as client:
        reply = await post_action(client, authentication_action(factories.user("user_01GATE")))
    assert reply.json()["payload"]["error_message"] == "closed for user_01GATE"


class FirstHoldsTheSlot:
    """A sync Action handler whose first call (``a_first``) holds its slot until `release`
    is set; every call is recorded in `calls`, every answer's status in `replies`."""

    def __init__(self, authkit: AuthKit) -> None:
        self.first_running = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []
        self.replies: dict[str, int] = {}

        @authkit.action("user_registration")
        def registration(
            session: Session, action: UserRegistrationAction, response: ActionResponse
        ) -> ActionVerdict:
            self.calls.append(action.id)
            if action.id == "a_first":
                self.first_running.set()
                self.release.wait(10)
            return response.allow()

    async def send(self, client: httpx.AsyncClient, action_id: str) -> None:
        reply = await post_action(client, user_registration_action(action_id=action_id))
        self.replies[action_id] = reply.status_code


async def test_a_burst_past_the_sync_slots_waits_for_a_slot_instead_of_503(
    make_kit: MakeKit,
) -> None:
    # One slot, held by a handler still inside its time: the next Action waits for it (within
    # its own action_timeout) and runs, rather than being refused as if the pool were stuck.
    authkit = make_kit(action_timeout=10.0, max_sync_action_handlers=1)
    held = FirstHoldsTheSlot(authkit)
    slots = authkit.sync_action_slots
    try:
        async with running(authkit) as client, anyio.create_task_group() as group:
            group.start_soon(held.send, client, "a_first")
            await anyio.to_thread.run_sync(held.first_running.wait, 10)
            assert slots.taken == 1
            group.start_soon(held.send, client, "a_second")
            for _ in range(1000):  # until the second request is queued for the slot
                if slots.waiting:
                    break
                await anyio.sleep(0.01)
            assert held.calls == ["a_first"]
            held.release.set()
    finally:
        held.release.set()
    assert held.replies == {"a_first": 200, "a_second": 200}
    assert held.calls == ["a_first", "a_second"]
    assert slots.taken == 0


async def test_slow_sync_handlers_run_side_by_side_up_to_max_sync_action_handlers(
    make_kit: MakeKit,
) -> None:
    # At most two sync handlers start at once, but one still running a moment later is waiting
    # on I/O and makes room: four slow handlers must all run together. The barrier breaks
    # (and the handlers answer 500) unless all four are inside it at the same time.
    authkit = make_kit(action_timeout=10.0, max_sync_action_handlers=4)
    together = threading.Barrier(4, timeout=10)

    @authkit.action("user_registration")
    def registration(
        session: Session, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        session.exec(select(SignupDomain)).all()
        together.wait()  # a slow call, as to another service
        return response.allow()

    replies: dict[str, int] = {}
    async with running(authkit) as client:

        async def send(action_id: str) -> None:
            reply = await post_action(client, user_registration_action(action_id=action_id))
            replies[action_id] = reply.status_code

        async with anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(send, f"a_{number}")
    assert replies == {f"a_{number}": 200 for number in range(4)}
    assert authkit.sync_action_slots.taken == 0


async def test_a_sync_action_that_gets_no_slot_within_its_budget_answers_503(
    make_kit: MakeKit, caplog: pytest.LogCaptureFixture
) -> None:
    # One slot, held by a handler that overruns: the next request waits in line for its own
    # action_timeout, then is refused without running its handler.
    authkit = make_kit(action_timeout=1.0, max_sync_action_handlers=1)
    held = FirstHoldsTheSlot(authkit)
    slots = authkit.sync_action_slots
    caplog.set_level(logging.ERROR, logger=LOGGER)
    try:
        async with running(authkit) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(held.send, client, "a_first")
                await anyio.to_thread.run_sync(held.first_running.wait, 10)
                group.start_soon(held.send, client, "a_second")
            assert held.replies == {"a_first": 504, "a_second": 503}
            assert held.calls == ["a_first"]
            assert (slots.taken, slots.waiting) == (1, 0)  # the overrun thread keeps its slot
            held.release.set()
            for _ in range(1000):  # the thread ends on its own; wait for it
                if slots.taken == 0:
                    break
                await anyio.to_thread.run_sync(threading.Event().wait, 0.01)
            assert slots.taken == 0
    finally:
        held.release.set()
    assert "1 sync handlers are still running" in caplog.text


async def test_a_client_that_hangs_up_while_waiting_for_a_slot_leaves_the_line(
    make_kit: MakeKit,
) -> None:
    authkit = make_kit(action_timeout=10.0, max_sync_action_handlers=1)
    held = FirstHoldsTheSlot(authkit)
    slots = authkit.sync_action_slots
    try:
        async with running(authkit) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(held.send, client, "a_first")
                await anyio.to_thread.run_sync(held.first_running.wait, 10)
                async with anyio.create_task_group() as hung_up:
                    hung_up.start_soon(held.send, client, "a_gone")
                    for _ in range(1000):  # until it is in line for the slot
                        if slots.waiting:
                            break
                        await anyio.sleep(0.01)
                    assert slots.waiting == 1
                    hung_up.cancel_scope.cancel()  # the client goes away
                assert slots.waiting == 0
                held.release.set()
            after = await post_action(client, user_registration_action(action_id="a_after"))
    finally:
        held.release.set()
    assert held.replies == {"a_first": 200}
    assert after.status_code == 200
    assert held.calls == ["a_first", "a_after"]  # the one that left never ran
    assert slots.taken == 0
