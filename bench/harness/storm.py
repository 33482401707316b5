"""Scenarios 1 and 2: a webhook storm, then the same storm under faults, checked against a model.

The model of the sync rules is deliberately simple and separate from the package's code:

* a user's final row is its snapshot with the newest ``updated_at``, unless the user was deleted;
* a deleted user is absent and has a tombstone;
* the handler calls, read in the order they committed, must be explained by *some* processing
  order of the user's events under the rules (see `handler_violations`): an insert runs
  ``user.created`` handlers, a newer snapshot ``user.updated``, a removal ``user.deleted``, and
  an event that changes nothing runs none. Each handler runs at most once per event id.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from fastapi_workos_authkit.testing import TokenFactory, encode, factories, signed_delivery

from .load import Deliverer, DeliveryStats, run_jobs

WEBHOOK_PATH = "/workos/webhook"
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


# The kinds the storm mixes: the row value the model checks, and the handler prefix.
KINDS = ("user", "organization", "organization_membership", "session")


@dataclass(frozen=True)
class StormEvent:
    """One unique event of the storm, with what the model needs to know about it."""

    event_id: str
    event_type: str
    user_id: str  # the id of the object the event is about (a user, organization...)
    updated_at: datetime | None  # None for deletions
    email: str | None  # the value the model checks: email, name, role, or a session's status
    body: bytes
    kind: str = "user"


@dataclass
class Storm:
    """The unique events and the shuffled delivery plan (single and concurrent-pair jobs)."""

    events: list[StormEvent]
    plan: list[tuple[StormEvent, int]]  # (event, copies sent at the same moment)
    users: int
    deleted_users: set[str] = field(default_factory=set)  # deleted objects of every kind
    revoked_sessions: set[str] = field(default_factory=set)

    @property
    def deliveries(self) -> int:
        return sum(copies for _, copies in self.plan)


def make_storm(tag: str, users: int, deliveries: int, *, seed: int) -> Storm:
    """``deliveries`` deliveries over ``users`` users, plus organizations (a quarter as many),
    memberships and sessions (half as many each): 20% duplicates (half of them sent at the same
    moment as the original, on another connection), 10% of users, organizations and memberships
    deleted, half the sessions revoked, shuffled."""
    rng = random.Random(seed)
    unique = round(deliveries * 0.8)
    sessions = users // 2
    # Sessions have one or two events; the other kinds share the rest.
    objects = users + users // 4 + users // 2
    per_object = max(2, (unique - round(sessions * 1.5)) // objects)
    events: list[StormEvent] = []
    deleted: set[str] = set()
    revoked: set[str] = set()
    counter = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"event_01{tag}{counter:016d}"

    def versioned(kind: str, object_id: str, index: int, build: Any) -> None:
        created = _BASE + timedelta(minutes=index)
        is_deleted = rng.random() < 0.1
        for step in range(per_object):
            event_id = next_id()
            if step == per_object - 1 and is_deleted:
                deleted.add(object_id)
                data = build(step, created, created)
                if kind == "user" and rng.random() < 0.5:
                    data = {"id": object_id}
                payload = factories.event(
                    f"{kind}.deleted", data, event_id=event_id, created_at=created
                )
                events.append(
                    StormEvent(
                        event_id, f"{kind}.deleted", object_id, None, None, encode(payload), kind
                    )
                )
                continue
            updated = created + timedelta(seconds=step)
            data = build(step, created, updated)
            value = {"user": "email", "organization": "name", "organization_membership": "role"}
            checked = data[value[kind]]
            if kind == "organization_membership":
                checked = checked["slug"]
            event_type = f"{kind}.created" if step == 0 else f"{kind}.updated"
            payload = factories.event(event_type, data, event_id=event_id, created_at=updated)
            events.append(
                StormEvent(event_id, event_type, object_id, updated, checked, encode(payload), kind)
            )

    for index in range(users):
        user_id = f"user_01{tag}{index:016d}"
        versioned(
            "user",
            user_id,
            index,
            lambda step, created, updated, user_id=user_id: factories.user(
                user_id,
                email=f"{user_id.lower()}+v{step}@example.com",
                first_name=f"Step{step}",
                created_at=created,
                updated_at=updated,
            ),
        )
    for index in range(users // 4):
        org_id = f"org_01{tag}{index:016d}"
        versioned(
            "organization",
            org_id,
            index,
            lambda step, created, updated, org_id=org_id: factories.organization(
                org_id, name=f"Org v{step}", created_at=created, updated_at=updated
            ),
        )
    for index in range(users // 2):
        membership_id = f"om_01{tag}{index:016d}"
        user_id = f"user_01{tag}{index:016d}"
        org_id = f"org_01{tag}{index % max(1, users // 4):016d}"
        versioned(
            "organization_membership",
            membership_id,
            index,
            lambda step, created, updated, m=membership_id, u=user_id, o=org_id: (
                factories.organization_membership(
                    u, o, m, role=f"role_v{step}", created_at=created, updated_at=updated
                )
            ),
        )
    for index in range(sessions):
        session_id = f"session_01{tag}{index:016d}"
        user_id = f"user_01{tag}{index:016d}"
        created = _BASE + timedelta(minutes=index)
        data = factories.session(user_id, session_id, created_at=created, updated_at=created)
        event_id = next_id()
        payload = factories.event("session.created", data, event_id=event_id, created_at=created)
        events.append(
            StormEvent(
                event_id,
                "session.created",
                session_id,
                created,
                "active",
                encode(payload),
                "session",
            )
        )
        if rng.random() < 0.5:
            revoked.add(session_id)
            ended = created + timedelta(minutes=5)
            data = factories.session(
                user_id, session_id, status="revoked", created_at=created, updated_at=ended
            )
            event_id = next_id()
            payload = factories.event("session.revoked", data, event_id=event_id, created_at=ended)
            events.append(
                StormEvent(
                    event_id,
                    "session.revoked",
                    session_id,
                    ended,
                    "revoked",
                    encode(payload),
                    "session",
                )
            )
    duplicates = deliveries - len(events)
    plan: list[tuple[StormEvent, int]] = [(event, 1) for event in events]
    chosen = rng.sample(range(len(events)), max(0, min(duplicates, len(events))))
    half = len(chosen) // 2
    for position in chosen[:half]:
        plan[position] = (events[position], 2)  # sent twice at the same moment
    plan.extend((events[position], 1) for position in chosen[half:])  # a later redelivery
    rng.shuffle(plan)
    return Storm(
        events=events, plan=plan, users=users, deleted_users=deleted, revoked_sessions=revoked
    )


def reset_tables(url: str) -> None:
    """Empty every table the scenarios write to."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "TRUNCATE workos_users, workos_events, workos_user_tombstones, workos_organizations, "
            "workos_organization_memberships, workos_sessions, workos_tombstones, "
            "bench_handler_calls, bench_floor"
        )


