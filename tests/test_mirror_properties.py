"""The mirror rules, per kind, against a plain model: random orders, duplicates, concurrency.

One harness for every mirrored kind (users, organizations, memberships, sessions): Hypothesis
draws a few objects, several snapshots of each (equal timestamps included), maybe a deletion (a
revocation for sessions), duplicates of any delivery, and a random order. The events go as
signed webhooks to a real app; the final table and the handler calls must match what a small
model of the rules says, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, UniqueConstraint
from sqlmodel import Field, Session, SQLModel, select

from fastapi_workos_authkit import (
    AuthKit,
    Event,
    WorkOSEventRecord,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSUser,
)
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit.testing import factories, signed_delivery
from fastapi_workos_authkit.testing.factories import at
from tests.conftest import WEBHOOK_SECRET, build_app

ORG_ID = "org_01PROPS"
USER_ID = "user_01PROPS"


@dataclass(frozen=True)
class Kind:
    """How the harness builds, ends and reads one kind of object."""

    name: str
    table: type[SQLModel]
    # (object id, version number, updated_at) -> a created/updated event
    snapshot: Callable[[str, int, int], dict[str, Any]]
    # object id -> the event that ends it (deleted, or revoked for sessions)
    end: Callable[[str, int], dict[str, Any]]
    # the row's version marker, compared with the payload's
    marker: Callable[[Any], str]
    payload_marker: Callable[[dict[str, Any]], str]
    handler_types: tuple[str, ...]


def _user(object_id: str, version: int, offset: int) -> dict[str, Any]:
    build = factories.user_created if version == 0 else factories.user_updated
    return build(object_id, first_name=f"v{version}", updated_at=at(offset))


def _organization(object_id: str, version: int, offset: int) -> dict[str, Any]:
    if version == 0:
        return factories.organization_created(
            f"v{version}", organization_id=object_id, created_at=at(offset)
        )
    return factories.organization_updated(
        object_id, name=f"v{version}", created_at=at(0), updated_at=at(offset)
    )


def _membership(object_id: str, version: int, offset: int) -> dict[str, Any]:
    if version == 0:
        return factories.organization_membership_created(
            USER_ID, ORG_ID, membership_id=object_id, role=f"v{version}", created_at=at(offset)
        )
    return factories.organization_membership_updated(
        object_id, USER_ID, ORG_ID, role=f"v{version}", created_at=at(0), updated_at=at(offset)
    )


def _session(object_id: str, version: int, offset: int) -> dict[str, Any]:
    # WorkOS sends one session.created per session; the later versions stand for newer
    # snapshots of the still active session (a REST fetch, or a resent create).
    return factories.session_created(
        USER_ID,
        session_id=object_id,
        user_agent=f"v{version}",
        created_at=at(0),
        updated_at=at(offset),
    )


KINDS = {
    "user": Kind(
        "user",
        WorkOSUser,
        _user,
        lambda object_id, id_only: factories.user_deleted(object_id, id_only=bool(id_only)),
        lambda row: row.first_name,
        lambda data: data["first_name"],
        ("user.created", "user.updated", "user.deleted"),
    ),
    "organization": Kind(
        "organization",
        WorkOSOrganization,
        _organization,
        lambda object_id, id_only: factories.organization_deleted(object_id, id_only=bool(id_only)),
        lambda row: row.name,
        lambda data: data["name"],
        ("organization.created", "organization.updated", "organization.deleted"),
    ),
    "organization_membership": Kind(
        "organization_membership",
        WorkOSOrganizationMembership,
        _membership,
        lambda object_id, _: factories.organization_membership_deleted(object_id, USER_ID, ORG_ID),
        lambda row: row.role,
        lambda data: data["role"]["slug"],
        (
            "organization_membership.created",
            "organization_membership.updated",
            "organization_membership.deleted",
        ),
    ),
    "session": Kind(
        "session",
        WorkOSSession,
        _session,
        lambda object_id, offset: factories.session_revoked(
            USER_ID,
            session_id=object_id,
            user_agent="revoked",
            created_at=at(0),
            updated_at=at(offset),
        ),
        lambda row: f"{row.status}:{row.user_agent}",
        lambda data: (
            f"{'revoked' if data['status'] == 'revoked' else 'active'}:{data['user_agent']}"
        ),
        ("session.created", "session.revoked"),
    ),
}


@dataclass
class Expected:
    """What the model expects for one object."""

    row: dict[str, Any] | None = None
    tombstone: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)


def model_apply(
    kind: str, state: dict[str, Expected], seen: set[str], event: dict[str, Any]
) -> None:
    """The mirror rules, written as plainly as possible."""
    if event["id"] in seen:
        return
    seen.add(event["id"])
    data = event["data"]
    expected = state.setdefault(data["id"], Expected())
    if kind == "session":
        row = expected.row
        revoking = event["event"] == "session.revoked"
        if row is not None and row["status"] == "revoked":
            return  # terminal: nothing changes an ended session
        if revoking:
            expected.row = data
            expected.calls.append(("session.revoked", event["id"]))
        elif row is None:
            expected.row = data
            expected.calls.append(("session.created", event["id"]))
        elif data["updated_at"] > row["updated_at"]:
            expected.row = data  # a newer active snapshot: no WorkOS event names it
        return
    if event["event"].endswith(".deleted"):
        if expected.row is not None:
            expected.calls.append((f"{kind}.deleted", event["id"]))
        expected.row = None
        expected.tombstone = True
    elif expected.tombstone:
        return
    elif expected.row is None:
        expected.row = data
        expected.calls.append((f"{kind}.created", event["id"]))
    elif data["updated_at"] > expected.row["updated_at"]:  # one ISO format: sorts as times
        expected.row = data
        expected.calls.append((f"{kind}.updated", event["id"]))


@st.composite
def deliveries(draw: st.DrawFn, kind: Kind) -> list[dict[str, Any]]:
    """Events for a few objects of one kind, with duplicates, in a random order."""
    prefix = uuid.uuid4().hex[:8]
    events: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 3))):
        object_id = f"{kind.name[:4]}_{prefix}_{index}"
        offset = 0
        for version in range(draw(st.integers(1, 4))):
            offset += draw(st.integers(0, 2))  # 0 gives equal updated_at: the first one wins
            events.append(kind.snapshot(object_id, version, offset))
        if draw(st.booleans()):
            events.append(kind.end(object_id, draw(st.integers(0, 8))))
    duplicated = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    return draw(st.permutations(events + duplicated))


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_random_orders_match_the_model(authkit: AuthKit, engine: Engine, kind_name: str) -> None:
    kind = KINDS[kind_name]
    recorded: list[tuple[str, str, str]] = []
    for handler_type in kind.handler_types:

        def handler(session: Session, event: Event[Any], handler_type: str = handler_type) -> None:
            recorded.append((event.data.id, handler_type, event.id))

        authkit.on(handler_type)(handler)

    with TestClient(build_app(authkit)) as client:

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(deliveries(kind))
        def check(order: list[dict[str, Any]]) -> None:
            state: dict[str, Expected] = {}
            seen: set[str] = set()
            recorded.clear()
            for event in order:
                body, headers = signed_delivery(event, WEBHOOK_SECRET)
                response = client.post("/workos/webhook", content=body, headers=headers)
                assert response.status_code == 200, response.text
                model_apply(kind.name, state, seen, event)
            with Session(engine) as session:
                for object_id, expected in state.items():
                    row = session.get(kind.table, object_id)
                    if expected.row is None:
                        assert row is None
                    else:
                        assert row is not None
                        assert kind.marker(row) == kind.payload_marker(expected.row)
                    actual = [(k, e) for oid, k, e in recorded if oid == object_id]
                    assert actual == expected.calls

        check()


class MirrorHandlerCall(SQLModel, table=True):
    """Handler calls, written inside the sync's transaction: only committed calls count."""

    __tablename__ = "test_mirror_handler_calls"
    __table_args__ = (UniqueConstraint("event_id", "kind"),)
    id: int | None = Field(default=None, primary_key=True)
    object_id: str
    kind: str
    event_id: str


