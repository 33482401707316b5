"""Random delivery orders (hypothesis) and concurrent deliveries to two app instances.

The property test compares the final table and the handler calls with a small model of the
rules; the concurrency test fires duplicates and out-of-order deliveries from many threads at two
`AuthKit` instances sharing one database.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_workos_authkit import AuthKit, Event, WorkOSEventRecord, WorkOSUser
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit.testing import factories, signed_delivery
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import WEBHOOK_SECRET, build_app


@dataclass
class ModelUser:
    """What the model expects for one user."""

    row: dict[str, Any] | None = None
    tombstone: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)


def model_apply(state: dict[str, ModelUser], seen: set[str], event: dict[str, Any]) -> None:
    """The sync rules, written as plainly as possible."""
    if event["id"] in seen:
        return
    seen.add(event["id"])
    data = event["data"]
    user = state.setdefault(data["id"], ModelUser())
    if event["event"] == "user.deleted":
        if user.row is not None:
            user.calls.append(("user.deleted", event["id"]))
        user.row = None
        user.tombstone = True
    elif user.tombstone:
        return
    elif user.row is None:
        user.row = data
        user.calls.append(("user.created", event["id"]))
    elif data["updated_at"] > user.row["updated_at"]:  # ISO strings in one format sort as times
        user.row = data
        user.calls.append(("user.updated", event["id"]))


@st.composite
def deliveries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events for a few users, with duplicates, in a random order."""
    prefix = uuid.uuid4().hex[:8]
    events: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        user_id = f"user_{prefix}_{index}"
        offset = 0
        for version in range(draw(st.integers(1, 4))):
            offset += draw(st.integers(0, 2))  # 0 gives equal updated_at: the first one wins
            build = factories.user_created if version == 0 else factories.user_updated
            events.append(build(user_id, first_name=f"v{version}", updated_at=at(offset)))
        if draw(st.booleans()):
            events.append(factories.user_deleted(user_id, id_only=draw(st.booleans())))
    duplicated = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations(events + duplicated))


def test_random_orders_match_the_model(authkit: AuthKit, engine: Engine) -> None:
    recorded: list[tuple[str, str, str]] = []
    for kind in ("user.created", "user.updated", "user.deleted"):

        def handler(session: Session, event: Event[Any], kind: str = kind) -> None:
            recorded.append((event.data.id, kind, event.id))

        authkit.on(kind)(handler)

    with TestClient(build_app(authkit)) as client:

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(deliveries())
        def check(order: list[dict[str, Any]]) -> None:
            state: dict[str, ModelUser] = {}
            seen: set[str] = set()
            recorded.clear()
            for event in order:
                body, headers = signed_delivery(event, WEBHOOK_SECRET)
                response = client.post("/workos/webhook", content=body, headers=headers)
                assert response.status_code == 200, response.text
                model_apply(state, seen, event)
            with Session(engine) as session:
                for user_id, expected in state.items():
                    row = session.get(WorkOSUser, user_id)
                    if expected.row is None:
                        assert row is None
                    else:
                        assert row is not None
                        assert row.first_name == expected.row["first_name"]
                    actual_calls = [(k, e) for uid, k, e in recorded if uid == user_id]
                    assert actual_calls == expected.calls

        check()


class HandlerCall(SQLModel, table=True):
    """Handler calls, written inside the sync's transaction: only committed calls count."""

    __tablename__ = "test_handler_calls"
    __table_args__ = (UniqueConstraint("event_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: str
    kind: str
    event_id: str


def test_concurrent_duplicates_to_two_instances_take_effect_once(database_url: str) -> None:
    engines = [
        make_engine(database_url, pool_size=10)
        if "postgresql" in database_url
        else make_engine(database_url)
        for _ in range(2)
    ]
    SQLModel.metadata.create_all(engines[0], tables=[HandlerCall.__table__])  # type: ignore[attr-defined]
    instances = [AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine) for engine in engines]
    for authkit in instances:
        for kind in ("user.created", "user.updated", "user.deleted"):

            def handler(session: Session, event: Event[Any], kind: str = kind) -> None:
                session.add(HandlerCall(user_id=event.data.id, kind=kind, event_id=event.id))

            authkit.on(kind)(handler)

    rng = random.Random(20261128)
    events: list[dict[str, Any]] = []
    newest: dict[str, str] = {}
    deleted: set[str] = set()
    for index in range(40):
        user_id = f"user_conc_{index}"
        for version in range(4):
            build = factories.user_created if version == 0 else factories.user_updated
            events.append(build(user_id, first_name=f"v{version}", updated_at=at(version)))
        newest[user_id] = "v3"
        if index % 3 == 0:
            events.append(factories.user_deleted(user_id))
            deleted.add(user_id)
    deliveries_list = [event for event in events for _ in range(rng.choice((2, 3)))]
    rng.shuffle(deliveries_list)

    apps = [build_app(authkit) for authkit in instances]
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        clients = (first, second)

        def send(job: tuple[int, dict[str, Any]]) -> int:
            number, event = job
            body, headers = signed_delivery(event, WEBHOOK_SECRET)
            return (
                clients[number % 2]
                .post("/workos/webhook", content=body, headers=headers)
                .status_code
            )

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = Counter(pool.map(send, enumerate(deliveries_list)))
    assert statuses == Counter({200: len(deliveries_list)})

    with Session(engines[0]) as session:
        ledger = session.exec(select(WorkOSEventRecord)).all()
        assert sorted(r.id for r in ledger) == sorted(e["id"] for e in events)
        assert {(r.status, r.attempts) for r in ledger} == {("processed", 1)}
        rows = {u.id: u.first_name for u in session.exec(select(WorkOSUser)).all()}
        assert rows == {uid: name for uid, name in newest.items() if uid not in deleted}
        calls = session.exec(select(HandlerCall)).all()
        by_user: dict[str, Counter[str]] = {}
        for call in calls:
            by_user.setdefault(call.user_id, Counter())[call.kind] += 1
        for user_id in newest:
            kinds = by_user.get(user_id, Counter())
            if user_id in deleted:
                # Whether the row existed when the delete landed depends on the order.
                assert kinds["user.created"] == kinds["user.deleted"] <= 1
            else:
                assert kinds["user.created"] == 1
            assert kinds["user.updated"] <= 3
        created_events = {c.event_id for c in calls if c.kind == "user.created"}
        assert created_events <= {e["id"] for e in events}
        assert len(session.exec(select(col(HandlerCall.event_id))).all()) == len(calls)
    for engine in engines:
        engine.dispose()
