"""Work that must finish after its caller is gone: forwards already claimed, and writes that
keep trying while the database is unreachable. Shutdown waits for all of it (`drain`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from app import db
from app.errors import GateError

logger = logging.getLogger(__name__)

# How long a process keeps trying a write (an outcome, a claim's release) while the database
# is unreachable.
RETRY_WRITE_SECONDS = 600.0
Result = TypeVar("Result")


class BackgroundWork:
    def __init__(self, *, retry_write_seconds: float = RETRY_WRITE_SECONDS) -> None:
        self._retry_write_seconds = retry_write_seconds
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, Result]) -> asyncio.Task[Result]:
        """Run `work` in a task of its own that shutdown waits for."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def retry_write(self, write: Callable[[], Awaitable[None]], *, what: str) -> None:
        """Run `write` until the database takes it (bounded in time)."""

        async def until_done() -> None:
            delay, deadline = 0.1, time.monotonic() + self._retry_write_seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                try:
                    await write()
                except db.DatabaseUnreachable:
                    delay = min(delay * 2, 5.0)
                else:
                    return
            logger.error("gave up trying to %s: the database stayed unreachable", what)

        self.start(until_done())

    async def drain(self, *, grace_seconds: float) -> None:
        """Wait up to `grace_seconds` for everything started here (shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # seen here, even when the client went away before it finished
        # A refusal or a failed forward is logged where it happens; anything else is a bug, or
        # a database error no one will see otherwise.
        if error is not None and not isinstance(error, GateError):
            logger.error("background work failed", exc_info=error)
