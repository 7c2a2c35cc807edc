"""SQL for executions. Every statement names its tenant; RLS enforces it again underneath."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.db import AnyConnection

_COLUMNS = """
    id, idempotency_key, fingerprint, method, mode, workflow_path, status, attempts,
    lease_expires_at, lease_expires_at < now() AS lease_expired,
    response_status, response_content_type, response_headers, response_body,
    last_error_type, last_error_detail, created_at, updated_at, started_at, finished_at
"""

# One statement decides who runs: the INSERT claims a new key; on conflict it does nothing and
# the second branch returns the existing row. If that row was committed after this statement's
# snapshot, neither branch returns anything and the caller reads it with FIND_BY_KEY.
CLAIM = f"""
WITH claimed AS (
    INSERT INTO executions (
        tenant_id, idempotency_key, fingerprint, method, mode, workflow_path,
        status, attempts, lease_expires_at, started_at
    )
    VALUES ($1, $2, $3, $4, $5, $6, 'running', 1, now() + make_interval(secs => $7), now())
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING {_COLUMNS}
)
SELECT true AS claimed, * FROM claimed
UNION ALL
SELECT false AS claimed, {_COLUMNS}
FROM executions
WHERE tenant_id = $1 AND idempotency_key = $2 AND NOT EXISTS (SELECT FROM claimed)
"""

FIND_BY_KEY = f"""
SELECT false AS claimed, {_COLUMNS}
FROM executions WHERE tenant_id = $1 AND idempotency_key = $2
"""

# Takes over a failed execution, or a running one whose lease ran out. Under READ COMMITTED a
# second taker waits for the first, re-checks the WHERE on the new row and matches nothing.
RETAKE = f"""
UPDATE executions
SET status = 'running', attempts = attempts + 1,
    lease_expires_at = now() + make_interval(secs => $3), started_at = now(),
    finished_at = NULL, updated_at = now(),
    response_status = NULL, response_content_type = NULL, response_headers = NULL,
    response_body = NULL
WHERE tenant_id = $1 AND idempotency_key = $2
  AND (status = 'failed' OR (status = 'running' AND lease_expires_at < now()))
RETURNING true AS claimed, {_COLUMNS}
"""

# Fenced by the attempt number: an attempt whose lease was taken over cannot overwrite the
# attempt that took it.
RECORD_OUTCOME = """
UPDATE executions
SET status = $4, response_status = $5, response_content_type = $6, response_headers = $7,
    response_body = $8, last_error_type = $9, last_error_detail = $10,
    lease_expires_at = NULL, finished_at = now(), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND status = 'running'
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
    response_headers: list[list[str]] | None
    response_body: bytes | None
    last_error_type: str | None
    last_error_detail: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    status: str
    response_status: int | None = None
    response_content_type: str | None = None
    response_headers: list[tuple[str, str]] | None = None
    response_body: bytes | None = None
    error_type: str | None = None
    error_detail: str | None = None


def _row(record: asyncpg.Record | None) -> ExecutionRow | None:
    return None if record is None else ExecutionRow(**dict(record))


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
) -> ExecutionRow | None:
    record = await conn.fetchrow(
        CLAIM, tenant_id, key, fingerprint, method, mode, workflow_path, lease_seconds
    )
    return _row(record)


async def find_by_key(conn: AnyConnection, *, tenant_id: UUID, key: str) -> ExecutionRow | None:
    return _row(await conn.fetchrow(FIND_BY_KEY, tenant_id, key))


async def retake(
    conn: AnyConnection, *, tenant_id: UUID, key: str, lease_seconds: float
) -> ExecutionRow | None:
    return _row(await conn.fetchrow(RETAKE, tenant_id, key, lease_seconds))


async def record_outcome(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int, attempt: int, outcome: Outcome
) -> bool:
    headers: Any = (
        None if outcome.response_headers is None else [list(h) for h in outcome.response_headers]
    )
    result: str = await conn.execute(
        RECORD_OUTCOME,
        tenant_id,
        execution_id,
        attempt,
        outcome.status,
        outcome.response_status,
        outcome.response_content_type,
        headers,
        outcome.response_body,
        outcome.error_type,
        outcome.error_detail,
    )
    return result == "UPDATE 1"


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
