"""Sync semantics (issue 2): ordering, idempotency, tombstones, and which handlers run."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from fastapi_workos_authkit import (
    AuthKit,
    DeletedUser,
    Event,
    User,
    WorkOSEventRecord,
    WorkOSUser,
    WorkOSUserTombstone,
)
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio

Calls = list[tuple[str, str]]


@pytest.fixture
def calls(authkit: AuthKit) -> Calls:
    """Every user-event handler call, as (handler type, event id)."""
    recorded: Calls = []
    for event_type in ("user.created", "user.updated", "user.deleted"):

        def handler(session: Session, event: Event[Any], kind: str = event_type) -> None:
            recorded.append((kind, event.id))

        authkit.on(event_type)(handler)
    return recorded


def stored(engine: Engine, user_id: str) -> WorkOSUser | None:
    with Session(engine) as session:
        return session.get(WorkOSUser, user_id)


def tombstoned(engine: Engine, user_id: str) -> bool:
    with Session(engine) as session:
        return session.get(WorkOSUserTombstone, user_id) is not None


async def test_update_before_create_inserts_and_runs_created_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    update = factories.user_updated("user_01", first_name="New", updated_at=at(60))
    create = factories.user_created("user_01", first_name="Old", updated_at=at(0))
    await deliver(client, update)
    await deliver(client, create)
    row = stored(engine, "user_01")
    assert row is not None
    assert row.first_name == "New"
    assert calls == [("user.created", update["id"])]  # the late create changed nothing


async def test_newer_update_runs_updated_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    create = factories.user_created("user_01", updated_at=at(0))
    update = factories.user_updated("user_01", email="new@example.com", updated_at=at(10))
    await deliver(client, create)
    await deliver(client, update)
    row = stored(engine, "user_01")
    assert row is not None
    assert row.email == "new@example.com"
    assert calls == [("user.created", create["id"]), ("user.updated", update["id"])]


@pytest.mark.parametrize("offset", [0, -10], ids=["equal", "older"])
async def test_stale_or_equal_update_changes_nothing(
    client: httpx.AsyncClient, engine: Engine, calls: Calls, offset: int
) -> None:
    await deliver(client, factories.user_created("user_01", first_name="Kept", updated_at=at(100)))
    stale = factories.user_updated("user_01", first_name="Stale", updated_at=at(100 + offset))
    response = await deliver(client, stale)
    assert response.json()["status"] == ("unchanged" if offset == 0 else "stale")  # no effect
    row = stored(engine, "user_01")
    assert row is not None
    assert row.first_name == "Kept"
    assert [kind for kind, _ in calls] == ["user.created"]


async def test_newer_create_than_stored_row_runs_updated_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    first = factories.user_updated("user_01", updated_at=at(0))
    newer_create = factories.user_created("user_01", last_name="Newest", updated_at=at(5))
    await deliver(client, first)
    await deliver(client, newer_create)
    row = stored(engine, "user_01")
    assert row is not None
    assert row.last_name == "Newest"
    assert calls == [("user.created", first["id"]), ("user.updated", newer_create["id"])]


async def test_delete_writes_tombstone_and_runs_deleted_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    create = factories.user_created("user_01")
    delete = factories.user_deleted("user_01")
    await deliver(client, create)
    await deliver(client, delete)
    assert stored(engine, "user_01") is None
    assert tombstoned(engine, "user_01")
    assert calls[-1] == ("user.deleted", delete["id"])


async def test_delete_with_only_id(
    client: httpx.AsyncClient, engine: Engine, calls: Calls, authkit: AuthKit
) -> None:
    seen: list[DeletedUser] = []
    authkit.on("user.deleted")(lambda session, event: seen.append(event.data))
    await deliver(client, factories.user_created("user_01"))
    response = await deliver(client, factories.user_deleted("user_01", id_only=True))
    assert response.status_code == 200
    assert stored(engine, "user_01") is None
    assert [user.id for user in seen] == ["user_01"]
    assert seen[0].email is None


@pytest.mark.parametrize("late", ["user_created", "user_updated"])
async def test_no_resurrection_after_delete(
    client: httpx.AsyncClient, engine: Engine, calls: Calls, late: str
) -> None:
    await deliver(client, factories.user_created("user_01", updated_at=at(0)))
    await deliver(client, factories.user_deleted("user_01"))
    calls.clear()
    late_event = getattr(factories, late)("user_01", updated_at=at(10_000))
    assert (await deliver(client, late_event)).status_code == 200
    assert stored(engine, "user_01") is None
    assert calls == []


async def test_delete_of_unknown_user_leaves_tombstone_without_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    await deliver(client, factories.user_deleted("user_never_seen", id_only=True))
    assert tombstoned(engine, "user_never_seen")
    await deliver(client, factories.user_created("user_never_seen"))
    assert stored(engine, "user_never_seen") is None
    assert calls == []


async def test_duplicates_run_no_handlers(
    client: httpx.AsyncClient, engine: Engine, calls: Calls
) -> None:
    create = factories.user_created("user_01")
    for _ in range(3):
        await deliver(client, create)
    assert len(calls) == 1
    with Session(engine) as session:
        assert len(session.exec(select(WorkOSEventRecord)).all()) == 1


async def test_every_user_field_is_stored_with_aware_utc_timestamps(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    payload = factories.user_created(
        "user_01",
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        name="Ada Lovelace",
        profile_picture_url="https://example.com/ada.png",
        external_id="ext-1",
        metadata={"plan": "pro"},
        last_sign_in_at="2024-01-01T00:00:00Z",
        locale="en-GB",
        brand_new_workos_field={"nested": True},
    )
    payload["data"]["created_at"] = "2023-04-28 20:05:31.093"
    await deliver(client, payload)
    row = stored(engine, "user_01")
    assert row is not None
    dumped = row.model_dump(mode="json", by_alias=True)
    assert dumped == {
        "id": "user_01",
        "email": "ada@example.com",
        "email_verified": True,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "name": "Ada Lovelace",
        "profile_picture_url": "https://example.com/ada.png",
        "external_id": "ext-1",
        "metadata": {"plan": "pro"},
        "last_sign_in_at": "2024-01-01T00:00:00Z",
        "locale": "en-GB",
        "created_at": "2023-04-28T20:05:31.093000Z",
        "updated_at": "2026-01-15T12:00:00Z",
    }
    assert row.created_at.utcoffset() is not None


async def test_missing_nullable_fields_are_accepted(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    data = {
        "id": "user_min",
        "email": "min@example.com",
        "created_at": "2026-01-15T12:00:00.000Z",
        "updated_at": "2026-01-15T12:00:00.000Z",
    }
    assert (await deliver(client, factories.event("user.created", data))).status_code == 200
    row = stored(engine, "user_min")
    assert row is not None
    assert (row.first_name, row.user_metadata, row.email_verified) == (None, {}, False)


class Profile(SQLModel, table=True):
    """An app table written by a handler, to prove handlers share the sync's transaction."""

    __tablename__ = "test_profiles"
    user_id: str = Field(primary_key=True)
    note: str


