"""The thread and loop model (docs/architecture.md): what runs on the event loop, what in a thread.

- Database transactions run in worker threads; nothing waits on the database on the loop.
- An async event handler is awaited on the app's loop while the pipeline's thread holds the
  transaction; called from plain synchronous code, it gets a short-lived loop of its own.
- An async Action handler runs on the loop, and its session refuses database I/O there: its
  queries go through ``await session.run_sync(...)`` in a worker thread.
- The Events API poller lives in an anyio task group.
- Work that outlives a request (the JWKS refresh) runs in the lifespan's task group.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Field, Session, SQLModel, select

from fastapi_workos_authkit import (
    ActionResponse,
    ActionSession,
    ActionVerdict,
    AuthKit,
    Event,
    HandlerError,
    User,
    UserRegistrationAction,
)
from fastapi_workos_authkit._lifespan_tasks import LifespanTasks
from fastapi_workos_authkit._recovery import EventsPoller
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit.testing import (
    factories,
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from tests.conftest import ACTION_SECRET, WEBHOOK_SECRET, deliver

pytestmark = pytest.mark.anyio

NOW = 1768478400.0
NOW_MS = 1768478400000
LOGGER = "fastapi_workos_authkit"


class ModelNote(SQLModel, table=True):
    """A row written by the handlers under test."""

    __tablename__ = "test_concurrency_notes"

    id: int | None = Field(default=None, primary_key=True)
    note: str


def make_kit(engine: Engine) -> AuthKit:
    return AuthKit(
        engine=engine, action_secret=ACTION_SECRET, webhook_secret=WEBHOOK_SECRET, clock=lambda: NOW
    )


@asynccontextmanager
async def running(authkit: AuthKit) -> AsyncIterator[httpx.AsyncClient]:
    """The Actions and webhook routes beside a bare route, ``GET /ping``, on one app."""
    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        await anyio.to_thread.run_sync(
            lambda: SQLModel.metadata.create_all(authkit.engine, tables=[ModelNote.__table__])  # type: ignore[attr-defined]
        )
        yield client


async def post_action(client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response:
    body, headers = signed_action_request(payload, ACTION_SECRET, timestamp_ms=NOW_MS)
    return await client.post("/workos/action", content=body, headers=headers)


def notes(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [row.note for row in session.exec(select(ModelNote)).all()]


# --- Async Action handlers: the loop keeps serving while their database work runs ---------------


async def test_the_loop_serves_other_requests_while_an_async_action_handler_queries(
    engine: Engine,
) -> None:
    kit = make_kit(engine)
    querying = threading.Event()
    served = threading.Event()
    threads: dict[str, int] = {}

    def slow_query(session: Session, note: str) -> bool:
        threads["query"] = threading.get_ident()
        session.add(ModelNote(note=note))
        session.flush()  # the database really holds the handler's work now
        session.exec(select(ModelNote)).all()
        querying.set()
        # Had this run on the loop, /ping could not be answered and this wait would time out.
        return served.wait(timeout=30)

    @kit.action("user_registration")
    async def registration(
        session: ActionSession, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        threads["handler"] = threading.get_ident()
        loop_answered = await session.run_sync(slow_query, "while the loop served /ping")
        return response.allow() if loop_answered else response.deny("the loop was blocked")

    replies: dict[str, httpx.Response] = {}
    async with running(kit) as client:

        async def decide() -> None:
            replies["action"] = await post_action(client, user_registration_action())

        async with anyio.create_task_group() as group:
            group.start_soon(decide)
            await anyio.to_thread.run_sync(querying.wait)
            replies["ping"] = await client.get("/ping")  # served while the query is running
            served.set()

    assert replies["ping"].json() == {"pong": "yes"}
    assert verify_action_response(replies["action"].content, ACTION_SECRET).payload.verdict == (
        "Allow"
    )
    assert threads["handler"] == threading.get_ident()  # the handler itself is on the loop
    assert threads["query"] != threading.get_ident()  # its database work is not
    assert notes(engine) == ["while the loop served /ping"]  # committed with the verdict


async def test_an_async_action_handler_querying_on_the_loop_is_refused_with_the_fix(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    kit = make_kit(engine)

    @kit.action("user_registration")
    async def registration(
        session: ActionSession, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        session.add(ModelNote(note="never committed"))
        session.exec(select(ModelNote)).all()  # autoflush and a query, on the loop
        return response.allow()

    caplog.set_level(logging.ERROR, logger=LOGGER)
    async with running(kit) as client:
        reply = await post_action(client, user_registration_action(action_id="action_onloop"))
    assert reply.status_code == 500
    assert notes(engine) == []
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "action_onloop" in error
    assert "SessionOnLoopError" in error
    assert "await session.run_sync(" in error


async def test_an_async_action_handler_may_add_rows_directly_and_they_are_committed(
    engine: Engine,
) -> None:
    kit = make_kit(engine)

    @kit.action("user_registration")
    async def registration(
        session: ActionSession, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        await anyio.lowlevel.checkpoint()
        session.add(ModelNote(note=f"audit {action.id}"))  # no database I/O until the commit
        return response.deny("not today")

    async with running(kit) as client:
        reply = await post_action(client, user_registration_action(action_id="action_add"))
    assert reply.status_code == 200
    assert notes(engine) == ["audit action_add"]


async def test_run_sync_calls_of_one_handler_take_turns(engine: Engine) -> None:
    kit = make_kit(engine)
    inside = 0
    most_inside = 0
    guard = threading.Lock()

    def write(session: Session, note: str) -> None:
        nonlocal inside, most_inside
        with guard:
            inside += 1
            most_inside = max(most_inside, inside)
        session.add(ModelNote(note=note))
        session.flush()
        with guard:
            inside -= 1

    @kit.action("user_registration")
    async def registration(
        session: ActionSession, action: UserRegistrationAction, response: ActionResponse
    ) -> ActionVerdict:
        async with anyio.create_task_group() as group:
            for number in range(5):
                group.start_soon(session.run_sync, write, f"note {number}")
        return response.allow()

    async with running(kit) as client:
        reply = await post_action(client, user_registration_action())
    assert reply.status_code == 200
    assert sorted(notes(engine)) == [f"note {n}" for n in range(5)]
    assert most_inside == 1  # one thread at a time uses the session


# --- Async event handlers: on the app's loop, or on a loop of their own outside the app --------


async def test_an_async_event_handler_runs_on_the_loop_while_the_thread_holds_the_transaction(
    engine: Engine,
) -> None:
    kit = make_kit(engine)
    seen: dict[str, Any] = {}

    @kit.on("user.created")
    async def welcome(session: Session, event: Event[User]) -> None:
        seen["thread"] = threading.get_ident()
        await anyio.lowlevel.checkpoint()
        session.add(ModelNote(note=f"welcome {event.data.id}"))  # the pipeline commits it

    async with running(kit) as client:
        reply = await deliver(client, factories.user_created("user_01LOOP"), timestamp_ms=NOW_MS)
    assert reply.status_code == 200
    assert seen["thread"] == threading.get_ident()
    assert notes(engine) == ["welcome user_01LOOP"]


def test_an_async_event_handler_works_from_plain_synchronous_code(engine: Engine) -> None:
    kit = make_kit(engine)
    create_tables(engine)
    SQLModel.metadata.create_all(engine, tables=[ModelNote.__table__])  # type: ignore[attr-defined]
    seen: list[str] = []

    @kit.on("user.created")
    async def welcome(session: Session, event: Event[User]) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(event.data.id)
        session.add(ModelNote(note=f"welcome {event.data.id}"))

    # A script or a test calling the pipeline directly: no loop, no worker thread.
    user = User.model_validate(factories.user("user_01SCRIPT"))
    kit.pipeline.apply_user_snapshot(user, source="script")
    assert seen == ["user_01SCRIPT"]
    assert notes(engine) == ["welcome user_01SCRIPT"]


async def test_an_async_event_handler_works_when_the_pipeline_is_called_on_the_loop(
    engine: Engine,
) -> None:
    kit = make_kit(engine)
    await anyio.to_thread.run_sync(create_tables, engine)
    await anyio.to_thread.run_sync(
        lambda: SQLModel.metadata.create_all(engine, tables=[ModelNote.__table__])  # type: ignore[attr-defined]
    )

    @kit.on("user.created")
    async def broken(session: Session, event: Event[User]) -> None:
        await anyio.lowlevel.checkpoint()
        session.add(ModelNote(note="rolled back"))
        raise LookupError("no tenant")

    # Blocking the loop is the caller's choice here (as the docs' test helpers do); it works.
    with pytest.raises(HandlerError) as caught:
        kit.pipeline.apply_user_snapshot(User.model_validate(factories.user("user_01ONLOOP")))
    assert isinstance(caught.value.__cause__, LookupError)
    assert await anyio.to_thread.run_sync(notes, engine) == []


# --- The poller: an anyio task group opened by start() and closed by stop() --------------------


async def test_the_poller_must_be_stopped_by_the_task_that_started_it() -> None:
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    poller = EventsPoller(job, interval=3600)
    await poller.start()
    await poller.start()  # a second start does nothing
    assert poller.running
    refusals: list[RuntimeError] = []

    async def stop_elsewhere() -> None:
        try:
            await poller.stop()
        except RuntimeError as exc:
            refusals.append(exc)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(stop_elsewhere)
        assert len(refusals) == 1
        assert "same task" in str(refusals[0])
        assert poller.running
    finally:
        await poller.stop()
    assert not poller.running
    assert runs == 1
    await poller.stop()  # stopping twice is harmless


# --- LifespanTasks: the lifespan's task group, for work no request waits for ------------------


async def test_lifespan_tasks_run_work_past_the_caller_until_the_lifespan_ends() -> None:
    tasks = LifespanTasks()
    finished: list[str] = []
    cancelled: list[str] = []
    release = anyio.Event()

    async def work(name: str) -> None:
        try:
            await release.wait()
            finished.append(name)
        except anyio.get_cancelled_exc_class():
            cancelled.append(name)
            raise

    # Outside a lifespan nothing would outlive the caller: start_soon refuses, runs nothing.
    assert not tasks.start_soon(lambda: work("outside"), name="outside")
    async with tasks.running():
        assert tasks.start_soon(lambda: work("first"), name="first")
        await anyio.wait_all_tasks_blocked()
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert finished == ["first"]
        release = anyio.Event()
        assert tasks.start_soon(lambda: work("pending"), name="pending")
        async with tasks.running():  # a nested lifespan on the same loop shares the group
            pass
        await anyio.wait_all_tasks_blocked()
        assert cancelled == []
    # The lifespan ended: the work still running was cancelled, and waited for.
    assert (finished, cancelled) == (["first"], ["pending"])
    assert not tasks.start_soon(lambda: work("after"), name="after")


async def test_lifespan_tasks_log_a_failing_work_and_keep_the_lifespan_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = LifespanTasks()

    ran: list[str] = []

    async def broken() -> None:
        raise ValueError("unforeseen")

    async def healthy() -> None:
        ran.append("healthy")

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        async with tasks.running():
            assert tasks.start_soon(broken, name="broken work")
            await anyio.wait_all_tasks_blocked()
            # The group was not cancelled (that would cancel the lifespan's task with it): the
            # lifespan goes on past a checkpoint, and later work still runs.
            await anyio.lowlevel.checkpoint()
            assert tasks.start_soon(healthy, name="healthy work")
            await anyio.wait_all_tasks_blocked()
            ran.append("lifespan")
    assert ran == ["healthy", "lifespan"]
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "the background task broken work failed"
    assert record.exc_info is not None


async def test_an_error_in_the_lifespan_body_propagates_as_itself() -> None:
    # Not wrapped in the ExceptionGroup a task group raises for its host task's errors: an app's
    # lifespan sees the exception it raised.
    tasks = LifespanTasks()
    with pytest.raises(ValueError, match="app failed"):
        async with tasks.running():
            raise ValueError("app failed")
