"""`SyncHandlerSlots`: the slots and threads that run sync Action handlers, on their own.

The end-to-end behaviour (504, 503, rollbacks) is in test_actions.py; these tests pin the slot
policy itself with an injected clock: first come first served, at most ``starting`` handlers
starting at once, slow handlers still reaching every slot, abandoned threads keeping theirs.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable

import anyio
import pytest

from fastapi_workos_authkit._routes.action_threads import SyncHandlerSlots, SyncHandlerTicket

pytestmark = pytest.mark.anyio

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Handler:
    """A sync handler that records that it started, then blocks until released."""

    def __init__(self, name: str, started: list[str]) -> None:
        self.name = name
        self.started = started
        self.running = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.started.append(self.name)
        self.running.set()
        self.release.wait(10)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) for ``condition``, which another thread or a timer makes true."""
    for _ in range(10_000):
        if condition():
            return
        await anyio.sleep(0.001)
    raise AssertionError("the condition never came true")


def submit(slots: SyncHandlerSlots, work: Callable[[], None]) -> SyncHandlerTicket:
    ticket = slots.submit(work, timeout=30)
    assert ticket is not None
    return ticket


async def test_short_handlers_share_one_thread_and_slow_ones_get_more() -> None:
    clock = FakeClock()
    slots = SyncHandlerSlots(5, starting=2, grace=0.01, clock=clock)
    started: list[str] = []
    handlers = [Handler(name, started) for name in ("a", "b", "c")]
    try:
        tickets = [submit(slots, handler) for handler in handlers]
        await until(lambda: started == ["a"])
        # "a" started less than `grace` ago (by the clock): "b" has a slot but is left to a's
        # thread, and "c" waits in line, since two handlers are starting already.
        assert (slots.taken, slots.waiting, slots.starting_now(), slots.threads) == (2, 1, 2, 1)
        for _ in range(5):  # several looks at the line go by: nothing changes
            await anyio.sleep(0.01)
        assert started == ["a"]
        # "a" is still running after `grace`: it is waiting on I/O. "b" gets a thread of its
        # own, and "c" a slot, left to b's thread while "b" is fresh.
        clock.now += 1.0
        await until(lambda: started == ["a", "b"])
        await until(lambda: slots.waiting == 0)
        assert (slots.taken, slots.threads) == (3, 2)
        clock.now += 1.0
        await until(lambda: started == ["a", "b", "c"])
        assert slots.threads == 3
    finally:
        for handler in handlers:
            handler.release.set()
    for ticket in tickets:
        assert await ticket.wait()
    assert slots.taken == 0


async def test_one_thread_runs_short_handlers_one_after_another() -> None:
    slots = SyncHandlerSlots(20, grace=60.0)  # nothing ever counts as waiting on I/O
    names: list[str] = []
    tickets = [submit(slots, lambda n=n: names.append(f"h{n}")) for n in range(10)]
    for ticket in tickets:
        assert await ticket.wait()
    assert names == [f"h{n}" for n in range(10)]
    assert (slots.threads, slots.taken) == (1, 0)


async def test_slow_handlers_still_reach_every_slot() -> None:
    # The real clock: handlers blocked on I/O stop counting as starting after `grace`.
    slots = SyncHandlerSlots(6, starting=2, grace=0.002)
    started: list[str] = []
    handlers = [Handler(f"h{n}", started) for n in range(8)]
    try:
        tickets = [submit(slots, handler) for handler in handlers]
        await until(lambda: len(started) == 6)
        assert (slots.taken, slots.waiting, slots.threads) == (6, 2, 6)
        handlers[0].release.set()
        await until(lambda: len(started) == 7)
    finally:
        for handler in handlers:
            handler.release.set()
    for ticket in tickets:
        assert await ticket.wait()
    assert started == [f"h{n}" for n in range(8)]  # first come, first served
    assert slots.taken == 0


