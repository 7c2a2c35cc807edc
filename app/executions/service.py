"""The execution state machine: the one place that decides what a trigger does.

    (new key) ──claim──▶ running ──n8n answered, final──▶ completed ──(retries replay)
                            │
                            └──unreachable / timeout / 5xx / not registered──▶ failed
    failed, or running with its lease run out ──retake (attempts + 1)──▶ running

While an attempt runs, its process renews the lease; a process that dies stops renewing, and
the next request after the lease ran out takes the execution over (the attempt is "abandoned").
When n8n may have run the workflow without the gateway learning the outcome (read timeout,
connection lost, abandoned attempt), GATE_UNKNOWN_OUTCOME decides: "retry" runs it again
(at-least-once), "refuse" answers 409 execution-outcome-unknown (at-most-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from uuid import UUID

from app import db
from app.batching import Batcher
from app.config import Settings
from app.delivery.backoff import Backoff, parse_retry_after
from app.errors import (
    PROBLEM_CONTENT_TYPE,
    ExecutionInFlight,
    ExecutionNotFound,
    ForwardFailed,
    GateError,
    IdempotencyKeyReused,
    InFlightWithId,
    NotRetryable,
    OutcomeUnknown,
)
from app.executions import repo
from app.executions.cache import CompletedExecutions
from app.executions.finished import FinishedExecutions
from app.executions.lease import LeaseKeeper
from app.executions.trigger import TriggerRequest, location_for
from app.forwarding.answers import OUTCOME_UNKNOWN, AnswerKind
from app.forwarding.client import N8nClient, N8nResponse, Outbound
from app.memory import Body
from app.tenants.tenant import Tenant

logger = logging.getLogger(__name__)

Status = Literal["pending", "running", "completed", "failed"]
MAX_DECISION_ROUNDS = 3
# How long a process keeps trying to record an outcome (or release a claim) while the
# database is unreachable.
RECORD_RETRY_SECONDS = 600.0
TRUNCATED_HEADER = "N8n-Gate-Body-Truncated"
# Group commit (app/batching.py): a batch carries at most this many body bytes (a larger
# request goes alone), and a process runs at most this many batches of one kind at once.
BATCH_MAX_BYTES = 4 * 1024 * 1024
BATCHES_IN_FLIGHT = 2
Call = TypeVar("Call")
Result = TypeVar("Result")


@dataclass(frozen=True)
class GatewayAnswer:
    """What the client gets for a trigger: n8n's answer, fresh or replayed."""

    status: int
    content_type: str | None
    headers: list[tuple[str, str]]
    body: bytes | Body  # Body: fresh from n8n, charged to the budget or on disk
    replayed: bool


@dataclass(frozen=True)
class Page:
    items: list[repo.ExecutionRow]
    next_before_id: int | None


@dataclass(frozen=True)
class ExecutionDetail:
    row: repo.ExecutionRow
    attempts: list[repo.AttemptRow]


