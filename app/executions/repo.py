"""SQL for executions. Every statement names its tenant; RLS enforces it again underneath."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from app.db import AnyConnection

_COLUMNS = """
    id, idempotency_key, fingerprint, method, mode, workflow_path, status, attempts,
    lease_expires_at, lease_expires_at < now() AS lease_expired,
    response_status, response_content_type, response_headers, response_body,
    response_body_bytes, outcome_unknown, last_error_type, last_error_detail,
    created_at, updated_at, started_at, finished_at, expires_at, deliver_async, next_attempt_at
"""

# The trigger path calls functions (migration 0002) that set the tenant for their own
# transaction: one round trip each. They return (claimed, lease_expired, execution row).
CLAIM = (
    "SELECT claimed, lease_expired, execution FROM claim_execution($1, $2, $3, $4, $5, $6, $7, $8)"
)
RETAKE = "SELECT claimed, lease_expired, execution FROM retake_execution($1, $2, $3, $4)"
ACCEPT = (
    "SELECT claimed, lease_expired, execution "
    "FROM accept_execution($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
MARK_WAITED = "SELECT mark_execution_waited($1, $2)"
TAKE_DUE = "SELECT tenant_id, execution FROM take_due_delivery($1, $2, $3)"
REQUEUE_FAILED = (
    "SELECT execution_id, idempotency_key FROM requeue_failed_executions($1, $2, $3, $4, $5)"
)
RELEASE_UNFORWARDED = "SELECT release_unforwarded_claim($1, $2, $3, $4)"
# Runs as the owner (SECURITY DEFINER), across tenants, expired rows only.
REAP_EXPIRED = "SELECT reap_expired_executions($1)"
RECORD_OUTCOME = (
    "SELECT record_execution_outcome($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
RENEW_LEASE = "SELECT renew_execution_lease($1, $2, $3, $4)"

LIST_ATTEMPTS = """
SELECT attempt, started_at, ended_at, outcome, n8n_status, error_type, error_detail
FROM execution_attempts
WHERE tenant_id = $1 AND execution_id = $2
ORDER BY attempt
"""

FIND_BY_KEY = f"""
SELECT false AS claimed, {_COLUMNS}
FROM executions WHERE tenant_id = $1 AND idempotency_key = $2
"""

LIST_RECENT = f"""
SELECT false AS claimed, {_COLUMNS}
FROM executions
WHERE tenant_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR workflow_path = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5
"""


@dataclass(frozen=True)
class ExecutionRow:
    claimed: bool
    id: int
    idempotency_key: str
    fingerprint: bytes
    method: str
    mode: str
    workflow_path: str
    status: str
    attempts: int
    lease_expires_at: datetime | None
    lease_expired: bool | None
    response_status: int | None
    response_content_type: str | None
    response_headers: str | None  # JSON: [[name, value], ...]
    response_body: bytes | None
    response_body_bytes: int | None
    outcome_unknown: bool
    last_error_type: str | None
    last_error_detail: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    deliver_async: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    status: str
    response_status: int | None = None
    response_content_type: str | None = None
    response_headers: list[tuple[str, str]] | None = None
    response_body: bytes | None = None
    response_body_bytes: int | None = None
    error_type: str | None = None
    error_detail: str | None = None
    outcome_unknown: bool = False


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    n8n_status: int | None
    error_type: str | None
    error_detail: str | None


def _row(record: asyncpg.Record | None) -> ExecutionRow | None:
    return None if record is None else ExecutionRow(**dict(record))


# Columns of the composite `executions` row that ExecutionRow does not carry.
_NOT_IN_ROW = frozenset(
    {
        "tenant_id",
        "lease_owner",
        "has_waiters",
        "request_raw_path",
        "request_query",
        "request_headers",
        "request_body",
    }
)


def _function_row(
    record: asyncpg.Record | None, *, claimed: bool | None = None
) -> ExecutionRow | None:
    if record is None:
        return None
    columns = {k: v for k, v in record["execution"].items() if k not in _NOT_IN_ROW}
    return ExecutionRow(
        claimed=record["claimed"] if claimed is None else claimed,
        lease_expired=record.get("lease_expired", False),
        **columns,
    )


@dataclass(frozen=True)
class Delivery:
    """An async execution a worker has taken, with the request it stored."""

    tenant_id: UUID
    row: ExecutionRow
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


async def claim(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    key: str,
    fingerprint: bytes,
    method: str,
    mode: str,
    workflow_path: str,
    lease_seconds: float,
    owner: UUID,
) -> ExecutionRow | None:
    record = await conn.fetchrow(
        CLAIM, tenant_id, key, fingerprint, method, mode, workflow_path, lease_seconds, owner
    )
    return _function_row(record)


async def accept(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    key: str,
    fingerprint: bytes,
    method: str,
    mode: str,
    workflow_path: str,
    raw_path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    notify: bool,
) -> ExecutionRow | None:
    record = await conn.fetchrow(
        ACCEPT,
        tenant_id,
        key,
        fingerprint,
        method,
        mode,
        workflow_path,
        raw_path,
        query,
        json.dumps(headers),
        body,
        notify,
    )
    return _function_row(record)


async def mark_waited(conn: AnyConnection, *, tenant_id: UUID, execution_id: int) -> None:
    await conn.execute(MARK_WAITED, tenant_id, execution_id)


async def take_due(
    conn: AnyConnection, *, lease_seconds: float, owner: UUID, max_per_target: int
) -> Delivery | None:
    record = await conn.fetchrow(TAKE_DUE, lease_seconds, owner, max_per_target)
    if record is None:
        return None
    execution = record["execution"]
    row = _function_row(record, claimed=True)
    assert row is not None
    return Delivery(
        tenant_id=record["tenant_id"],
        row=row,
        raw_path=execution["request_raw_path"],
        query=execution["request_query"] or "",
        headers=[(name, value) for name, value in json.loads(execution["request_headers"])],
        body=execution["request_body"] or b"",
    )


async def requeue_failed(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    key: str | None,
    workflow: str | None,
    failed_since: datetime | None,
    limit: int,
) -> list[str]:
    """Put failed async executions back in the delivery queue; return their keys."""
    records = await conn.fetch(REQUEUE_FAILED, tenant_id, key, workflow, failed_since, limit)
    return [record["idempotency_key"] for record in records]


async def find_by_key(conn: AnyConnection, *, tenant_id: UUID, key: str) -> ExecutionRow | None:
    return _row(await conn.fetchrow(FIND_BY_KEY, tenant_id, key))


async def retake(
    conn: AnyConnection, *, tenant_id: UUID, key: str, lease_seconds: float, owner: UUID
) -> ExecutionRow | None:
    return _function_row(await conn.fetchrow(RETAKE, tenant_id, key, lease_seconds, owner))


async def release_unforwarded(
    conn: AnyConnection, *, tenant_id: UUID, key: str, owner: UUID, keep_seconds: float
) -> bool:
    released: bool = await conn.fetchval(RELEASE_UNFORWARDED, tenant_id, key, owner, keep_seconds)
    return released


async def reap_expired(conn: AnyConnection, *, batch_size: int) -> int:
    deleted: int = await conn.fetchval(REAP_EXPIRED, batch_size)
    return deleted


async def record_outcome(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    execution_id: int,
    attempt: int,
    outcome: Outcome,
    keep_seconds: float,
    retry_at: datetime | None = None,
) -> bool:
    headers = None if outcome.response_headers is None else json.dumps(outcome.response_headers)
    recorded: bool = await conn.fetchval(
        RECORD_OUTCOME,
        tenant_id,
        execution_id,
        attempt,
        outcome.status,
        outcome.response_status,
        outcome.response_content_type,
        headers,
        outcome.response_body,
        outcome.response_body_bytes,
        outcome.error_type,
        outcome.error_detail,
        outcome.outcome_unknown,
        keep_seconds,
        retry_at,
    )
    return recorded


async def renew_lease(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int, attempt: int, lease_seconds: float
) -> bool:
    renewed: bool = await conn.fetchval(
        RENEW_LEASE, tenant_id, execution_id, attempt, lease_seconds
    )
    return renewed


async def list_attempts(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int
) -> list[AttemptRow]:
    records = await conn.fetch(LIST_ATTEMPTS, tenant_id, execution_id)
    return [AttemptRow(**dict(record)) for record in records]


async def list_recent(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    status: str | None,
    workflow: str | None,
    before_id: int | None,
    limit: int,
) -> list[ExecutionRow]:
    records = await conn.fetch(LIST_RECENT, tenant_id, status, workflow, before_id, limit)
    return [ExecutionRow(**dict(record)) for record in records]