def handler_violations(storm: Storm, calls: list[tuple[str, str]]) -> list[str]:
    """Check the handler calls, in commit order, against the sync rules; return the violations.

    ``calls`` are ``(event id, handler)`` in the order they were written (the pipeline holds a
    per-object lock from the effect to the commit, so per object this is the processing order of
    the effective events). For users, organizations and memberships the calls are right when
    some processing order of *all* the object's events gives exactly them: per object, a
    ``*.created`` call first, then ``*.updated`` calls with strictly newer snapshots, then at most
    a ``*.deleted`` call, last; the newest snapshot of an object never deleted is among them; a
    deleted object's delete is either effective (last) or came before anything (no call at all);
    every event without a call could have been a no-op at some moment (an equal or newer snapshot
    applied, or a tombstone). For a session: ``session.created`` at most once, first, and, when
    it was revoked, ``session.revoked`` exactly once, last (a revoke that arrives first inserts the
    session as revoked, and the late create then changes nothing).
    """
    events = {event.event_id: event for event in storm.events}
    by_object: defaultdict[str, list[StormEvent]] = defaultdict(list)
    for event in storm.events:
        by_object[event.user_id].append(event)
    sequences: defaultdict[str, list[tuple[StormEvent, str]]] = defaultdict(list)
    violations: list[str] = []
    for event_id, handler in calls:
        event = events.get(event_id)
        if event is None:
            violations.append(f"{event_id}: handler call for an unknown event")
            continue
        sequences[event.user_id].append((event, handler))
    for object_id, object_events in by_object.items():
        sequence = sequences.get(object_id, [])
        kind = object_events[0].kind
        if kind == "session":
            violations += _session_violations(
                object_id, sequence, object_id in storm.revoked_sessions
            )
            continue
        seen: set[str] = set()
        newest: datetime | None = None
        deleted_at_end = False
        for position, (event, handler) in enumerate(sequence):
            if event.event_id in seen:
                violations.append(f"{event.event_id}: handler ran twice")
            seen.add(event.event_id)
            if event.event_type == f"{kind}.deleted":
                if handler != event.event_type or position != len(sequence) - 1 or position == 0:
                    violations.append(f"{event.event_id}: delete must be the last, after an insert")
                deleted_at_end = True
                continue
            expected = f"{kind}.created" if position == 0 else f"{kind}.updated"
            if handler != expected:
                violations.append(f"{event.event_id}: ran {handler}, expected {expected}")
            if newest is not None and event.updated_at is not None and event.updated_at <= newest:
                violations.append(f"{event.event_id}: applied an older or equal snapshot")
            newest = event.updated_at
        has_delete = object_id in storm.deleted_users
        if has_delete and sequence and not deleted_at_end:
            violations.append(f"{object_id}: inserted but its delete had no effect")
        for event in object_events:
            if event.event_id in seen or event.event_type == f"{kind}.deleted":
                continue
            could_be_noop = has_delete or any(
                other.updated_at is not None
                and event.updated_at is not None
                and other.updated_at >= event.updated_at
                for other, _ in sequence
                if other.event_type != f"{kind}.deleted"
            )
            if not could_be_noop:
                violations.append(f"{event.event_id}: a newer snapshot ran no handler")
    return violations