async def test_the_line_is_served_in_order_as_slots_come_back() -> None:
    clock = FakeClock()
    slots = SyncHandlerSlots(1, clock=clock)
    order: list[str] = []
    first = Handler("first", order)
    try:
        tickets = [submit(slots, first)]
        await until(lambda: order == ["first"])
        tickets += [submit(slots, lambda name=name: order.append(name)) for name in "bcd"]
        assert slots.waiting == 3
    finally:
        first.release.set()
    for ticket in tickets:
        assert await ticket.wait()
    assert order == ["first", "b", "c", "d"]
    assert (slots.taken, slots.waiting) == (0, 0)


async def test_a_withdrawn_run_leaves_the_line_and_never_runs() -> None:
    slots = SyncHandlerSlots(1)
    started: list[str] = []
    first = Handler("first", started)
    try:
        running = submit(slots, first)
        await until(lambda: started == ["first"])
        waiting = submit(slots, lambda: started.append("withdrawn"))
        after = submit(slots, lambda: started.append("after"))
        assert slots.withdraw(waiting)
        assert not slots.withdraw(waiting)
        assert not slots.withdraw(running)  # it holds a slot: only its thread gives it back
        assert slots.waiting == 1
    finally:
        first.release.set()
    assert await running.wait()
    assert await after.wait()
    assert started == ["first", "after"]
    assert slots.taken == 0


async def test_the_deadline_ends_the_wait_not_the_run() -> None:
    slots = SyncHandlerSlots(1)
    started: list[str] = []
    slow = Handler("slow", started)
    try:
        ticket = slots.submit(slow, timeout=0.05)
        assert ticket is not None
        assert not await ticket.wait()  # the deadline passed first
        assert slots.taken == 1  # its thread still runs, and keeps its slot
    finally:
        slow.release.set()
    assert await ticket.wait(until_deadline=False)
    assert slots.taken == 0


async def test_abandoned_threads_keep_their_slots_and_refuse_newcomers_when_all_are() -> None:
    slots = SyncHandlerSlots(2)
    started: list[str] = []
    stuck = [Handler(f"stuck{n}", started) for n in range(2)]
    try:
        tickets = [submit(slots, handler) for handler in stuck]
        await until(lambda: len(started) == 2)
        slots.abandon(tickets[0])
        # One slot of two is abandoned: a newcomer waits in line for the other.
        waiting = submit(slots, lambda: started.append("waited"))
        assert slots.withdraw(waiting)
        slots.abandon(tickets[1])
        slots.abandon(tickets[1])  # counted once
        assert slots.submit(lambda: started.append("refused"), timeout=30) is None
        stuck[0].release.set()
        assert await tickets[0].wait(until_deadline=False)
        # A thread that ended gave its slot back: newcomers are served again.
        assert await submit(slots, lambda: started.append("served")).wait()
    finally:
        for handler in stuck:
            handler.release.set()
    assert await tickets[1].wait(until_deadline=False)
    assert started == ["stuck0", "stuck1", "served"]
    assert slots.taken == 0


async def test_a_handler_sees_the_context_variables_of_its_request() -> None:
    slots = SyncHandlerSlots(2)
    seen: list[str] = []
    REQUEST_ID.set("request-42")
    assert await submit(slots, lambda: seen.append(REQUEST_ID.get())).wait()
    assert seen == ["request-42"]


def test_a_thread_that_outlives_its_event_loop_still_gives_its_slot_back() -> None:
    slots = SyncHandlerSlots(1)
    started: list[str] = []
    handler = Handler("orphan", started)

    async def submit_and_leave() -> None:
        submit(slots, handler)
        await asyncio.to_thread(handler.running.wait, 10)

    asyncio.run(submit_and_leave())  # the loop is closed before the handler returns
    assert slots.taken == 1
    handler.release.set()
    gone = threading.Event()
    for _ in range(1000):
        if slots.taken == 0:
            gone.set()
            break
        gone.wait(0.01)
    assert gone.is_set()
