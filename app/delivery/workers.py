"""Delivery workers: every gateway process delivers async executions (Prefer: respond-async).

A process delivers at most `count` executions at once. One dispatcher takes due executions
for the free slots with `take_due_deliveries`, several in one transaction (FOR UPDATE SKIP
LOCKED, so no two processes take the same one), and runs each delivery as a task: forward,
then record the outcome. The dispatcher looks again when a slot frees, when this process
accepts a trigger (or, having no workers, NOTIFYs the others), and every
GATE_DELIVERY_POLL_SECONDS, which finds work accepted elsewhere and retries that came due.

Alerts (app.alerts) go through the same slots: once a poll the dispatcher also takes the alerts
that are due, into at most half the slots (an alert goes elsewhere than n8n, so n8n starting
holds none back), and sends each as a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app import tracing
from app.alerts.repo import Alert
from app.alerts.sender import AlertSender
from app.executions import repo
from app.executions.service import ExecutionService
from app.forwarding.readiness import Readiness
from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class DeliveryWorkers:
    def __init__(
        self,
        service: ExecutionService,
        *,
        due: asyncio.Event,
        readiness: Readiness,
        count: int,
        poll_seconds: float,
        grace_seconds: float,
        alerts: AlertSender | None = None,
    ) -> None:
        self._service = service
        self._readiness = readiness
        self._count = count
        self._poll_seconds = poll_seconds
        self._grace_seconds = grace_seconds
        # Set when something may be due now: accepted here, a NOTIFY arrived, a slot freed.
        self._look_again = due
        self._stopping = False
        self._dispatcher: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._alerts = alerts
        # Alerts may take half the slots. A single worker's one slot goes to a due delivery
        # first: alerts taken first took it again each time it freed, and a receiver that
        # hung held back every delivery (each send waiting out its timeout).
        self._alert_slots = max(1, count // 2)
        self._alerts_after_deliveries = count < 2
        self._alerts_in_flight: set[asyncio.Task[None]] = set()
        self._next_alert_look = 0.0  # monotonic

    async def __aenter__(self) -> DeliveryWorkers:
        if self._count > 0:
            self._dispatcher = asyncio.create_task(self._dispatch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Take nothing new; let deliveries in flight finish within the grace period."""
        self._stopping = True
        self._look_again.set()
        if self._dispatcher is not None:
            # It ends at its next look; what it took meanwhile is delivered, not dropped.
            await asyncio.wait({self._dispatcher}, timeout=self._grace_seconds)
            await cancel_and_wait(self._dispatcher)
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=self._grace_seconds)
        for delivery in list(self._deliveries):
            await cancel_and_wait(delivery)

    async def _dispatch(self) -> None:
        while not self._stopping:
            # Cleared before the take: a wake-up during the take means look again at once.
            self._look_again.clear()
            if not self._alerts_after_deliveries:
                await self._send_due_alerts()
            if not self._readiness.is_ready:  # n8n is down or starting: take nothing meanwhile
                await self._readiness.wait_until_ready(time.monotonic() + self._poll_seconds)
                if self._alerts_after_deliveries:
                    await self._send_due_alerts()
                continue
            free = self._count - len(self._deliveries)
            taken = await self._take(free) if free > 0 else []
            for delivery in taken:
                self._start(delivery)
            if self._alerts_after_deliveries:
                await self._send_due_alerts()
            if free > 0 and len(taken) == free:
                continue  # every slot filled: more may be due once one frees
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look_again.wait(), self._poll_seconds)

    def _start(self, delivery: repo.Delivery) -> None:
        task = asyncio.create_task(self._deliver(delivery))
        self._deliveries.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._look_again.set()  # a slot is free

    async def _deliver(self, delivery: repo.Delivery) -> None:
        row = delivery.row
        try:
            # Traced, an attempt continues the trace of the request that was accepted.
            with tracing.continued(
                delivery.headers,
                "deliver",
                idempotency_key=row.idempotency_key,
                workflow=f"{row.mode}/{row.workflow_path}",
                execution_id=row.id,
                attempt=row.attempts,
            ):
                await self._service.deliver(delivery)
        except Exception:
            logger.exception("delivery of execution %s failed", delivery.row.id)

    async def _take(self, limit: int) -> list[repo.Delivery]:
        try:
            return await self._service.take_due(
                limit=limit, still=lambda: self._readiness.is_ready and not self._stopping
            )
        except Exception:
            # A dispatcher that died would stop delivering for good: log, wait, go on.
            logger.exception("could not take due deliveries")
            return []

    async def _send_due_alerts(self) -> None:
        """Once a poll, or at once while every alert slot filled: take due alerts for the free
        alert slots, and send each in a task that holds a delivery slot."""
        if self._alerts is None or time.monotonic() < self._next_alert_look:
            return
        free = min(
            self._count - len(self._deliveries), self._alert_slots - len(self._alerts_in_flight)
        )
        try:
            taken = await self._alerts.take_due(limit=free) if free > 0 else []
        except Exception:
            logger.exception("could not take due alerts")
            taken = []
        # No free slot, or every one filled: more may be due, looked for once a slot frees.
        full = free <= 0 or len(taken) == free
        self._next_alert_look = time.monotonic() + (0.0 if full else self._poll_seconds)
        for alert in taken:
            task = asyncio.create_task(self._send_alert(self._alerts, alert))
            self._deliveries.add(task)
            self._alerts_in_flight.add(task)
            task.add_done_callback(self._alerts_in_flight.discard)
            task.add_done_callback(self._finished)

    async def _send_alert(self, alerts: AlertSender, alert: Alert) -> None:
        try:
            await alerts.send(alert)
        except Exception:
            logger.exception("sending alert %s failed", alert.id)