@dataclass
class ExecutionService:
    pool: db.Pool
    n8n: N8nClient
    finished: FinishedExecutions
    settings: Settings
    backoff: Backoff = field(init=False)
    _in_flight: set[asyncio.Task[GatewayAnswer]] = field(default_factory=set)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _completed: CompletedExecutions = field(init=False)
    _claims: Batcher[repo.ClaimCall, repo.Attempt | repo.ExecutionRow | None] = field(init=False)
    _accepts: Batcher[repo.AcceptCall, repo.Accepted | None] = field(init=False)
    _outcomes: Batcher[repo.OutcomeCall, bool] = field(init=False)

    def __post_init__(self) -> None:
        self.backoff = Backoff(
            base_seconds=self.settings.retry_base_seconds,
            cap_seconds=self.settings.retry_cap_seconds,
            max_attempts=self.settings.retry_max_attempts,
        )
        self._completed = CompletedExecutions(
            max_bytes=self.settings.replay_cache_bytes,
            ttl_seconds=self.settings.replay_cache_seconds,
        )
        self._claims = self._batcher(self._claim_batch, size_of=lambda call: len(call.key))
        self._accepts = self._batcher(
            self._accept_batch, size_of=lambda call: len(call.body) + len(call.key)
        )
        self._outcomes = self._batcher(
            self._outcome_batch, size_of=lambda call: len(call.outcome.response_body or b"")
        )

    def _batcher(
        self,
        run: Callable[[list[Call]], Awaitable[list[Result]]],
        *,
        size_of: Callable[[Call], int],
    ) -> Batcher[Call, Result]:
        return Batcher(
            run,
            max_items=self.settings.db_batch_max_calls,
            max_bytes=BATCH_MAX_BYTES,
            size_of=size_of,
            concurrency=BATCHES_IN_FLIGHT,
            shared_failure=lambda exc: isinstance(exc, db.DatabaseUnreachable),
        )

    async def _claim_batch(
        self, calls: list[repo.ClaimCall]
    ) -> list[repo.Attempt | repo.ExecutionRow | None]:
        async with db.connection(self.pool) as conn:
            return await repo.claim_many(conn, calls, lease_seconds=self.settings.lease_seconds)

    async def _accept_batch(self, calls: list[repo.AcceptCall]) -> list[repo.Accepted | None]:
        # The accepting process wakes its own workers; others are told only when it has none.
        notify = self.settings.delivery_workers == 0
        async with db.connection(self.pool) as conn:
            return await repo.accept_many(conn, calls, notify=notify)

    async def _outcome_batch(self, calls: list[repo.OutcomeCall]) -> list[bool]:
        async with db.connection(self.pool) as conn:
            return await repo.record_outcomes(conn, calls)

    async def trigger(
        self,
        *,
        tenant: Tenant,
        request: TriggerRequest,
        wait_seconds: int = 0,
    ) -> GatewayAnswer:
        """Run, replay or refuse `request`. With `wait_seconds`, a request whose key is in
        flight waits up to that long for the execution to finish, then decides again."""
        cached = self._completed.get(tenant.id, request.key)
        if cached is not None and self._should_replay(cached, request):
            return replay_answer(cached)
        decided = await self._decide_waiting(
            tenant=tenant, request=request, wait_seconds=wait_seconds
        )
        if isinstance(decided, repo.ExecutionRow):  # completed: replay it
            self._completed.put(tenant.id, decided)
            return replay_answer(decided)
        return await asyncio.shield(self._start_run(tenant, request, decided))

    def _start_run(
        self,
        tenant: Tenant,
        request: TriggerRequest,
        attempt: repo.Attempt,
    ) -> asyncio.Task[GatewayAnswer]:
        """Forward and record a claimed attempt in a task of its own: once claimed, it must
        finish even if the client goes away (shutdown waits for it)."""
        task = asyncio.create_task(
            self._run(
                tenant_id=tenant.id,
                request=request,
                attempt=attempt,
            )
        )
        self._in_flight.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[GatewayAnswer]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            task.exception()  # seen here, even when the client went away before it finished

    async def drain(self, *, grace_seconds: float) -> None:
        """Wait for claimed executions to be forwarded and recorded (shutdown)."""
        pending = {*self._in_flight, *self._background}
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
        for batcher in (self._claims, self._accepts, self._outcomes):
            await batcher.wait_idle()

    async def get(self, *, tenant: Tenant, key: str) -> ExecutionDetail:
        async with db.tenant_transaction(self.pool, tenant.id) as conn:
            row = await repo.find_by_key(conn, tenant_id=tenant.id, key=key)
            if row is None:
                raise ExecutionNotFound(
                    f"No execution with Idempotency-Key {key!r} for this API key."
                )
            attempts = await repo.list_attempts(conn, tenant_id=tenant.id, execution_id=row.id)
        return ExecutionDetail(row=row, attempts=attempts)

    async def retry(self, *, tenant: Tenant, key: str) -> ExecutionDetail:
        """Put one failed async execution back in the delivery queue."""
        async with db.connection(self.pool) as conn:
            requeued = await repo.requeue_failed(
                conn, tenant_id=tenant.id, key=key, workflow=None, failed_since=None, limit=1
            )
        detail = await self.get(tenant=tenant, key=key)
        if not requeued and detail.row.status != "pending":
            raise NotRetryable(_not_retryable_reason(detail.row))
        return detail

    async def retry_failed(
        self, *, tenant: Tenant, workflow: str | None, failed_since: datetime | None, limit: int
    ) -> list[str]:
        """Put up to `limit` failed async executions back in the queue; return their keys."""
        async with db.connection(self.pool) as conn:
            return await repo.requeue_failed(
                conn,
                tenant_id=tenant.id,
                key=None,
                workflow=workflow,
                failed_since=failed_since,
                limit=limit,
            )

    async def list_recent(
        self,
        *,
        tenant: Tenant,
        status: Status | None,
        workflow: str | None,
        before_id: int | None,
        limit: int,
    ) -> Page:
        async with db.tenant_transaction(self.pool, tenant.id) as conn:
            rows = await repo.list_recent(
                conn,
                tenant_id=tenant.id,
                status=status,
                workflow=workflow,
                before_id=before_id,
                limit=limit + 1,
            )
        more = len(rows) > limit
        items = rows[:limit]
        return Page(items=items, next_before_id=items[-1].id if more else None)

    async def _decide_waiting(
        self,
        *,
        tenant: Tenant,
        request: TriggerRequest,
        wait_seconds: int,
    ) -> repo.Attempt | repo.ExecutionRow:
        try:
            return await self._claim_or_decide(tenant, request)
        except InFlightWithId as first:
            if wait_seconds <= 0:
                raise
            in_flight = first
        deadline = time.monotonic() + wait_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            # Subscribe and flag the row before reading again, so a finish in between cannot be
            # missed: the outcome's commit sees the flag and notifies, or the read sees the end.
            async with self.finished.subscription(tenant.id, in_flight.execution_id) as finished:
                async with db.connection(self.pool) as conn:
                    await repo.mark_waited(
                        conn, tenant_id=tenant.id, execution_id=in_flight.execution_id
                    )
                try:
                    return await self._claim_or_decide(tenant, request)
                except InFlightWithId as again:
                    in_flight = again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished, remaining)
        raise in_flight

    async def _claim_or_decide(
        self, tenant: Tenant, request: TriggerRequest
    ) -> repo.Attempt | repo.ExecutionRow:
        """Claim the key (the attempt taken), or return the completed row to replay, or raise.

        The decision runs on if the caller is cancelled meanwhile, and a claim it won is run
        then, as it would have been a moment later: a claim left alone would hold the key
        until its lease ran out. (uvicorn lets a request run on when its client leaves; an
        in-process caller or another server may cancel it.)"""
        decision = asyncio.ensure_future(self._claim_rounds(tenant=tenant, request=request))
        try:
            return await asyncio.shield(decision)
        except asyncio.CancelledError:
            self._in_background(self._run_orphaned(decision, tenant, request))
            raise

    async def _run_orphaned(
        self,
        decision: asyncio.Future[repo.Attempt | repo.ExecutionRow],
        tenant: Tenant,
        request: TriggerRequest,
    ) -> None:
        try:
            decided = await decision
        except GateError:
            return  # refused, or the database went away (the claim is released then)
        if isinstance(decided, repo.Attempt):
            with contextlib.suppress(ForwardFailed):
                await self._start_run(tenant, request, decided)

    async def _claim_rounds(
        self, *, tenant: Tenant, request: TriggerRequest
    ) -> repo.Attempt | repo.ExecutionRow:
        for _ in range(MAX_DECISION_ROUNDS):
            # A fresh owner per claim: if the connection drops mid-claim, the claim may have
            # committed unseen, and this token lets it be released once the database is back.
            owner = uuid.uuid4()
            async with self._releasing_on_outage(tenant, request.key, owner):
                claimed = await self._claims.submit(
                    repo.ClaimCall(
                        tenant_id=tenant.id,
                        key=request.key,
                        fingerprint=request.fingerprint,
                        method=request.method,
                        mode=request.mode,
                        workflow_path=request.workflow_path,
                        owner=owner,
                    )
                )
                if claimed is None:  # deleted between the function's two statements; claim again
                    continue
                if isinstance(claimed, repo.Attempt) or self._should_replay(claimed, request):
                    return claimed
                async with db.connection(self.pool) as conn:
                    retaken = await repo.retake(
                        conn,
                        tenant_id=tenant.id,
                        key=request.key,
                        lease_seconds=self.settings.lease_seconds,
                        owner=owner,
                    )
            if retaken is not None:
                return retaken
        raise ExecutionInFlight(
            "Another request with this Idempotency-Key took it over just now. Retry shortly.",
            headers=self._retry_headers(request.key),
        )

    def _should_replay(self, row: repo.ExecutionRow, request: TriggerRequest) -> bool:
        """True to replay a completed execution, False to run a failed or abandoned one again;
        raises when the key cannot serve this request now."""
        if row.fingerprint != request.fingerprint:
            raise _key_reused()
        if row.status == "completed":
            return True
        abandoned = row.status == "running" and bool(row.lease_expired)
        if row.status != "failed" and not abandoned:
            raise InFlightWithId(
                "The first request with this Idempotency-Key is still running. Retry after a "
                "moment (or send 'Prefer: wait=<seconds>') to get its result, or ask the "
                "Location for its status.",
                execution_id=row.id,
                headers=self._retry_headers(request.key),
            )
        if (row.outcome_unknown or abandoned) and self.settings.unknown_outcome == "refuse":
            raise OutcomeUnknown(
                "An earlier attempt reached n8n but its outcome never came back, so the "
                "workflow may have run. This gateway does not run it again "
                "(GATE_UNKNOWN_OUTCOME=refuse): check the execution in n8n, and send a new "
                "Idempotency-Key if it did not run.",
                headers={"Location": location_for(request.key)},
            )
        return False

    def _retry_headers(self, key: str) -> dict[str, str]:
        return {
            "Location": location_for(key),
            "Retry-After": str(self.settings.retry_after_seconds),
        }

    async def accept(self, *, tenant: Tenant, request: TriggerRequest) -> repo.Accepted:
        """Store an async trigger for the delivery workers (Prefer: respond-async); or say what
        holds the key already. Raises 422 for another request's key."""
        accepted = await self._accepts.submit(
            repo.AcceptCall(
                tenant_id=tenant.id,
                key=request.key,
                fingerprint=request.fingerprint,
                method=request.method,
                mode=request.mode,
                workflow_path=request.workflow_path,
                raw_path=request.raw_path,
                query=request.query,
                headers=request.headers,
                body=request.body,
            )
        )
        if accepted is None:
            raise ExecutionInFlight(
                "The key changed hands just now. Retry shortly.",
                headers=self._retry_headers(request.key),
            )
        if accepted.fingerprint != request.fingerprint:
            raise _key_reused()
        if accepted.claimed and self.finished.on_delivery_due is not None:
            self.finished.on_delivery_due()  # this process's workers pick it up at once
        return accepted

    async def take_due(self, *, limit: int) -> list[repo.Delivery]:
        """Async executions due for delivery, leased to this process; none while the database
        is out of reach (the dispatcher looks again on its next poll)."""
        settings = self.settings
        try:
            async with db.connection(self.pool) as conn:
                return await repo.take_due(
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

    async def deliver(self, delivery: repo.Delivery) -> None:
        """Forward an async execution a worker took, and record it: done, or due again later."""
        row = delivery.row
        attempt = repo.Attempt(execution_id=row.id, number=row.attempts)
        request = TriggerRequest(
            key=row.idempotency_key,
            method=row.method,
            mode=row.mode,  # type: ignore[arg-type]
            workflow_path=row.workflow_path,
            raw_path=delivery.raw_path,
            query=delivery.query,
            headers=delivery.headers,
            body=delivery.body,
        )
        with contextlib.suppress(ForwardFailed):
            await self._run(
                tenant_id=delivery.tenant_id,
                request=request,
                attempt=attempt,
                retry=True,
            )

    async def _run(
        self,
        *,
        tenant_id: UUID,
        request: TriggerRequest,
        attempt: repo.Attempt,
        retry: bool = False,
    ) -> GatewayAnswer:
        """Forward while renewing the lease, then record. With `retry` (async deliveries) a
        retryable failure is scheduled again with backoff instead of ending the execution."""
        lease = LeaseKeeper(
            lambda: self._renew_lease(tenant_id, attempt),
            interval_seconds=self.settings.lease_renew_seconds,
        )
        try:
            async with lease:
                response = await self.n8n.forward(self._outbound(request))
        except ForwardFailed as exc:
            if exc.final:
                return await self._complete_with_problem(tenant_id, attempt, request, exc)
            outcome = _failure(exc)
            retry_at = self._retry_at(attempt, outcome, None) if retry else None
            await self._record(tenant_id, attempt, outcome, retry_at=retry_at)
            _log_failure(tenant_id, request, attempt, outcome, retry_at=retry_at, retry=retry)
            raise
        outcome = self._outcome(response, rate_limit_retryable=retry)
        retry_at = self._retry_at(attempt, outcome, response) if retry else None
        await self._record(tenant_id, attempt, outcome, retry_at=retry_at)
        if outcome.status == "failed":
            _log_failure(tenant_id, request, attempt, outcome, retry_at=retry_at, retry=retry)
        return GatewayAnswer(
            status=response.status,
            content_type=response.content_type,
            headers=response.headers,
            body=response.body,
            replayed=False,
        )

    def _outbound(self, request: TriggerRequest) -> Outbound:
        return Outbound(
            method=request.method,
            path=self.n8n.path_for(mode=request.mode, raw_path=request.raw_path),
            query=request.query,
            headers=request.headers,
            body=request.body,
        )

    async def _complete_with_problem(
        self, tenant_id: UUID, attempt: repo.Attempt, request: TriggerRequest, error: ForwardFailed
    ) -> GatewayAnswer:
        """n8n ran it and answered, unusably: that problem is the answer, recorded and replayed."""
        instance = f"/{request.mode}/{request.workflow_path}"
        body = error.problem_json(instance=instance)
        headers = [("Content-Type", PROBLEM_CONTENT_TYPE)]
        outcome = repo.Outcome(
            status="completed",
            response_status=error.status_code,
            response_content_type=PROBLEM_CONTENT_TYPE,
            response_headers=headers,
            response_body=body,
            response_body_bytes=len(body),
            error_type=error.cause,
            error_detail=error.detail,
        )
        await self._record(tenant_id, attempt, outcome)
        _log_attempt(
            logging.WARNING, "final answer from the gateway", tenant_id, request, attempt, outcome
        )
        return GatewayAnswer(
            status=error.status_code,
            content_type=PROBLEM_CONTENT_TYPE,
            headers=headers,
            body=body,
            replayed=False,
        )

    def _retry_at(
        self, attempt: repo.Attempt, outcome: repo.Outcome, response: N8nResponse | None
    ) -> datetime | None:
        """When to deliver again, or None when this outcome is final."""
        if outcome.status != "failed" or self.backoff.exhausted(attempt.number):
            return None
        if response is not None and response.kind in PERMANENT:
            return None  # the same request would be refused again: a dead letter at once
        if outcome.outcome_unknown and self.settings.unknown_outcome == "refuse":
            return None
        retry_after = parse_retry_after(response.header("retry-after") if response else None)
        delay = self.backoff.delay(attempt.number, retry_after=retry_after)
        return datetime.now(UTC) + timedelta(seconds=delay)

    async def _renew_lease(self, tenant_id: UUID, attempt: repo.Attempt) -> bool:
        """Renew the attempt's lease once; False when the attempt no longer holds it."""
        execution_id = attempt.execution_id
        try:
            async with db.connection(self.pool) as conn:
                held = await repo.renew_lease(
                    conn,
                    tenant_id=tenant_id,
                    execution_id=execution_id,
                    attempt=attempt.number,
                    lease_seconds=self.settings.lease_seconds,
                )
        except GateError:
            logger.warning("could not renew the lease of execution %s; will retry", execution_id)
            return True
        if not held:
            logger.warning("execution %s attempt %s lost its lease", execution_id, attempt.number)
        return held

    def _outcome(self, response: N8nResponse, *, rate_limit_retryable: bool) -> repo.Outcome:
        rate_limited = rate_limit_retryable and response.status == 429
        failed = response.kind is not AnswerKind.WORKFLOW or rate_limited
        return repo.Outcome(
            status="failed" if failed else "completed",
            response_status=response.status,
            response_content_type=response.content_type,
            response_headers=response.headers,
            response_body=response.body.prefix(self.settings.max_stored_body_bytes),
            response_body_bytes=response.body.size,
            error_type=_error_type(response) if failed else None,
            error_detail=_error_detail(response) if failed else None,
            outcome_unknown=response.kind in OUTCOME_UNKNOWN,
        )

    async def _record(
        self,
        tenant_id: UUID,
        attempt: repo.Attempt,
        outcome: repo.Outcome,
        *,
        retry_at: datetime | None = None,
    ) -> None:
        """Record the outcome; if the database is down, keep trying in the background so the
        caller gets n8n's answer now and the execution is not left running."""

        async def record() -> None:
            await self._record_once(tenant_id, attempt, outcome, retry_at=retry_at)

        try:
            await record()
        except db.DatabaseUnreachable:
            execution_id = attempt.execution_id
            logger.warning("database unavailable; will keep recording execution %s", execution_id)
            self._retry_in_background(record, what=f"record execution {execution_id}")

    @asynccontextmanager
    async def _releasing_on_outage(
        self, tenant: Tenant, key: str, owner: uuid.UUID
    ) -> AsyncIterator[None]:
        try:
            yield
        except db.DatabaseUnreachable:
            self._retry_in_background(
                lambda: self._release_once(tenant, key, owner), what=f"release claim on {key!r}"
            )
            raise

    async def _release_once(self, tenant: Tenant, key: str, owner: uuid.UUID) -> None:
        async with db.connection(self.pool) as conn:
            await repo.release_unforwarded(
                conn,
                tenant_id=tenant.id,
                key=key,
                owner=owner,
                keep_seconds=self.settings.failed_key_retention_seconds,
            )

    def _retention(self, status: str) -> float:
        if status == "completed":
            return self.settings.key_retention_seconds
        return self.settings.failed_key_retention_seconds

    def _retry_in_background(self, action: Callable[[], Awaitable[None]], *, what: str) -> None:
        """Run `action` until the database takes it (bounded); shutdown waits for it too."""

        async def until_done() -> None:
            delay, deadline = 0.1, time.monotonic() + RECORD_RETRY_SECONDS
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                try:
                    await action()
                except db.DatabaseUnreachable:
                    delay = min(delay * 2, 5.0)
                else:
                    return
            logger.error("gave up trying to %s: the database stayed unreachable", what)

        self._in_background(until_done())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task that shutdown waits for."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record_once(
        self,
        tenant_id: UUID,
        attempt: repo.Attempt,
        outcome: repo.Outcome,
        *,
        retry_at: datetime | None,
    ) -> None:
        recorded = await self._outcomes.submit(
            repo.OutcomeCall(
                tenant_id=tenant_id,
                execution_id=attempt.execution_id,
                attempt=attempt.number,
                outcome=outcome,
                keep_seconds=self._retention(outcome.status),
                retry_at=retry_at,
            )
        )
        if not recorded:  # recorded already (an earlier try committed unseen) or taken over
            logger.info(
                "execution %s attempt %s no longer running", attempt.execution_id, attempt.number
            )


