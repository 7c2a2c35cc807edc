"""The use cases the edge calls: trigger (run, replay or refuse), accept for async delivery,
deliver, look up, list and retry executions.

The decisions are decisions.py's; running an attempt is runner.py's; the writes go through
batches.py. This module claims, waits and turns a refusal into the problem the caller gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from app import db, metrics, tracing
from app.config import Settings
from app.errors import (
    ExecutionInFlight,
    ExecutionNotFound,
    ForwardFailed,
    GateError,
    IdempotencyKeyReused,
    InFlightWithId,
    NotRetryable,
    OutcomeUnknown,
    QueryTooBroad,
)
from app.executions import decisions, repo
from app.executions.background import BackgroundWork
from app.executions.batches import ExecutionWrites
from app.executions.gateway_answer import GatewayAnswer, replay_answer
from app.executions.notifications import DatabaseNotifications
from app.executions.replay_cache import ReplayCache
from app.executions.runner import Runner
from app.executions.trigger import TriggerRequest, is_idempotency_key, location_for
from app.tenants.signing import SigningSecrets
from app.tenants.tenant import Tenant

Status = Literal["pending", "running", "completed", "failed"]
# A claim that finds the key taken over between its statements claims again, this often.
MAX_CLAIM_ROUNDS = 3
Started = decisions.Run | decisions.Replay


@dataclass(frozen=True)
class Page:
    items: list[repo.ListedExecution]
    next_before_id: int | None  # older ones follow
    newer_after_id: int | None = None  # newer ones come before (a page asked with after_id)


@dataclass(frozen=True)
class ExecutionDetail:
    row: repo.ExecutionRow
    attempts: list[repo.AttemptRow]


@dataclass(frozen=True)
class Inspection:
    """An execution with its attempts and, for an async one, the request it stored."""

    detail: ExecutionDetail
    request: repo.StoredRequest | None


class ExecutionService:
    def __init__(
        self,
        *,
        pool: db.Pool,
        writes: ExecutionWrites,
        runner: Runner,
        background: BackgroundWork,
        replay_cache: ReplayCache,
        notifications: DatabaseNotifications,
        signing: SigningSecrets,
        on_delivery_due: Callable[[], None],
        settings: Settings,
    ) -> None:
        self._signing = signing
        self._pool = pool
        self._writes = writes
        self._runner = runner
        self._background = background
        self._replay_cache = replay_cache
        self.notifications = notifications
        self._on_delivery_due = on_delivery_due
        self._settings = settings

    async def trigger(
        self, *, tenant: Tenant, request: TriggerRequest, wait_seconds: int = 0
    ) -> GatewayAnswer:
        """Run, replay or refuse `request`. With `wait_seconds`, a request whose key is in
        flight waits up to that long for the execution to finish, then decides again."""
        cached = self._replay_cache.get(tenant.id, request.key)
        if cached is not None:
            decision = self._decide(cached, request)
            if isinstance(decision, decisions.Replay):
                return replay_answer(decision.row)
            if isinstance(decision, decisions.KeyReused):
                raise self._refusal(decision, request)
        # Read before the claim: a database away now costs a 503 with nothing claimed.
        secrets = await self._signing.of(tenant.id)
        workflow = f"{request.mode}/{request.workflow_path}"
        with tracing.span("claim", idempotency_key=request.key, workflow=workflow) as span:
            started = await self._claim_waiting(tenant, request, wait_seconds=wait_seconds)
            _note_started(span, started)
        if isinstance(started, decisions.Replay):
            self._replay_cache.put(tenant.id, started.row)
            return replay_answer(started.row)
        run = self._runner.start(tenant.id, request, started.attempt, secrets=secrets)
        return await asyncio.shield(run)

    async def accept(self, *, tenant: Tenant, request: TriggerRequest) -> repo.Accepted:
        """Store an async trigger for the delivery workers (Prefer: respond-async); or say what
        holds the key already. Raises 422 for another request's key."""
        workflow = f"{request.mode}/{request.workflow_path}"
        with tracing.span("accept", idempotency_key=request.key, workflow=workflow) as span:
            accepted = await self._writes.accept(
                repo.AcceptCall(
                    tenant_id=tenant.id,
                    key=request.key,
                    fingerprint=request.fingerprint,
                    method=request.method,
                    mode=request.mode,
                    workflow_path=request.workflow_path,
                    raw_path=request.raw_path,
                    query=request.query,
                    # Traced, its delivery continues this span's trace.
                    headers=tracing.with_context(request.headers),
                    body=request.body,
                )
            )
            if accepted is not None:
                tracing.note(span, claimed=accepted.claimed)
        if accepted is None:
            raise ExecutionInFlight(
                "The key changed hands just now. Retry shortly.",
                headers=self._retry_headers(request.key),
            )
        refusal = decisions.decide_accepted(
            stored_fingerprint=accepted.fingerprint, fingerprint=request.fingerprint
        )
        if refusal is not None:
            raise self._refusal(refusal, request)
        if accepted.claimed:
            self._on_delivery_due()  # this process's workers pick it up at once
        return accepted

    async def take_due(self, *, limit: int, still: Callable[[], bool]) -> list[repo.Delivery]:
        """Async executions due for delivery, leased to this process; none while the database
        is out of reach (the dispatcher looks again on its next poll), and none unless `still()`
        holds once a connection is in hand: n8n may have been found starting while the take
        waited for one, and a delivery taken then would spend an attempt on n8n's start."""
        settings = self._settings
        try:
            async with db.connection(self._pool) as conn:
                if not still():
                    return []
                take = await repo.take_due(
                    conn,
                    lease_seconds=settings.lease_seconds,
                    owner=uuid.uuid4(),
                    max_per_target=settings.delivery_max_per_workflow,
                    limit=limit,
                    refuse_abandoned=settings.unknown_outcome == "refuse",
                    failed_keep_seconds=settings.failed_key_retention_seconds,
                )
        except db.DatabaseUnreachable:
            return []
        # A dead process's attempt may have run: an unknown outcome, ended or taken over.
        metrics.OUTCOME_UNKNOWN.inc(take.abandoned + take.dead_letters)
        metrics.DEAD_LETTERS.inc(take.dead_letters)
        return take.deliveries

    async def deliver(self, delivery: repo.Delivery) -> None:
        await self._runner.deliver(delivery)

    async def get(self, *, tenant: Tenant, key: str) -> ExecutionDetail:
        async with db.tenant_transaction(self._pool, tenant.id) as conn:
            return await _detail(conn, tenant=tenant, key=key)

    async def retry(self, *, tenant: Tenant, key: str) -> ExecutionDetail:
        """Put one failed async execution back in the delivery queue."""
        _check_key(key)
        async with db.connection(self._pool) as conn:
            requeued = await repo.requeue_failed(
                conn, tenant_id=tenant.id, key=key, workflow=None, failed_since=None, limit=1
            )
        metrics.RETRIES_REQUESTED.inc(len(requeued))
        detail = await self.get(tenant=tenant, key=key)
        if not requeued and detail.row.status != "pending":
            raise NotRetryable(_not_retryable_reason(detail.row))
        return detail

    async def retry_failed(
        self,
        *,
        tenant: Tenant,
        workflow: str | None,
        failed_since: datetime | None,
        limit: int,
        failed_before: datetime | None = None,
    ) -> list[str]:
        """Put up to `limit` failed async executions back in the queue (those that failed
        before `failed_before`, if given); return their keys."""
        async with db.connection(self._pool) as conn:
            requeued = await repo.requeue_failed(
                conn,
                tenant_id=tenant.id,
                key=None,
                workflow=workflow,
                failed_since=failed_since,
                failed_before=failed_before,
                limit=limit,
            )
        metrics.RETRIES_REQUESTED.inc(len(requeued))
        return requeued

    async def list_recent(
        self,
        *,
        tenant: Tenant,
        filters: repo.ExecutionFilter,
        before_id: int | None,
        limit: int,
        after_id: int | None = None,
        timeout_ms: int | None = None,
    ) -> Page:
        """A page of executions, newest first: those older than `before_id`, or with
        `after_id` the page just newer than it (keyset pagination both ways). With
        `timeout_ms`, QueryTooBroad when a statement runs longer."""
        async with self._reading(tenant, timeout_ms) as conn:
            rows = await repo.list_recent(
                conn,
                tenant_id=tenant.id,
                filters=filters,
                before_id=before_id,
                after_id=after_id,
                limit=limit + 1,
            )
        more = len(rows) > limit
        if after_id is None:
            items = rows[:limit]
            older = items[-1].id if more else None
            newer = items[0].id if before_id is not None and items else None
            return Page(items=items, next_before_id=older, newer_after_id=newer)
        items = rows[:limit][::-1]
        return Page(
            items=items,
            next_before_id=items[-1].id if items else None,
            newer_after_id=items[0].id if more else None,
        )

    async def count_by_status(
        self,
        *,
        tenant: Tenant,
        filters: repo.ExecutionFilter,
        cap: int,
        timeout_ms: int | None = None,
    ) -> repo.StatusCounts:
        """Executions per status under `filters` (their status aside), counted up to `cap`."""
        async with self._reading(tenant, timeout_ms) as conn:
            return await repo.count_by_status(conn, tenant_id=tenant.id, filters=filters, cap=cap)

    async def count(
        self,
        *,
        tenant: Tenant,
        filters: repo.ExecutionFilter,
        cap: int,
        timeout_ms: int | None = None,
    ) -> int:
        """Executions that match `filters`, counted up to `cap`."""
        async with self._reading(tenant, timeout_ms) as conn:
            return await repo.count(conn, tenant_id=tenant.id, filters=filters, cap=cap)

    async def inspect(
        self, *, tenant: Tenant, key: str, timeout_ms: int | None = None
    ) -> Inspection:
        """Everything the gateway keeps about one execution, request included."""
        async with self._reading(tenant, timeout_ms) as conn:
            detail = await _detail(conn, tenant=tenant, key=key)
            request = await repo.find_request(conn, tenant_id=tenant.id, execution_id=detail.row.id)
        return Inspection(detail=detail, request=request)

    async def queue_summary(
        self, *, tenant: Tenant, timeout_ms: int | None = None
    ) -> list[repo.QueueTarget]:
        """The tenant's async deliveries waiting or running, per webhook."""
        async with self._reading(tenant, timeout_ms) as conn:
            return await repo.queue_summary(conn, tenant_id=tenant.id)

    @asynccontextmanager
    async def _reading(
        self, tenant: Tenant, timeout_ms: int | None
    ) -> AsyncIterator[db.PooledConnection]:
        """A transaction scoped to `tenant`; with `timeout_ms`, each of its statements may run
        that long (lock waits included), and one cancelled for it is QueryTooBroad."""
        async with db.tenant_transaction(self._pool, tenant.id) as conn:
            if timeout_ms is not None:
                await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            try:
                yield conn
            except asyncpg.QueryCanceledError:
                if timeout_ms is None:
                    raise
                raise QueryTooBroad(
                    f"This view needs more than {timeout_ms / 1000:g} s of database work, so "
                    "it was stopped. Narrow the filters: a status, a workflow, a shorter time "
                    "range or a longer key prefix."
                ) from None

    async def drain(self, *, grace_seconds: float) -> None:
        """Wait for claimed executions to be forwarded and recorded (shutdown)."""
        await self._background.drain(grace_seconds=grace_seconds)
        await self._writes.wait_idle()

    async def _claim_waiting(
        self, tenant: Tenant, request: TriggerRequest, *, wait_seconds: int
    ) -> Started:
        try:
            return await self._claim_or_refuse(tenant, request)
        except InFlightWithId as first:
            if wait_seconds <= 0:
                raise
            in_flight = first
        deadline = time.monotonic() + wait_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            # Subscribe and flag the row before reading again, so a finish in between cannot be
            # missed: the outcome's commit sees the flag and notifies, or the read sees the end.
            subscription = self.notifications.subscription(tenant.id, in_flight.execution_id)
            async with subscription as finished:
                async with db.connection(self._pool) as conn:
                    await repo.mark_waited(
                        conn, tenant_id=tenant.id, execution_id=in_flight.execution_id
                    )
                try:
                    return await self._claim_or_refuse(tenant, request)
                except InFlightWithId as again:
                    in_flight = again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished, remaining)
        raise in_flight

    async def _claim_or_refuse(self, tenant: Tenant, request: TriggerRequest) -> Started:
        """The attempt claimed, or the completed row to replay; raises the refusal otherwise.

        The claim runs on if the caller is cancelled meanwhile, and an attempt it took is run
        then, as it would have been a moment later: a claim left alone would hold the key
        until its lease ran out. (uvicorn lets a request run on when its client leaves; an
        in-process caller or another server may cancel it.)"""
        claim = asyncio.ensure_future(self._claim(tenant, request))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            self._background.start(self._run_orphaned(claim, tenant, request))
            raise

    async def _run_orphaned(
        self, claim: asyncio.Future[Started], tenant: Tenant, request: TriggerRequest
    ) -> None:
        try:
            started = await claim
        except (GateError, db.DatabaseUnreachable):
            return  # refused, or the database went away (the claim is released then)
        if isinstance(started, decisions.Run):
            with contextlib.suppress(ForwardFailed):  # the secrets are read under the lease
                await self._runner.start(tenant.id, request, started.attempt, secrets=None)

    async def _claim(self, tenant: Tenant, request: TriggerRequest) -> Started:
        for _ in range(MAX_CLAIM_ROUNDS):
            # A fresh owner per claim: if the connection drops mid-claim, the claim may have
            # committed unseen, and this token lets it be released once the database is back.
            owner = uuid.uuid4()
            async with self._releasing_on_outage(tenant, request.key, owner):
                claimed = await self._writes.claim(self._claim_call(tenant, request, owner))
                if claimed is None:  # deleted between the function's two statements
                    continue
                decision = self._decide(claimed, request)
                if isinstance(decision, decisions.Run | decisions.Replay):
                    return decision
                if not isinstance(decision, decisions.TakeOver):
                    raise self._refusal(decision, request)
                async with db.connection(self._pool) as conn:
                    retaken = await repo.retake(
                        conn,
                        tenant_id=tenant.id,
                        key=request.key,
                        lease_seconds=self._settings.lease_seconds,
                        owner=owner,
                    )
            if retaken is not None:
                return decisions.Run(retaken)
        raise ExecutionInFlight(
            "Another request with this Idempotency-Key took it over just now. Retry shortly.",
            headers=self._retry_headers(request.key),
        )

    def _decide(
        self, claimed: repo.AttemptLease | repo.ExecutionRow, request: TriggerRequest
    ) -> decisions.Decision:
        return decisions.decide(
            claimed,
            fingerprint=request.fingerprint,
            unknown_outcome=self._settings.unknown_outcome,
        )

    def _claim_call(
        self, tenant: Tenant, request: TriggerRequest, owner: uuid.UUID
    ) -> repo.ClaimCall:
        return repo.ClaimCall(
            tenant_id=tenant.id,
            key=request.key,
            fingerprint=request.fingerprint,
            method=request.method,
            mode=request.mode,
            workflow_path=request.workflow_path,
            owner=owner,
        )

    def _refusal(self, refusal: decisions.Refusal, request: TriggerRequest) -> GateError:
        """The problem a caller gets for a refused key."""
        if isinstance(refusal, decisions.KeyReused):
            return IdempotencyKeyReused(
                "This Idempotency-Key was first used with a different method, path, query or "
                "body. Use a new key for a different request.",
            )
        if isinstance(refusal, decisions.InFlight):
            return InFlightWithId(
                "The first request with this Idempotency-Key is still running. Retry after a "
                "moment (or send 'Prefer: wait=<seconds>') to get its result, or ask the "
                "Location for its status.",
                execution_id=refusal.execution_id,
                headers=self._retry_headers(request.key),
            )
        return OutcomeUnknown(
            "An earlier attempt reached n8n but its outcome never came back, so the "
            "workflow may have run. This gateway does not run it again "
            "(GATE_UNKNOWN_OUTCOME=refuse): check the execution in n8n, and send a new "
            "Idempotency-Key if it did not run.",
            headers={"Location": location_for(request.key)},
        )

    def _retry_headers(self, key: str) -> dict[str, str]:
        return {
            "Location": location_for(key),
            "Retry-After": str(self._settings.retry_after_seconds),
        }

    @asynccontextmanager
    async def _releasing_on_outage(
        self, tenant: Tenant, key: str, owner: uuid.UUID
    ) -> AsyncIterator[None]:
        try:
            yield
        except db.DatabaseUnreachable:
            self._background.retry_write(
                lambda: self._release_once(tenant, key, owner), what=f"release claim on {key!r}"
            )
            raise

    async def _release_once(self, tenant: Tenant, key: str, owner: uuid.UUID) -> None:
        async with db.connection(self._pool) as conn:
            await repo.release_unforwarded(
                conn,
                tenant_id=tenant.id,
                key=key,
                owner=owner,
                keep_seconds=self._settings.failed_key_retention_seconds,
            )


