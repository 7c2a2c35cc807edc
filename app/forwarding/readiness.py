"""Whether n8n is ready to run workflows, as far as this process can tell.

Optimistic: n8n counts as ready until a forward finds it absent (connection refused) or starting
(its own placeholder pages). Then one probe asks `GET /healthz/readiness` every `poll_seconds`
until n8n says it is ready, and every forward and delivery waiting meanwhile goes on together.
n8n reports ready a few seconds before its webhook routes are mounted, so a forward that still
finds it starting marks it not ready again, and sends again no sooner than a poll later. After
`give_up_seconds` without a ready answer (a proxy that hides the endpoint, say) n8n counts as
ready again, and forwards find out for themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable

from app.tasks import cancel_and_wait

Probe = Callable[[], Awaitable[bool]]


class Readiness:
    def __init__(self, probe: Probe, *, poll_seconds: float, give_up_seconds: float) -> None:
        self._probe = probe
        self._poll_seconds = poll_seconds
        self._give_up_seconds = give_up_seconds
        self._ready = asyncio.Event()
        self._ready.set()
        self._prober: asyncio.Task[None] | None = None
        self._became_ready_at: float | None = None
        self._outage = False

    async def __aenter__(self) -> Readiness:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._prober)

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    def settling(self, seconds: float) -> bool:
        """True within `seconds` of n8n becoming ready again after it was not."""
        ready_at = self._became_ready_at
        return ready_at is not None and time.monotonic() - ready_at < seconds

    def saw_answer(self) -> None:
        """n8n answered a forward as itself (a workflow's answer or n8n's own 404)."""
        self._ready.set()

    def saw_not_ready(self, *, outage: bool) -> None:
        """n8n was absent or starting (`outage`), or may not have registered its webhooks."""
        self._outage = self._outage or outage
        self._ready.clear()
        if self._prober is None or self._prober.done():
            # Shared by every forward that waits: not in the context of the one that found
            # n8n away (its request's log fields, its trace).
            self._prober = asyncio.create_task(
                self._probe_until_ready(), context=contextvars.Context()
            )

    async def wait_until_ready(self, deadline: float) -> bool:
        """Wait until n8n is ready or the monotonic `deadline` passes; True when ready before
        it (past the deadline: False, however n8n is)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), remaining)
        return self._ready.is_set()

    async def pause_then_wait(self, deadline: float) -> bool:
        """After n8n was not ready for a forward: at least a poll, then `wait_until_ready`
        (another forward may have found it ready meanwhile; this one must not spin)."""
        await asyncio.sleep(max(min(self._poll_seconds, deadline - time.monotonic()), 0))
        return await self.wait_until_ready(deadline)  # False once the deadline has passed

    async def _probe_until_ready(self) -> None:
        give_up = time.monotonic() + self._give_up_seconds
        while not self._ready.is_set():
            await asyncio.sleep(self._poll_seconds)
            if time.monotonic() >= give_up:
                self._ready.set()
                return
            if await self._probe():
                if self._outage:
                    self._became_ready_at, self._outage = time.monotonic(), False
                self._ready.set()