def _session_violations(
    session_id: str, sequence: list[tuple[StormEvent, str]], revoked: bool
) -> list[str]:
    handlers = [handler for _, handler in sequence]
    if len({event.event_id for event, _ in sequence}) != len(sequence):
        return [f"{session_id}: a session handler ran twice"]
    for event, handler in sequence:
        if handler != event.event_type:
            return [f"{event.event_id}: ran {handler} for a {event.event_type} event"]
    allowed = (
        [["session.created", "session.revoked"], ["session.revoked"]]
        if revoked
        else [["session.created"]]
    )
    if handlers not in allowed:
        return [f"{session_id}: session handlers {handlers}, expected one of {allowed}"]
    return []


def check_storm(url: str, storm: Storm) -> dict[str, Any]:
    """Compare the database with the model; every check is a named boolean plus its evidence."""
    with psycopg.connect(url) as connection:
        tables = {
            "user": "SELECT id, email, updated_at FROM workos_users",
            "organization": "SELECT id, name, updated_at FROM workos_organizations",
            "organization_membership": (
                "SELECT id, role, updated_at FROM workos_organization_memberships"
            ),
        }
        rows = {
            kind: {row[0]: (row[1], row[2]) for row in connection.execute(query)}
            for kind, query in tables.items()
        }
        sessions = {
            str(row[0]): str(row[1])
            for row in connection.execute("SELECT id, status FROM workos_sessions")
        }
        tombstones = {
            str(row[0]) for row in connection.execute("SELECT user_id FROM workos_user_tombstones")
        } | {str(row[0]) for row in connection.execute("SELECT id FROM workos_tombstones")}
        ledger = {
            row[0]: (row[1], row[2])
            for row in connection.execute("SELECT id, status, attempts FROM workos_events")
        }
        ordered_calls = [
            (str(row[0]), str(row[1]))
            for row in connection.execute(
                "SELECT event_id, handler FROM bench_handler_calls ORDER BY id"
            )
        ]
    calls = Counter(ordered_calls)
    newest: dict[str, StormEvent] = {}
    for event in storm.events:
        if event.kind == "session" or event.updated_at is None:
            continue
        if event.event_type.endswith(".deleted"):
            continue
        best = newest.get(event.user_id)
        if best is None or (best.updated_at is not None and event.updated_at > best.updated_at):
            newest[event.user_id] = event
    wrong: dict[str, list[str]] = {}
    expected_counts: dict[str, int] = {}
    for kind, found in rows.items():
        expected = {
            object_id: (event.email, event.updated_at)
            for object_id, event in newest.items()
            if event.kind == kind and object_id not in storm.deleted_users
        }
        expected_counts[kind] = len(expected)
        wrong[kind] = sorted(
            object_id
            for object_id in set(found) | set(expected)
            if found.get(object_id) != expected.get(object_id)
        )
    expected_sessions = {
        event.user_id: ("revoked" if event.user_id in storm.revoked_sessions else "active")
        for event in storm.events
        if event.kind == "session"
    }
    wrong_sessions = sorted(
        session_id
        for session_id in set(sessions) | set(expected_sessions)
        if sessions.get(session_id) != expected_sessions.get(session_id)
    )
    present = set().union(*(set(found) for found in rows.values()))
    storm_ids = {event.event_id for event in storm.events}
    not_processed = sorted(
        event_id for event_id in storm_ids if ledger.get(event_id, ("", None))[0] != "processed"
    )
    duplicated_calls = sorted(key for key, count in calls.items() if count > 1)
    violations = handler_violations(storm, ordered_calls)
    checks = {
        "user_table_equals_newest_state": not wrong["user"],
        "organization_table_equals_newest_state": not wrong["organization"],
        "membership_table_equals_newest_state": not wrong["organization_membership"],
        "session_table_equals_final_status": not wrong_sessions,
        "deleted_objects_absent_and_tombstoned": storm.deleted_users <= tombstones
        and not (storm.deleted_users & present),
        "every_event_processed_once_in_ledger": not not_processed and set(ledger) == storm_ids,
        "handlers_ran_exactly_once_per_effective_change": not violations and not duplicated_calls,
    }
    by_kind = Counter(event.kind for event in storm.events)
    return {
        "checks": checks,
        "evidence": {
            "unique_events_per_kind": dict(by_kind),
            "rows_expected": {**expected_counts, "session": len(expected_sessions)},
            "rows_in_tables": {
                **{kind: len(found) for kind, found in rows.items()},
                "session": len(sessions),
            },
            "wrong_rows": {
                **{kind: ids[:5] for kind, ids in wrong.items() if ids},
                **({"session": wrong_sessions[:5]} if wrong_sessions else {}),
            },
            "tombstones": len(tombstones),
            "deleted_objects": len(storm.deleted_users),
            "revoked_sessions": len(storm.revoked_sessions),
            "ledger_rows": len(ledger),
            "ledger_failed": sum(1 for status, _ in ledger.values() if status != "processed"),
            "unique_events": len(storm.events),
            "not_processed": len(not_processed),
            "handler_calls": sum(calls.values()),
            "handler_calls_duplicated": len(duplicated_calls),
            "handler_rule_violations": len(violations),
            "violation_examples": violations[:5],
        },
    }


