"""Group commit: concurrent calls share a batch, and each caller still gets its own answer."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

import pytest

from app.batching import Batcher


class Unavailable(Exception):
    pass


class Recorder:
    """A `run` for the batcher: doubles numbers, rejects 666, fails as if the database were
    unreachable on -1, returns no results for a batch with 0, and records its batches."""

    def __init__(self, *, pause: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.pause = pause
        self._batch_started = asyncio.Event()

    async def started(self, count: int) -> None:
        """Wait until `count` batches have started."""
        while len(self.batches) < count:
            self._batch_started.clear()
            await self._batch_started.wait()

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self._batch_started.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.pause is not None:
                await self.pause.wait()
            await asyncio.sleep(0)
            if -1 in items:
                raise Unavailable("the database is down")
            if 666 in items:
                raise ValueError("666 is bad")
            if 0 in items:
                return []  # a run that forgets results
            return [item * 2 for item in items]
        finally:
            self.in_flight -= 1


def batcher(
    run: Callable[[list[int]], Awaitable[list[int]]],
    *,
    max_items: int = 64,
    max_bytes: int = 1000,
    concurrency: int = 1,
) -> Batcher[int, int]:
    return Batcher(
        run,
        max_items=max_items,
        max_bytes=max_bytes,
        size_of=lambda item: abs(item),
        concurrency=concurrency,
        shared_failure=lambda exc: isinstance(exc, Unavailable),
    )


async def test_a_lone_call_runs_at_once_as_a_batch_of_one() -> None:
    recorder = Recorder()
    assert await batcher(recorder.run).submit(21) == 42
    assert recorder.batches == [[21]]


async def test_concurrent_calls_share_batches_and_each_gets_its_own_result() -> None:
    recorder = Recorder()
    calls = batcher(recorder.run, max_items=10)
    results = await asyncio.gather(*(calls.submit(n) for n in range(1, 26)))
    assert results == [n * 2 for n in range(1, 26)]
    assert [len(b) for b in recorder.batches] == [10, 10, 5]


async def test_calls_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    pause = asyncio.Event()
    recorder = Recorder(pause=pause)
    calls = batcher(recorder.run)
    first = asyncio.ensure_future(calls.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(calls.submit(n)) for n in (2, 3, 4)]
    pause.set()
    assert await asyncio.gather(first, *later) == [2, 4, 6, 8]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_a_failing_call_fails_alone_and_the_rest_of_its_batch_succeeds() -> None:
    recorder = Recorder()
    calls = batcher(recorder.run)
    results = await asyncio.gather(*(calls.submit(n) for n in (1, 666, 3)), return_exceptions=True)
    assert (results[0], results[2]) == (2, 6)
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [[1, 666, 3], [1], [666], [3]]


async def test_an_unreachable_database_fails_the_whole_batch_without_retrying_each() -> None:
    recorder = Recorder()
    calls = batcher(recorder.run)
    results = await asyncio.gather(*(calls.submit(n) for n in (1, -1, 3)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    assert recorder.batches == [[1, -1, 3]]


async def test_a_batch_stops_at_max_bytes_and_a_large_call_goes_alone() -> None:
    recorder = Recorder()
    calls = batcher(recorder.run, max_bytes=100)
    await asyncio.gather(*(calls.submit(n) for n in (40, 50, 20, 500, 30)))
    assert recorder.batches == [[40, 50], [20], [500], [30]]


async def test_at_most_concurrency_batches_run_at_once() -> None:
    pause = asyncio.Event()
    recorder = Recorder(pause=pause)
    calls = batcher(recorder.run, max_items=2, concurrency=3)
    pending = [asyncio.ensure_future(calls.submit(n)) for n in range(1, 21)]
    await recorder.started(3)
    pause.set()
    assert await asyncio.gather(*pending) == [n * 2 for n in range(1, 21)]
    assert recorder.most_in_flight == 3


async def test_a_caller_that_goes_away_does_not_stop_its_call() -> None:
    pause = asyncio.Event()
    recorder = Recorder(pause=pause)
    calls = batcher(recorder.run)
    gone = asyncio.ensure_future(calls.submit(1))
    stays = asyncio.ensure_future(calls.submit(2))
    await recorder.started(1)
    gone.cancel()
    pause.set()
    assert await stays == 4
    with pytest.raises(asyncio.CancelledError):
        await gone
    await calls.wait_idle()
    assert recorder.batches == [[1, 2]]


async def test_a_run_that_returns_too_few_results_fails_its_callers_instead_of_hanging() -> None:
    recorder = Recorder()
    calls = batcher(recorder.run)
    results = await asyncio.gather(*(calls.submit(n) for n in (0, 1)), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1] == 2


async def test_a_call_queued_as_the_last_batch_ends_still_runs() -> None:
    """A call that arrives between a batch's end and its flusher's exit must still run: if
    the flusher still counted as running, the call would wait for some later caller, and a
    record nothing else follows would never be written."""
    last_batch_ending = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        # Wakes `late` before the flusher returns; no await follows here, so the flusher
        # finds its queue empty and ends before `late` submits.
        last_batch_ending.set()
        return [item * 2 for item in items]

    calls = batcher(run)

    async def late() -> int:
        await last_batch_ending.wait()
        return await calls.submit(2)

    late_call = asyncio.ensure_future(late())
    assert await calls.submit(1) == 2
    assert await asyncio.wait_for(late_call, 2) == 4


async def test_a_batch_runs_in_no_callers_context() -> None:
    """A batch serves several callers: the first one's request id (log fields) or trace must
    not become the whole batch's."""
    request: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)
    seen: list[str | None] = []

    async def run(items: list[int]) -> list[int]:
        seen.append(request.get())
        return items

    shared = batcher(run)

    async def call(item: int) -> int:
        request.set(f"request-{item}")
        return await shared.submit(item)

    assert await asyncio.gather(call(1), call(2), call(3)) == [1, 2, 3]
    assert seen
    assert set(seen) == {None}
