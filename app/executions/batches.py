"""The trigger path's three writes (claim, accept, record an outcome), each through a group
commit (app/batching.py, docs/adr/0003-group-commit.md): concurrent calls share a round trip
and a commit, and each caller still returns only once its own call committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from app import db, metrics
from app.batching import Batcher
from app.config import Settings
from app.executions import repo

# A batch carries at most this many body bytes (a larger request goes alone), and a process
# runs at most this many batches of one kind at once.
BATCH_MAX_BYTES = 4 * 1024 * 1024
BATCHES_IN_FLIGHT = 2
Call = TypeVar("Call")
Result = TypeVar("Result")


class ExecutionWrites:
    def __init__(self, pool: db.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._claims = self._batcher(self._claim_batch, size_of=lambda call: len(call.key))
        self._accepts = self._batcher(
            self._accept_batch, size_of=lambda call: len(call.body) + len(call.key)
        )
        self._outcomes = self._batcher(
            self._outcome_batch, size_of=lambda call: len(call.outcome.response_body or b"")
        )

    async def claim(self, call: repo.ClaimCall) -> repo.AttemptLease | repo.ExecutionRow | None:
        """The attempt taken, or the row holding the key (None: it vanished; claim again)."""
        return await self._claims.submit(call)

    async def accept(self, call: repo.AcceptCall) -> repo.Accepted | None:
        return await self._accepts.submit(call)

    async def record(self, call: repo.OutcomeCall) -> bool:
        """False when the attempt no longer runs (recorded already, or taken over)."""
        return await self._outcomes.submit(call)

    async def wait_idle(self) -> None:
        for batcher in (self._claims, self._accepts, self._outcomes):
            await batcher.wait_idle()

    def _batcher(
        self,
        run: Callable[[list[Call]], Awaitable[list[Result]]],
        *,
        size_of: Callable[[Call], int],
    ) -> Batcher[Call, Result]:
        return Batcher(
            run,
            max_items=self._settings.db_batch_max_calls,
            max_bytes=BATCH_MAX_BYTES,
            size_of=size_of,
            concurrency=BATCHES_IN_FLIGHT,
            shared_failure=lambda exc: isinstance(exc, db.DatabaseUnreachable),
        )

    async def _claim_batch(
        self, calls: list[repo.ClaimCall]
    ) -> list[repo.AttemptLease | repo.ExecutionRow | None]:
        metrics.batch_committed("claim", len(calls))
        async with db.connection(self._pool) as conn:
            return await repo.claim_many(conn, calls, lease_seconds=self._settings.lease_seconds)

    async def _accept_batch(self, calls: list[repo.AcceptCall]) -> list[repo.Accepted | None]:
        # The accepting process wakes its own workers; others are told only when it has none.
        notify = self._settings.delivery_workers == 0
        metrics.batch_committed("accept", len(calls))
        async with db.connection(self._pool) as conn:
            return await repo.accept_many(conn, calls, notify=notify)

    async def _outcome_batch(self, calls: list[repo.OutcomeCall]) -> list[bool]:
        metrics.batch_committed("record", len(calls))
        async with db.connection(self._pool) as conn:
            return await repo.record_outcomes(conn, calls)
