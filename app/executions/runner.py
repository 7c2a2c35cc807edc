"""Runs an attempt the gateway took: forward it to n8n while keeping its lease, then record the
outcome. A sync trigger's attempt answers its caller; an async delivery's failure is scheduled
again with backoff, or ends as a dead letter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from app import db, metrics, tracing
from app.config import Settings
from app.delivery.backoff import Backoff
from app.errors import PROBLEM_CONTENT_TYPE, ForwardFailed, GateError, SigningUnavailable
from app.executions import outcomes, repo
from app.executions.background import BackgroundWork
from app.executions.batches import ExecutionWrites
from app.executions.gateway_answer import GatewayAnswer
from app.executions.lease import LeaseKeeper
from app.executions.trigger import TriggerRequest
from app.forwarding.client import N8nClient, N8nResponse, Outbound
from app.forwarding.signing import signed_headers, unsigned
from app.tenants.signing import SigningSecrets

logger = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        *,
        pool: db.Pool,
        n8n: N8nClient,
        writes: ExecutionWrites,
        background: BackgroundWork,
        signing: SigningSecrets,
        settings: Settings,
    ) -> None:
        self._pool = pool
        self._signing = signing
        self._n8n = n8n
        self._writes = writes
        self._background = background
        self._settings = settings
        self._backoff = Backoff(
            base_seconds=settings.retry_base_seconds,
            cap_seconds=settings.retry_cap_seconds,
            max_attempts=settings.retry_max_attempts,
        )

    def start(
        self,
        tenant_id: UUID,
        request: TriggerRequest,
        attempt: repo.AttemptLease,
        *,
        secrets: Sequence[str] | None,
    ) -> asyncio.Task[GatewayAnswer]:
        """Run a claimed attempt in a task of its own: once claimed, it must finish even if the
        client goes away (shutdown waits for it)."""
        return self._background.start(
            self.run(tenant_id=tenant_id, request=request, attempt=attempt, secrets=secrets)
        )

    async def deliver(self, delivery: repo.Delivery) -> None:
        """Forward an async execution a worker took, and record it: done, or due again later."""
        row = delivery.row
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
        attempt = repo.AttemptLease(execution_id=row.id, number=row.attempts)
        with contextlib.suppress(ForwardFailed):
            await self.run(
                tenant_id=delivery.tenant_id,
                request=request,
                attempt=attempt,
                secrets=None,  # read under the attempt's lease
                retry=True,
            )

    async def run(
        self,
        *,
        tenant_id: UUID,
        request: TriggerRequest,
        attempt: repo.AttemptLease,
        secrets: Sequence[str] | None,
        retry: bool = False,
    ) -> GatewayAnswer:
        """Forward while renewing the lease, then record. With `retry` (async deliveries) a
        retryable failure is scheduled again with backoff instead of ending the execution.
        Without `secrets`, the tenant's signing secrets are read first."""
        lease = LeaseKeeper(
            lambda: self._renew_lease(tenant_id, attempt),
            interval_seconds=self._settings.lease_renew_seconds,
        )
        try:
            async with lease:
                if secrets is None:
                    secrets = await self._signing_secrets(tenant_id)
                response = await self._forward(request, attempt, secrets)
        except ForwardFailed as exc:
            if exc.final:
                return await self._complete_with_problem(tenant_id, attempt, request, exc)
            outcome = outcomes.unanswered(exc)
            retry_at = self._retry_at(attempt, outcome, None) if retry else None
            _count_attempt(outcome, retry_at=retry_at, retry=retry)
            await self._record(tenant_id, attempt, outcome, retry_at=retry_at)
            _log_failure(tenant_id, request, attempt, outcome, retry_at=retry_at, retry=retry)
            raise
        outcome = outcomes.answered(
            response,
            max_stored_body_bytes=self._settings.max_stored_body_bytes,
            rate_limit_retryable=retry,
        )
        retry_at = self._retry_at(attempt, outcome, response) if retry else None
        _count_attempt(outcome, retry_at=retry_at, retry=retry)
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

    async def _signing_secrets(self, tenant_id: UUID) -> Sequence[str]:
        try:
            return await self._signing.of(tenant_id)
        except db.DatabaseUnreachable:
            raise SigningUnavailable(
                "The database was unreachable, so the call to n8n could not be signed; "
                "nothing was sent.",
                cause="signing-secret-unavailable",
                maybe_ran=False,
            ) from None

    async def _forward(
        self, request: TriggerRequest, attempt: repo.AttemptLease, secrets: Sequence[str]
    ) -> N8nResponse:
        workflow = f"{request.mode}/{request.workflow_path}"
        started = time.perf_counter()
        try:
            response = await self._n8n.forward(self._outbound(request, attempt, secrets))
        except ForwardFailed:
            metrics.forward_finished(
                workflow=workflow, status=None, seconds=time.perf_counter() - started
            )
            raise
        metrics.forward_finished(
            workflow=workflow, status=response.status, seconds=time.perf_counter() - started
        )
        return response

    def _outbound(
        self, request: TriggerRequest, attempt: repo.AttemptLease, secrets: Sequence[str]
    ) -> Outbound:
        def signature() -> list[tuple[str, str]]:
            # One message id for every attempt of an execution, as Standard Webhooks asks of
            # a retried message, so a workflow may also recognise a second attempt.
            return signed_headers(
                secrets,
                message_id=f"msg_{attempt.execution_id}",
                timestamp=datetime.now(UTC),
                body=request.body,
            )

        return Outbound(
            method=request.method,
            path=self._n8n.path_for(mode=request.mode, raw_path=request.raw_path),
            query=request.query,
            headers=unsigned(request.headers),
            body=request.body,
            stamp=signature,
        )

    async def _complete_with_problem(
        self,
        tenant_id: UUID,
        attempt: repo.AttemptLease,
        request: TriggerRequest,
        error: ForwardFailed,
    ) -> GatewayAnswer:
        body = error.problem_json(instance=f"/{request.mode}/{request.workflow_path}")
        outcome = outcomes.answered_unusably(error, body=body)
        metrics.n8n_failed(error.cause)
        await self._record(tenant_id, attempt, outcome)
        _log_attempt(
            logging.WARNING, "final answer from the gateway", tenant_id, request, attempt, outcome
        )
        return GatewayAnswer(
            status=error.status_code,
            content_type=PROBLEM_CONTENT_TYPE,
            headers=list(outcome.response_headers or ()),
            body=body,
            replayed=False,
        )

    def _retry_at(
        self, attempt: repo.AttemptLease, outcome: repo.Outcome, response: N8nResponse | None
    ) -> datetime | None:
        return outcomes.next_attempt_at(
            attempt=attempt.number,
            outcome=outcome,
            response=response,
            backoff=self._backoff,
            unknown_outcome=self._settings.unknown_outcome,
            now=datetime.now(UTC),
        )

    async def _renew_lease(self, tenant_id: UUID, attempt: repo.AttemptLease) -> bool:
        """Renew the attempt's lease once; False when the attempt no longer holds it."""
        execution_id = attempt.execution_id
        try:
            async with db.connection(self._pool) as conn:
                held = await repo.renew_lease(
                    conn,
                    tenant_id=tenant_id,
                    execution_id=execution_id,
                    attempt=attempt.number,
                    lease_seconds=self._settings.lease_seconds,
                )
        except (GateError, db.DatabaseUnreachable):
            logger.warning("could not renew the lease of execution %s; will retry", execution_id)
            return True
        if not held:
            logger.warning("execution %s attempt %s lost its lease", execution_id, attempt.number)
        return held

    async def _record(
        self,
        tenant_id: UUID,
        attempt: repo.AttemptLease,
        outcome: repo.Outcome,
        *,
        retry_at: datetime | None = None,
    ) -> None:
        """Record the outcome; if the database is down, keep trying in the background so the
        caller gets n8n's answer now and the execution is not left running."""

        async def record() -> None:
            await self._record_once(tenant_id, attempt, outcome, retry_at=retry_at)

        try:
            with _record_span(attempt, outcome, retry_at):
                await record()
        except db.DatabaseUnreachable:
            execution_id = attempt.execution_id
            logger.warning("database unavailable; will keep recording execution %s", execution_id)
            self._background.retry_write(record, what=f"record execution {execution_id}")

    async def _record_once(
        self,
        tenant_id: UUID,
        attempt: repo.AttemptLease,
        outcome: repo.Outcome,
        *,
        retry_at: datetime | None,
    ) -> None:
        recorded = await self._writes.record(
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

    def _retention(self, status: str) -> float:
        if status == "completed":
            return self._settings.key_retention_seconds
        return self._settings.failed_key_retention_seconds


def _record_span(
    attempt: repo.AttemptLease, outcome: repo.Outcome, retry_at: datetime | None
) -> contextlib.AbstractContextManager[object]:
    """The span of an outcome's record: what the attempt came to, never its answer."""
    return tracing.span(
        "record",
        execution_id=attempt.execution_id,
        attempt=attempt.number,
        status=outcome.status,
        error_type=outcome.error_type,
        n8n_status=outcome.response_status,
        outcome_unknown=outcome.outcome_unknown,
        retry_at=retry_at.isoformat(timespec="seconds") if retry_at else None,
    )


def _count_attempt(outcome: repo.Outcome, *, retry_at: datetime | None, retry: bool) -> None:
    if outcome.status == "failed" and outcome.error_type:
        metrics.n8n_failed(outcome.error_type)
    if outcome.outcome_unknown:
        metrics.OUTCOME_UNKNOWN.inc()
    if retry:
        metrics.delivery_attempted(_delivery_result(outcome, retry_at=retry_at))


def _delivery_result(outcome: repo.Outcome, *, retry_at: datetime | None) -> metrics.DeliveryResult:
    if outcome.status == "completed":
        return "completed"
    return "retry_scheduled" if retry_at is not None else "dead_letter"


def _log_failure(
    tenant_id: UUID,
    request: TriggerRequest,
    attempt: repo.AttemptLease,
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
    attempt: repo.AttemptLease,
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
            "request_id": _request_id(request),
            "idempotency_key": request.key,
            "tenant_id": str(tenant_id),
            "workflow": f"{request.mode}/{request.workflow_path}",
            "execution_id": attempt.execution_id,
            "attempt": attempt.number,
            "error_type": outcome.error_type,
        },
    )


def _request_id(request: TriggerRequest) -> str | None:
    """The id the caller got back, stored with the request (an async delivery's too)."""
    return next((value for name, value in request.headers if name.lower() == "x-request-id"), None)