def replay_answer(row: repo.ExecutionRow) -> GatewayAnswer:
    assert row.response_status is not None
    headers = [(name, value) for name, value in json.loads(row.response_headers or "[]")]
    body = row.response_body or b""
    if row.response_body_bytes is not None and row.response_body_bytes > len(body):
        headers.append((TRUNCATED_HEADER, str(row.response_body_bytes)))
    return GatewayAnswer(
        status=row.response_status,
        content_type=row.response_content_type,
        headers=headers,
        body=body,
        replayed=True,
    )


_ERROR_TYPES = {
    AnswerKind.NOT_REGISTERED: "n8n-not-registered",
    AnswerKind.WRONG_METHOD: "n8n-method-not-registered",
    AnswerKind.COULD_NOT_EXECUTE: "n8n-could-not-execute",
    AnswerKind.REFUSED: "n8n-refused",
}
# n8n refused the request itself (nothing ran), and would refuse it again as it is: an async
# delivery ends at once; a sync caller's fixed retry with the same key runs.
PERMANENT = frozenset({AnswerKind.WRONG_METHOD, AnswerKind.REFUSED})


def _error_type(response: N8nResponse) -> str:
    if response.kind is AnswerKind.WORKFLOW:  # only a 429 of an async delivery gets here
        return "n8n-rate-limited"
    return _ERROR_TYPES.get(response.kind, "n8n-error")


