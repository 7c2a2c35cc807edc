"""Group commit: concurrent calls of one statement share a round trip and a commit.

Every trigger costs at least one durable commit, and a commit costs far more than the row it
writes, so sharing it is the cheapest way to serve many triggers at once (its ADR:
docs/adr/0003-group-commit.md). A `Batcher` queues calls while a batch is in flight and sends
the queue as the next batch, so it adds no delay at low load (a lone call is a batch of one) and
batches grow with the load. A caller still gets its answer only after its batch committed, so a
202 or a recorded outcome is exactly as durable as with one transaction per call.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `run(items)` (which returns one result per item, in order) on batches of the
    items submitted concurrently: at most `max_items` and about `max_bytes` per batch (an item
    larger than that goes alone), at most `concurrency` batches at once.

    When a batch of several fails, each of its items runs again alone, so a bad item fails only
    its own call; except for errors `shared_failure` recognises (the database is unreachable),
    which every item of the batch gets as they are.
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        max_items: int,
        max_bytes: int,
        size_of: Callable[[Item], int],
        concurrency: int,
        shared_failure: Callable[[Exception], bool],
    ) -> None:
        self._run = run
        self._max_items = max(1, max_items)
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._concurrency = max(1, concurrency)
        self._shared_failure = shared_failure
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # Flushers that may still take from the queue. It drops in the step that finds the
        # queue empty; a task leaves `_flushers` a turn of the loop later, and a call queued
        # in between, seeing no room for a flusher, would wait for the next caller: maybe none.
        self._taking = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._taking < self._concurrency:
            self._taking += 1
            # A flusher serves every caller whose call it takes: it starts with an empty
            # context, not the first caller's (its request's log fields, its trace).
            flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def wait_idle(self) -> None:
        """Wait for the batches in flight (shutdown)."""
        while self._flushers:
            await asyncio.wait(set(self._flushers))

    async def _flush(self) -> None:
        # Started by a submit, run from the next turn of the loop: the calls that arrived
        # meanwhile join the first batch.
        try:
            while self._queue:
                await self._run_batch(self._next_batch())
        finally:
            self._taking -= 1

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch = [self._queue.popleft()]
        size = self._size_of(batch[0][0])
        while self._queue and len(batch) < self._max_items:
            size += self._size_of(self._queue[0][0])
            if size > self._max_bytes:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):  # a bug; its callers must not wait forever
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)} calls")
        except Exception as exc:
            if len(batch) == 1 or self._shared_failure(exc):
                for _, future in batch:
                    _settle(future, exception=exc)
                return
            for single in batch:
                await self._run_batch([single])
            return
        except BaseException:  # cancelled (shutdown): the callers must not wait forever
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=False):
            if not future.done():  # its caller went away; the call ran all the same
                future.set_result(result)


def _settle(future: asyncio.Future[Result], *, exception: Exception) -> None:
    if not future.done():
        future.set_exception(exception)
