"""Keeping an attempt's lease alive while its forward is in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Runs `renew` every `interval_seconds` inside `async with`, until it returns False.

    A timer rather than a task: nearly every forward ends long before its first renewal, and
    then keeping the lease costs one timer instead of a task to start, cancel and wait for.
    """

    def __init__(self, renew: Callable[[], Awaitable[bool]], *, interval_seconds: float) -> None:
        self._renew = renew
        self._interval_seconds = interval_seconds
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        self._schedule()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._renewal is not None:  # one is running: it must not outlive the attempt
            await cancel_and_wait(self._renewal)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._interval_seconds, self._start_renewal)

    def _start_renewal(self) -> None:
        self._timer = None
        self._renewal = asyncio.create_task(self._renew_and_schedule())

    async def _renew_and_schedule(self) -> None:
        try:
            held = await self._renew()
        except Exception:
            # A renewal that failed for any reason is tried again: stopping would let the lease
            # run out under a forward still in flight, and another request would run it twice.
            logger.exception("could not renew a lease; will retry")
            held = True
        if held:
            self._schedule()
