"""Delivery workers: every gateway process delivers async executions (Prefer: respond-async).

Each worker takes one due execution at a time with `take_due_delivery` (FOR UPDATE SKIP LOCKED,
so no two workers, in any process, take the same one), forwards it and records the outcome. The
accepting process wakes its own workers at once (and, having none, NOTIFYs the others); a poll
every GATE_DELIVERY_POLL_SECONDS finds work accepted elsewhere and retries that came due. The
number of workers bounds how many deliveries a process has in flight toward n8n.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from app import db
from app.errors import DatabaseUnavailable
from app.executions import repo
from app.executions.service import ExecutionService

logger = logging.getLogger(__name__)


class DeliveryWorkers:
    def __init__(
        self,
        service: ExecutionService,
        *,
        count: int,
        poll_seconds: float,
        grace_seconds: float,
    ) -> None:
        self._service = service
        self._count = count
        self._poll_seconds = poll_seconds
        self._grace_seconds = grace_seconds
        self._due = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """Something may be due now (accepted here, or a NOTIFY arrived)."""
        self._due.set()

    async def __aenter__(self) -> DeliveryWorkers:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._count)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Take nothing new; let deliveries in flight finish within the grace period."""
        self._stopping = True
        self._due.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while not self._stopping:
            try:
                delivery = await self._take()
            except DatabaseUnavailable:
                delivery = None
            except Exception:
                # A worker that died would stop delivering for good: log, pause, go on.
                logger.exception("could not take a due delivery")
                delivery = None
            if delivery is None:
                await self._wait_until_due()
                continue
            try:
                await self._service.deliver(delivery)
            except Exception:
                logger.exception("delivery of execution %s failed", delivery.row.id)

    async def _wait_until_due(self) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._due.wait(), self._poll_seconds)
        if not self._stopping:  # while stopping, the event stays set for every worker
            self._due.clear()

    async def _take(self) -> repo.Delivery | None:
        settings = self._service.settings
        async with db.connection(self._service.pool) as conn:
            return await repo.take_due(
                conn,
                lease_seconds=settings.lease_seconds,
                owner=uuid.uuid4(),
                max_per_target=settings.delivery_max_per_workflow,
            )
