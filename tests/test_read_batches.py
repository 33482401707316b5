"""`ReadBatches`: concurrent reads share statements, and every read gets its own outcome,
whatever fails or is cancelled around it."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from fastapi_workos_authkit import DatabaseUnavailableError
from fastapi_workos_authkit._auth.read_batches import ReadBatches

pytestmark = pytest.mark.anyio


class Reads:
    """``read_many`` for the tests: answers ``key * 10`` for each key, after ``gate`` opens, and
    records the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = anyio.Event()
        self.fail: str | None = None  # raise DatabaseUnavailableError(fail), new each call

    async def __call__(self, keys: Sequence[int]) -> list[int]:
        self.batches.append(list(keys))
        await self.gate.wait()
        if self.fail is not None:
            raise DatabaseUnavailableError(self.fail)
        return [key * 10 for key in keys]


async def wait_until_queued(batches: ReadBatches[int, int], count: int) -> None:
    """Lets every other task run until it waits, then checks ``count`` reads are queued."""
    await anyio.wait_all_tasks_blocked()
    assert batches.queued == count


async def read_all(batches: ReadBatches[int, int], keys: list[int]) -> dict[int, object]:
    """Reads every key concurrently; returns key -> value or the exception raised."""
    outcomes: dict[int, object] = {}

    async def one(key: int) -> None:
        try:
            outcomes[key] = await batches.read(key)
        except Exception as exc:
            outcomes[key] = exc

    async with anyio.create_task_group() as group:
        for key in keys:
            group.start_soon(one, key)
    return outcomes


async def test_reads_that_queue_behind_a_busy_connection_share_one_batch() -> None:
    reads = Reads()
    batches = ReadBatches(reads, concurrency=1)
    outcomes: dict[int, object] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _store(outcomes, batches, 0))
        await anyio.wait_all_tasks_blocked()
        for key in range(1, 8):
            group.start_soon(lambda key=key: _store(outcomes, batches, key))
        await wait_until_queued(batches, 7)
        reads.gate.set()
    assert reads.batches == [[0], [1, 2, 3, 4, 5, 6, 7]]
    assert outcomes == {key: key * 10 for key in range(8)}
    assert batches.queued == 0


async def _store(outcomes: dict[int, object], batches: ReadBatches[int, int], key: int) -> None:
    outcomes[key] = await batches.read(key)


async def test_an_idle_store_reads_each_key_alone_and_at_most_concurrency_batches_run() -> None:
    reads = Reads()
    reads.gate.set()
    batches = ReadBatches(reads, concurrency=2)
    assert await batches.read(4) == 40
    assert await batches.read(5) == 50
    assert reads.batches == [[4], [5]]

    reads = Reads()
    batches = ReadBatches(reads, concurrency=2)
    async with anyio.create_task_group() as group:
        for key in range(6):
            group.start_soon(batches.read, key)
        await wait_until_queued(batches, 4)
        assert len(reads.batches) == 2  # two connections busy, four reads waiting
        reads.gate.set()
    assert sorted(key for batch in reads.batches for key in batch) == list(range(6))


async def test_a_batch_never_holds_more_than_max_batch_keys() -> None:
    reads = Reads()
    batches = ReadBatches(reads, concurrency=1, max_batch=3)
    async with anyio.create_task_group() as group:
        group.start_soon(batches.read, 0)
        await anyio.wait_all_tasks_blocked()
        for key in range(1, 8):
            group.start_soon(batches.read, key)
        await wait_until_queued(batches, 7)
        reads.gate.set()
    assert reads.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_a_failed_batch_fails_each_of_its_reads_with_its_own_exception() -> None:
    reads = Reads()
    reads.gate.set()
    reads.fail = "The database is unavailable: server closed"
    batches = ReadBatches(reads, concurrency=1)
    outcomes = await read_all(batches, [1, 2, 3])
    errors = list(outcomes.values())
    assert all(isinstance(error, DatabaseUnavailableError) for error in errors)
    assert all(str(error) == "The database is unavailable: server closed" for error in errors)
    assert len({id(error) for error in errors}) == 3  # one object per read, no shared traceback
    # The connection was handed on each time: the store is usable again.
    reads.fail = None
    assert await batches.read(9) == 90


async def test_a_queued_read_that_is_cancelled_leaves_the_queue() -> None:
    reads = Reads()
    batches = ReadBatches(reads, concurrency=1)
    outcomes: dict[int, object] = {}
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _store(outcomes, batches, 0))
        await anyio.wait_all_tasks_blocked()
        group.start_soon(lambda: _store(outcomes, batches, 1))
        await wait_until_queued(batches, 1)
        cancelled = anyio.CancelScope()

        async def cancellable() -> None:
            with cancelled:
                await batches.read(2)

        group.start_soon(cancellable)
        await wait_until_queued(batches, 2)
        cancelled.cancel()
        await wait_until_queued(batches, 1)
        reads.gate.set()
    assert reads.batches == [[0], [1]]
    assert outcomes == {0: 0, 1: 10}


async def test_a_leader_whose_client_hangs_up_still_answers_its_batch() -> None:
    reads = Reads()
    batches = ReadBatches(reads, concurrency=1)
    outcomes: dict[int, object] = {}
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await batches.read(0)

    async with anyio.create_task_group() as group:
        group.start_soon(lead)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(lambda: _store(outcomes, batches, 1))
        await wait_until_queued(batches, 1)
        leader.cancel()  # shielded: the read in flight goes on
        await anyio.wait_all_tasks_blocked()
        reads.gate.set()
    assert outcomes == {1: 10}
    assert reads.batches == [[0], [1]]


async def test_a_read_handed_the_lead_as_it_is_cancelled_passes_the_lead_on() -> None:
    reads = Reads()
    reads.gate.set()
    gate = anyio.Event()

    async def slow_first(keys: Sequence[int]) -> list[int]:
        if keys == [0]:
            await gate.wait()
        return await reads(keys)

    batches = ReadBatches(slow_first, concurrency=1)
    outcomes: dict[int, object] = {}
    doomed = anyio.CancelScope()

    async def handed_the_lead() -> None:
        with doomed:
            await batches.read(1)

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _store(outcomes, batches, 0))
        await anyio.wait_all_tasks_blocked()
        group.start_soon(handed_the_lead)
        await wait_until_queued(batches, 1)
        group.start_soon(lambda: _store(outcomes, batches, 2))
        await wait_until_queued(batches, 2)
        # Read 0's batch ends and hands the connection to read 1, which is cancelled before it
        # runs: read 2 must still be read, not wait forever.
        doomed.cancel()
        gate.set()
    assert outcomes == {0: 0, 2: 20}
    assert [2] in reads.batches
    assert batches.queued == 0
    assert await batches.read(3) == 30  # the connection is free again


def test_concurrency_and_max_batch_must_be_positive() -> None:
    async def read_many(keys: Sequence[int]) -> list[int]:
        return list(keys)

    with pytest.raises(ValueError, match="at least 1"):
        ReadBatches(read_many, concurrency=0)
    with pytest.raises(ValueError, match="at least 1"):
        ReadBatches(read_many, concurrency=1, max_batch=0)