def _error_detail(response: N8nResponse) -> str:
    if response.kind is AnswerKind.PROXY_TIMEOUT:
        return f"n8n answered {response.status}, a proxy's timeout: the workflow may have run"
    if response.kind is AnswerKind.COULD_NOT_EXECUTE:
        return (
            f"n8n answered {response.status} 'There was a problem executing the workflow', as it "
            "does for a trigger that arrives while it stops: it may run the workflow when it "
            "starts again, or never"
        )
    if response.kind is AnswerKind.REFUSED:
        return (
            f"n8n refused the request ({response.status}: its Webhook node's authentication or "
            "IP allow-list, or a request head too large); nothing ran, and it is not delivered "
            "again as it is"
        )
    if response.kind is AnswerKind.WRONG_METHOD:
        return (
            f"n8n answered {response.status}: this path is registered for another method, "
            "so it is not delivered again (retry it once the workflow takes this method)"
        )
    return f"n8n answered {response.status}{_n8n_message(response)}"


def _n8n_message(response: N8nResponse) -> str:
    """`: <message>` of a JSON error body such as n8n's own, for the log and the status."""
    try:
        payload = json.loads(response.body.prefix(4096))
    except ValueError:
        return ""
    message = payload.get("message") if isinstance(payload, dict) else None
    return f": {message[:200]}" if isinstance(message, str) and message else ""