def _note_started(span: tracing.Span | None, started: Started) -> None:
    if isinstance(started, decisions.Replay):
        tracing.note(span, decision="replay", execution_id=started.row.id)
        return
    lease = started.attempt
    tracing.note(span, decision="run", execution_id=lease.execution_id, attempt=lease.number)


async def _detail(conn: db.PooledConnection, *, tenant: Tenant, key: str) -> ExecutionDetail:
    """The execution of `key` with its attempts; ExecutionNotFound when there is none."""
    _check_key(key)
    row = await repo.find_by_key(conn, tenant_id=tenant.id, key=key)
    if row is None:
        raise ExecutionNotFound(f"No execution with Idempotency-Key {key!r} for this API key.")
    attempts = await repo.list_attempts(conn, tenant_id=tenant.id, execution_id=row.id)
    return ExecutionDetail(row=row, attempts=attempts)


def _check_key(key: str) -> None:
    """No execution has a key no trigger could send (a NUL, say, which the database's text
    cannot even hold): such a key is not found, rather than an error of the query."""
    if not is_idempotency_key(key):
        raise ExecutionNotFound(
            "No execution has that Idempotency-Key: keys are 1 to 255 printable ASCII characters."
        )


def _not_retryable_reason(row: repo.ExecutionRow) -> str:
    if not row.deliver_async:
        return (
            "This execution ran synchronously, so the gateway did not keep its request. Send "
            "the request again with the same Idempotency-Key: a failed execution runs again."
        )
    return f"Only failed executions can be retried; this one is {row.status}."