class WorkerConnections:
    """Single-connection clients grouped by the worker that accepted their connection.

    Both workers accept on one socket, so which worker gets a connection is up to the kernel
    (and usually it is the idle one). To send the two copies of a duplicate *to both workers*,
    the harness opens connections, asks each which worker it reached, and keeps them by worker.
    A connection that is dropped and reopened may move; the answers' ``X-Bench-Worker`` header
    says where each copy really went.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.idle: dict[str, asyncio.Queue[httpx.AsyncClient]] = {}
        self._all: list[httpx.AsyncClient] = []

    async def open(self, per_worker: int, workers: int = 2) -> None:
        counts: Counter[str] = Counter()
        for _ in range(per_worker * workers * 8):
            if len(counts) >= workers and min(counts.values()) >= per_worker:
                break
            client = httpx.AsyncClient(
                base_url=self.base_url,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(30.0),
            )
            worker = (await client.get("/bench/pid")).headers.get("x-bench-worker", "?")
            if counts[worker] >= per_worker:
                await client.aclose()
                continue
            counts[worker] += 1
            self._all.append(client)
            self.idle.setdefault(worker, asyncio.Queue()).put_nowait(client)

    def workers(self, count: int, slot: int) -> list[asyncio.Queue[httpx.AsyncClient]]:
        """``count`` idle-client queues, on different workers when there are enough."""
        queues = list(self.idle.values())
        return [queues[(slot + offset) % len(queues)] for offset in range(count)]

    async def aclose(self) -> None:
        for client in self._all:
            await client.aclose()


async def _drive(
    base_url: str,
    storm: Storm,
    deliverer: Deliverer,
    concurrency: int,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[float, list[StormEvent], int]:
    """Deliver the plan; returns (seconds, events never acknowledged, pairs split over workers)."""
    connections = WorkerConnections(base_url)
    await connections.open(per_worker=concurrency)
    unacknowledged: list[StormEvent] = []
    split_pairs = 0

    async def send(queue: asyncio.Queue[httpx.AsyncClient], body: bytes) -> tuple[str | None, str]:
        client = await queue.get()
        try:
            return await deliverer.deliver(client, body)
        finally:
            queue.put_nowait(client)

    def job(event: StormEvent, copies: int, slot: int) -> Callable[[], Any]:
        async def run() -> None:
            nonlocal split_pairs
            queues = connections.workers(copies, slot)
            results = await asyncio.gather(*(send(queue, event.body) for queue in queues))
            if all(outcome is None for outcome, _ in results):
                unacknowledged.append(event)
            if copies > 1 and len({worker for _, worker in results}) > 1:
                split_pairs += 1

        return run

    jobs = [job(event, copies, slot) for slot, (event, copies) in enumerate(storm.plan)]
    try:
        elapsed = await run_jobs(jobs, concurrency, on_progress=on_progress)
    finally:
        await connections.aclose()
    return elapsed, unacknowledged, split_pairs


async def check_revoked_session(
    base_url: str, secret: str, tokens: TokenFactory, user_id: str
) -> dict[str, Any]:
    """A signed-out session's token is refused on the very next request, on every worker.

    One connection per worker: the token works on each; ``session.revoked`` is delivered (to
    whichever worker); then the first request on each worker must be 401 "The session was
    revoked", though the token itself stays valid for an hour.
    """
    sid = "session_01STORMREVOKED0000000000"
    token = tokens.mint(user_id, sid=sid)
    headers = {"Authorization": f"Bearer {token}"}
    connections = WorkerConnections(base_url)
    await connections.open(per_worker=1)
    try:

        async def deliver(payload: dict[str, Any]) -> int:
            body, signed = signed_delivery(payload, secret)
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                return (await client.post(WEBHOOK_PATH, content=body, headers=signed)).status_code

        async def ask_every_worker() -> dict[str, tuple[int, str]]:
            answers: dict[str, tuple[int, str]] = {}
            for worker, idle in connections.idle.items():
                client = idle.get_nowait()
                try:
                    response = await client.get("/bench/me", headers=headers)
                finally:
                    idle.put_nowait(client)
                answered_by = response.headers.get("x-bench-worker", worker)
                detail = response.json().get("detail", "") if response.status_code != 200 else ""
                answers[answered_by] = (response.status_code, detail)
            return answers

        created = await deliver(factories.session_created(user_id, session_id=sid))
        before = await ask_every_worker()
        revoked = await deliver(factories.session_revoked(user_id, session_id=sid))
        after = await ask_every_worker()
    finally:
        await connections.aclose()
    refused = {(401, "The session was revoked")}
    return {
        "workers": len(after),
        "webhooks": [created, revoked],
        "before": {worker: status for worker, (status, _) in before.items()},
        "after": {worker: f"{status} {detail}" for worker, (status, detail) in after.items()},
        "ok": created == revoked == 200
        and len(after) >= 2
        and {status for status, _ in before.values()} == {200}
        and set(after.values()) == refused,
    }


async def scenario_storm(
    base_url: str,
    db_url: str,
    secret: str,
    *,
    users: int,
    deliveries: int,
    concurrency: int,
    tokens: TokenFactory | None = None,
) -> dict[str, Any]:
    """Scenario 1: the storm and its invariants; with ``tokens`` (the harness's JWKS signer), a
    revoked session checked on every worker.

    Its deliveries per second are the Python load generator's pace, not the server's (both our
    route and a floor come out bound by the client), so no speed ratio is drawn from it:
    scenario 7 measures ingest speed with wrk."""
    reset_tables(db_url)
    storm = make_storm("STORM", users, deliveries, seed=1)
    stats = DeliveryStats()
    deliverer = Deliverer(secret, stats)
    elapsed, unacknowledged, split_pairs = await _drive(base_url, storm, deliverer, concurrency)
    result = check_storm(db_url, storm)
    result["checks"]["no_delivery_lost"] = not unacknowledged and stats.given_up == 0
    if tokens is not None:
        survivor = next(
            e.user_id
            for e in storm.events
            if e.kind == "user" and e.user_id not in storm.deleted_users
        )
        revocation = await check_revoked_session(base_url, secret, tokens, survivor)
        result["checks"]["revoked_session_refused_on_every_worker"] = revocation["ok"]
        result["evidence"]["revoked_session"] = revocation
    deliveries_per_s = storm.deliveries / elapsed
    result["figures"] = {
        "deliveries": storm.deliveries,
        "unique_events": len(storm.events),
        "users": users,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(deliveries_per_s, 1),
        "unique_events_per_s": round(len(storm.events) / elapsed, 1),
        "concurrent_duplicate_pairs": sum(1 for _, copies in storm.plan if copies > 1),
        "pairs_answered_by_two_workers": split_pairs,
        "delivery_p50_ms": round(sorted(stats.latencies)[len(stats.latencies) // 2] * 1000, 2)
        if stats.latencies
        else None,
        "delivery_stats": stats.as_dict(),
    }
    return result


async def scenario_faults(
    base_url: str,
    db_url: str,
    secret: str,
    *,
    users: int,
    deliveries: int,
    concurrency: int,
    restart_postgres: Callable[[], float],
    kill_worker: Callable[[], int],
    wait_workers: Callable[[], None],
    set_failure_rate: Callable[[float], None],
) -> dict[str, Any]:
    """Scenario 2: the storm with PostgreSQL restarted, a worker SIGKILLed and a handler failing
    10% of the time; then failures are replayed and the deferred deliveries redelivered."""
    reset_tables(db_url)
    storm = make_storm("FAULT", users, deliveries, seed=2)
    stats = DeliveryStats()
    deliverer = Deliverer(secret, stats, defer_500=True)
    faults: dict[str, Any] = {}
    tasks: list[asyncio.Task[Any]] = []
    total_jobs = len(storm.plan)
    loop = asyncio.get_running_loop()

    def on_progress(done: int) -> None:
        if done == total_jobs * 3 // 10 and "postgres_restart_s" not in faults:
            faults["postgres_restart_s"] = None
            tasks.append(loop.create_task(_restart(faults, restart_postgres)))
        if done == total_jobs * 6 // 10 and "killed_worker" not in faults:
            faults["killed_worker"] = kill_worker()
            faults["killed_at_job"] = done

    set_failure_rate(0.1)
    try:
        elapsed, unacknowledged, split_pairs = await _drive(
            base_url, storm, deliverer, concurrency, on_progress=on_progress
        )
        await asyncio.gather(*tasks)
    finally:
        set_failure_rate(0.0)
    # The supervisor has respawned the killed worker by now; wait so the replay and the
    # redeliveries also run on two workers.
    await asyncio.to_thread(wait_workers)
    failed_before_replay = _count_failed(db_url)
    replay: dict[str, Any] = {"failed_in_ledger_before_replay": failed_before_replay}
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        response = await client.post("/bench/replay")
        replay["replay_failed_status"] = response.status_code
        replay["replay_failed_result"] = (
            response.json() if response.is_success else response.text[:200]
        )
    replay["failed_in_ledger_after_replay"] = _count_failed(db_url)
    # WorkOS redelivers everything that was not acknowledged; after a replay these come back as
    # duplicates, which is exactly what a real redelivery would meet.
    redeliver_stats = DeliveryStats()
    redeliverer = Deliverer(secret, redeliver_stats)
    redelivery = Storm(
        events=storm.events,
        plan=[(event, 1) for event in unacknowledged],
        users=storm.users,
        deleted_users=storm.deleted_users,
        revoked_sessions=storm.revoked_sessions,
    )
    _, still_unacknowledged, _ = await _drive(base_url, redelivery, redeliverer, concurrency)
    result = check_storm(db_url, storm)
    lost = len(still_unacknowledged) + result["evidence"]["not_processed"]
    result["checks"]["no_delivery_lost"] = lost == 0
    result["figures"] = {
        "deliveries": storm.deliveries,
        "unique_events": len(storm.events),
        "users": users,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(storm.deliveries / elapsed, 1),
        "faults": faults,
        "pairs_answered_by_two_workers": split_pairs,
        "refused": stats.refused,
        "retried": stats.retried,
        "deferred_500_redelivered": len(unacknowledged),
        "lost": lost,
        "replay": replay,
        "delivery_stats": stats.as_dict(),
        "redelivery_stats": redeliver_stats.as_dict(),
    }
    return result


async def _restart(faults: dict[str, Any], restart_postgres: Callable[[], float]) -> None:
    began = time.monotonic()
    faults["postgres_restart_s"] = round(await asyncio.to_thread(restart_postgres), 2)
    faults["postgres_restart_wall_s"] = round(time.monotonic() - began, 2)


def _count_failed(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM workos_events WHERE status <> 'processed'"
        ).fetchone()
    return int(row[0]) if row else 0