def _not_retryable_reason(row: repo.ExecutionRow) -> str:
    if not row.deliver_async:
        return (
            "This execution ran synchronously, so the gateway did not keep its request. Send "
            "the request again with the same Idempotency-Key: a failed execution runs again."
        )
    return f"Only failed executions can be retried; this one is {row.status}."


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        "This Idempotency-Key was first used with a different method, path, query or "
        "body. Use a new key for a different request.",
    )


def _log_failure(
    tenant_id: UUID,
    request: TriggerRequest,
    attempt: repo.Attempt,
    outcome: repo.Outcome,
    *,
    retry_at: datetime | None,
    retry: bool,
) -> None:
    """One line per failed attempt: a warning while it will run again, an error when it ends
    (a dead letter) or may have run without the gateway learning how it went."""
    if retry and retry_at is None:
        level, what = logging.ERROR, "dead letter"
    elif outcome.outcome_unknown:
        level, what = logging.ERROR, "outcome unknown"
    else:
        level, what = logging.WARNING, "attempt failed"
    then = f"; next attempt at {retry_at.isoformat(timespec='seconds')}" if retry_at else ""
    _log_attempt(level, what, tenant_id, request, attempt, outcome, then=then)


def _log_attempt(
    level: int,
    what: str,
    tenant_id: UUID,
    request: TriggerRequest,
    attempt: repo.Attempt,
    outcome: repo.Outcome,
    *,
    then: str = "",
) -> None:
    """One line for an attempt, with what an operator searches by (never a header or body)."""
    logger.log(
        level,
        "%s: key=%r tenant=%s workflow=%s/%s execution=%s attempt=%s error=%s n8n_status=%s "
        "outcome_unknown=%s (%s)%s",
        what,
        request.key,
        tenant_id,
        request.mode,
        request.workflow_path,
        attempt.execution_id,
        attempt.number,
        outcome.error_type,
        outcome.response_status,
        outcome.outcome_unknown,
        outcome.error_detail,
        then,
        extra={
            "idempotency_key": request.key,
            "tenant_id": str(tenant_id),
            "workflow": f"{request.mode}/{request.workflow_path}",
            "execution_id": attempt.execution_id,
            "attempt": attempt.number,
            "error_type": outcome.error_type,
        },
    )


def _failure(exc: ForwardFailed) -> repo.Outcome:
    return repo.Outcome(
        status="failed",
        error_type=exc.cause,
        error_detail=exc.detail,
        outcome_unknown=exc.maybe_ran,
    )