async def test_handlers_share_the_transaction(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    SQLModel.metadata.create_all(engine, tables=[Profile.__table__])  # type: ignore[attr-defined]
    fail_second = True

    @authkit.on("user.created")
    def add_profile(session: Session, event: Event[User]) -> None:
        session.add(Profile(user_id=event.data.id, note="first handler"))

    @authkit.on("user.created")
    async def then_fail(session: Session, event: Event[User]) -> None:
        if fail_second:
            raise ValueError("second handler failed")

    payload = factories.user_created("user_tx")
    assert (await deliver(client, payload)).status_code == 500
    with Session(engine) as session:
        assert session.get(Profile, "user_tx") is None  # the first handler's write rolled back
        assert session.get(WorkOSUser, "user_tx") is None
    fail_second = False
    assert (await deliver(client, payload)).status_code == 200
    with Session(engine) as session:
        profile = session.get(Profile, "user_tx")
        assert profile is not None
        assert profile.note == "first handler"


async def test_any_event_type_reaches_its_handlers_in_order(
    authkit: AuthKit, client: httpx.AsyncClient
) -> None:
    seen: list[str] = []

    @authkit.on("session.created")
    async def first(session: Session, event: Event[Any]) -> None:
        seen.append(f"first:{event.data.user_id}:{event.data.auth_method}")

    @authkit.on("session.created")
    def second(session: Session, event: Event[Any]) -> None:
        seen.append("second")

    # Organizations are mirrored: an organization.updated that inserts the row runs the
    # organization.created handlers (handlers follow the effective change, as for users).
    @authkit.on("organization.created")
    def org(session: Session, event: Event[Any]) -> None:
        seen.append(f"org:{event.data.name}")

    @authkit.on("organization.updated")
    def org_updated(session: Session, event: Event[Any]) -> None:
        seen.append(f"org-updated:{event.data.name}")

    @authkit.on("magic_auth.created")
    def raw(session: Session, event: Event[Any]) -> None:
        seen.append(f"raw:{event.data['email']}")

    await deliver(client, factories.session_created("user_01", auth_method="GoogleOAuth"))
    org_event = factories.organization_created("Acme")
    org_event["event"] = "organization.updated"
    await deliver(client, org_event)
    await deliver(client, factories.event("magic_auth.created", {"id": "m1", "email": "m@x.io"}))
    assert seen == ["first:user_01:GoogleOAuth", "second", "org:Acme", "raw:m@x.io"]


async def test_odd_payload_for_an_unsynced_type_keeps_raw_data(
    authkit: AuthKit, client: httpx.AsyncClient
) -> None:
    # A session.* type that changes no table (a type WorkOS might add): typed data is only a
    # convenience, so an odd payload keeps its raw data instead of failing the delivery.
    seen: list[Any] = []
    authkit.on("session.refreshed")(lambda session, event: seen.append(event.data))
    payload = factories.event("session.refreshed", {"id": "session_1", "expires_at": "not a date"})
    assert (await deliver(client, payload)).status_code == 200
    assert seen == [{"id": "session_1", "expires_at": "not a date"}]


async def test_invalid_session_created_is_refused_like_a_user_event(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    # Sessions are mirrored now: a session.created the table cannot hold is a 400 (before, its
    # raw data went to the handlers), and nothing is recorded or run.
    seen: list[Any] = []
    authkit.on("session.created")(lambda session, event: seen.append(event.data))
    bad_date = factories.event("session.created", {"id": "session_1", "expires_at": "not a date"})
    no_user = factories.event("session.created", {"id": "session_2", "status": "active"})
    for payload in (bad_date, no_user):
        response = await deliver(client, payload)
        assert response.status_code == 400, response.text
    assert "data.user_id" in (await deliver(client, no_user)).text
    assert seen == []
    with Session(engine) as session:
        assert session.exec(select(WorkOSEventRecord)).all() == []


async def test_a_handler_cannot_commit_half_the_work(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    @authkit.on("user.created")
    def commits(session: Session, event: Event[User]) -> None:
        session.commit()

    payload = factories.user_created("user_commit")
    assert (await deliver(client, payload)).status_code == 500
    with Session(engine) as session:
        assert session.get(WorkOSUser, "user_commit") is None
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert record.last_error is not None
        assert "Do not commit the session inside a WorkOS event handler" in record.last_error


async def test_a_handler_cannot_roll_back_the_events_own_writes(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    @authkit.on("user.created")
    def rolls_back(session: Session, event: Event[User]) -> None:
        session.rollback()  # a common "catch IntegrityError, roll back, carry on" pattern

    payload = factories.user_created("user_rollback")
    assert (await deliver(client, payload)).status_code == 500  # not a silent 200
    with Session(engine) as session:
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert record.status == "failed"
        assert record.last_error is not None
        assert "begin_nested" in record.last_error


async def test_a_savepoint_lets_a_handler_recover_from_its_own_failure(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    SQLModel.metadata.create_all(engine, tables=[Profile.__table__])  # type: ignore[attr-defined]

    @authkit.on("user.created")
    def insert_twice(session: Session, event: Event[User]) -> None:
        session.add(Profile(user_id=event.data.id, note="kept"))
        session.flush()
        try:
            with session.begin_nested():
                session.add(Profile(user_id=event.data.id, note="duplicate key"))
        except IntegrityError:
            pass  # the savepoint rolled back; the event's writes are intact

    payload = factories.user_created("user_savepoint")
    assert (await deliver(client, payload)).status_code == 200
    with Session(engine) as session:
        profile = session.get(Profile, "user_savepoint")
        assert profile is not None
        assert profile.note == "kept"
        assert session.get(WorkOSUser, "user_savepoint") is not None


async def test_an_async_handlers_runtime_error_is_recorded_as_itself(
    authkit: AuthKit, engine: Engine, client: httpx.AsyncClient
) -> None:
    @authkit.on("session.created")
    async def fails(session: Session, event: Event[Any]) -> None:
        raise RuntimeError("the session store is down")

    payload = factories.session_created("user_01")
    assert (await deliver(client, payload)).status_code == 500
    with Session(engine) as session:
        record = session.get(WorkOSEventRecord, payload["id"])
        assert record is not None
        assert record.last_error == "RuntimeError: the session store is down"


async def test_an_event_the_database_cannot_store_is_refused_alike_on_both_databases(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    # 400 characters do not fit the 320-character email column. PostgreSQL would refuse the
    # insert and SQLite would keep it; the length is checked at parse time instead, so both
    # answer 400 and store nothing (issue 10; tests/test_hostile_signed.py covers every column).
    payload = factories.user_created("user_poison", email="x" * 400 + "@example.com")
    response = await deliver(client, payload)
    assert response.status_code == 400
    assert "data.email is longer than 320 characters" in response.json()["detail"]
    assert "x" * 50 not in response.text  # the value is never echoed
    with Session(engine) as session:
        assert session.get(WorkOSEventRecord, payload["id"]) is None
        assert session.get(WorkOSUser, "user_poison") is None


@pytest.mark.anyio
@pytest.mark.postgres_only
async def test_the_claim_takes_the_objects_advisory_lock_in_the_same_statement(
    authkit: AuthKit, engine: Engine
) -> None:
    # On PostgreSQL the ledger claim and the user's advisory lock are one statement; the
    # handler (inside the same transaction) must find the lock held by its own backend.
    from sqlalchemy import text

    from fastapi_workos_authkit._sync.database import ADVISORY_NAMESPACE, advisory_key

    held: list[int] = []

    @authkit.on("user.created")
    def count_locks(session: Session, event: Any) -> None:
        held.append(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = :namespace AND objid = :key"
                ),
                {
                    "namespace": ADVISORY_NAMESPACE,
                    "key": advisory_key(event.data.id) & 0xFFFFFFFF,  # pg_locks shows oids
                },
            ).scalar_one()
        )

    from sqlalchemy import event as sqlalchemy_event

    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    payload = factories.user_created("user_01LOCKED", event_id="event_01LOCKED")
    async with app_client(authkit) as client:
        sqlalchemy_event.listen(authkit.engine, "before_cursor_execute", record)
        try:
            first = await deliver(client, payload)
            again = await deliver(client, payload)
        finally:
            sqlalchemy_event.remove(authkit.engine, "before_cursor_execute", record)
    assert first.json()["status"] == "applied"
    assert again.json()["status"] == "duplicate"
    assert held == [1]
    # No statement of its own for the lock: each delivery's claim carries it.
    locking = [s for s in statements if "pg_advisory_xact_lock" in s]
    assert len(locking) == 2
    assert all("INSERT INTO workos_events" in s for s in locking)


@pytest.mark.anyio
async def test_deliveries_past_the_pools_size_wait_their_turn_on_the_loop(
    database_url: str,
) -> None:
    # A burst larger than pool_size must not open (and close) overflow connections: at most
    # pool_size transactions run at once, the rest wait for a slot, and every one is applied.
    import threading

    import anyio

    from fastapi_workos_authkit import make_engine

    engine = make_engine(database_url, pool_size=2, max_overflow=10)
    authkit = AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine)
    lock = threading.Lock()
    release = threading.Event()
    running: list[int] = []
    active = 0

    @authkit.on("user.created")
    def hold(session: Session, event: Any) -> None:
        nonlocal active
        with lock:
            active += 1
            running.append(active)
        release.wait(10)
        with lock:
            active -= 1

    try:
        async with app_client(authkit) as client:
            responses: list[httpx.Response] = []

            async def send(n: int) -> None:
                payload = factories.user_created(f"user_01BURST{n}", event_id=f"event_01BURST{n}")
                responses.append(await deliver(client, payload))

            async with anyio.create_task_group() as group:
                for n in range(6):
                    group.start_soon(send, n)
                with anyio.fail_after(10):
                    # SQLite runs one writer at a time anyway; PostgreSQL runs two.
                    busy = 1 if engine.dialect.name == "sqlite" else 2
                    # The state to wait for lives in worker threads: poll it.
                    while authkit.pipeline.threads.waiting() < 6 - 2 or active < busy:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                assert authkit.pipeline.threads.size() == 2
                release.set()
        assert [r.json()["status"] for r in responses] == ["applied"] * 6
        assert max(running) <= 2
    finally:
        release.set()
        engine.dispose()