@pytest.mark.parametrize("kind_name", ["organization_membership", "session"])
def test_concurrent_duplicates_to_two_instances_take_effect_once(
    database_url: str, kind_name: str
) -> None:
    kind = KINDS[kind_name]
    engines = [
        make_engine(database_url, pool_size=10)
        if "postgresql" in database_url
        else make_engine(database_url)
        for _ in range(2)
    ]
    SQLModel.metadata.create_all(engines[0], tables=[MirrorHandlerCall.__table__])  # type: ignore[attr-defined]
    instances = [AuthKit(webhook_secret=WEBHOOK_SECRET, engine=engine) for engine in engines]
    for authkit in instances:
        for handler_type in kind.handler_types:

            def handler(
                session: Session, event: Event[Any], handler_type: str = handler_type
            ) -> None:
                session.add(
                    MirrorHandlerCall(object_id=event.data.id, kind=handler_type, event_id=event.id)
                )

            authkit.on(handler_type)(handler)

    rng = random.Random(20261202)
    events: list[dict[str, Any]] = []
    newest: dict[str, str] = {}
    ended: set[str] = set()
    for index in range(30):
        object_id = f"{kind_name[:4]}_conc_{index}"
        for version in range(4):
            events.append(kind.snapshot(object_id, version, version))
        newest[object_id] = kind.payload_marker(events[-1]["data"])
        if index % 3 == 0:
            end = kind.end(object_id, 9)
            events.append(end)
            ended.add(object_id)
            newest[object_id] = kind.payload_marker(end["data"])
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
        rows = {row.id: kind.marker(row) for row in session.exec(select(kind.table)).all()}
        if kind_name == "session":
            # Revoked sessions stay, revoked, whatever came after.
            assert rows == newest
        else:
            assert rows == {oid: m for oid, m in newest.items() if oid not in ended}
        calls = session.exec(select(MirrorHandlerCall)).all()
        by_object: dict[str, Counter[str]] = {}
        for call in calls:
            by_object.setdefault(call.object_id, Counter())[call.kind] += 1
        for object_id in newest:
            counts = by_object.get(object_id, Counter())
            if kind_name == "session":
                assert counts["session.revoked"] == (1 if object_id in ended else 0)
                # A revocation that lands first inserts the row: the create then changes nothing.
                assert counts["session.created"] <= 1
                assert counts["session.created"] + counts["session.revoked"] >= 1
            elif object_id in ended:
                created, deleted = counts[f"{kind_name}.created"], counts[f"{kind_name}.deleted"]
                assert created == deleted <= 1
            else:
                assert counts[f"{kind_name}.created"] == 1
    for engine in engines:
        engine.dispose()
