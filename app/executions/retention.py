"""The reaper: deletes expired executions in small batches, in every gateway process, and
ends the sync executions whose process died before recording an outcome.

Batches are separate short transactions that skip rows another reaper holds, so several
processes can reap at once and none holds locks for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app import db, metrics
from app.alerts import repo as alerts_repo
from app.executions import repo
from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        pool: db.Pool,
        *,
        interval_seconds: float,
        batch_size: int,
        failed_keep_seconds: float,
    ) -> None:
        self._pool = pool
        self._interval_seconds = interval_seconds
        self._batch_size = batch_size
        self._failed_keep_seconds = failed_keep_seconds
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reaper:
        if self._interval_seconds > 0:
            self._task = asyncio.create_task(self._run_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._task)

    async def reap_once(self) -> int:
        """Delete every execution expired by now, batch by batch; return how many."""
        return await self._in_batches(
            lambda conn: repo.reap_expired(conn, batch_size=self._batch_size)
        )

    async def end_abandoned_once(self) -> int:
        """End every sync execution whose process died (its lease ran out): failed, with an
        unknown outcome, expiring as failed executions do. Return how many."""
        ended = await self._in_batches(
            lambda conn: repo.end_abandoned(
                conn, batch_size=self._batch_size, keep_seconds=self._failed_keep_seconds
            )
        )
        metrics.OUTCOME_UNKNOWN.inc(ended)
        return ended

    async def reap_alerts_once(self) -> int:
        """Delete every alert older than a failed key's retention, sent or not (where no
        process sends them, nothing else would); return how many."""
        return await self._in_batches(
            lambda conn: alerts_repo.reap(
                conn, batch_size=self._batch_size, keep_seconds=self._failed_keep_seconds
            )
        )

    async def _in_batches(self, batch: Callable[[db.PooledConnection], Awaitable[int]]) -> int:
        """Run `batch` (a short transaction of its own each) until one does fewer than a batch;
        return how many rows they did in all."""
        total = 0
        while True:
            async with db.connection(self._pool) as conn:
                done = await batch(conn)
            total += done
            if done < self._batch_size:
                return total

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_seconds)
            try:
                if ended := await self.end_abandoned_once():
                    logger.warning(
                        "ended %d executions whose gateway process died mid-forward "
                        "(failed, outcome unknown)",
                        ended,
                    )
                if deleted := await self.reap_once():
                    logger.info("reaped %d expired executions", deleted)
                if deleted := await self.reap_alerts_once():
                    logger.info("reaped %d old alerts", deleted)
            except db.DatabaseUnreachable:
                logger.warning("reaper: database unavailable; trying again later")
