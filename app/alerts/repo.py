"""SQL for alerts. The table is the owner's alone (it holds every tenant's): the service reaches
it through the functions of app/sql/02_functions.sql, the CLI reads it as the owner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.db import AnyConnection

TAKE_DUE = """
SELECT id, tenant_id, tenant_name, type, execution_id, attempt, idempotency_key, workflow,
       error_type, error_detail, n8n_status, outcome_unknown, occurred_at, sends
FROM take_due_alerts($1, $2)
"""
RECORD_SEND = "SELECT record_alert_send($1, $2, $3, $4, $5)"
DROP_DUE = "SELECT drop_due_alerts($1)"
REAP = "SELECT reap_alerts($1, $2)"
# The owner's view, newest first (the CLI).
LIST = """
SELECT a.id, t.name AS tenant, a.type, a.idempotency_key, a.workflow, a.status, a.sends,
       a.occurred_at, a.last_error
FROM alerts a JOIN tenants t ON t.id = a.tenant_id
WHERE ($1::text IS NULL OR a.status = $1)
ORDER BY a.id DESC
LIMIT $2
"""


@dataclass(frozen=True)
class Alert:
    """An alert a worker took, to send now: its `sends`-th send."""

    id: int
    tenant_id: UUID
    tenant_name: str
    type: str
    execution_id: int
    attempt: int
    idempotency_key: str
    workflow: str
    error_type: str | None
    error_detail: str | None
    n8n_status: int | None
    outcome_unknown: bool
    occurred_at: datetime
    sends: int


@dataclass(frozen=True)
class ListedAlert:
    id: int
    tenant: str
    type: str
    idempotency_key: str
    workflow: str
    status: str
    sends: int
    occurred_at: datetime
    last_error: str | None


async def take_due(conn: AnyConnection, *, lease_seconds: float, limit: int) -> list[Alert]:
    """Lease up to `limit` due alerts to the caller; one transaction."""
    return [Alert(**dict(record)) for record in await conn.fetch(TAKE_DUE, lease_seconds, limit)]


async def record_send(
    conn: AnyConnection,
    *,
    alert_id: int,
    send: int,
    delivered: bool,
    retry_at: datetime | None,
    error: str | None,
) -> bool:
    """Delivered, due again at `retry_at`, or (neither) given up. False when this send no
    longer holds the alert (its lease ran out and another process took it)."""
    recorded: bool = await conn.fetchval(RECORD_SEND, alert_id, send, delivered, retry_at, error)
    return recorded


async def drop_due(conn: AnyConnection, *, limit: int) -> int:
    dropped: int = await conn.fetchval(DROP_DUE, limit)
    return dropped


async def reap(conn: AnyConnection, *, batch_size: int, keep_seconds: float) -> int:
    deleted: int = await conn.fetchval(REAP, batch_size, keep_seconds)
    return deleted


async def list_alerts(conn: AnyConnection, *, status: str | None, limit: int) -> list[ListedAlert]:
    """As the owner (the CLI): the service role cannot read the table."""
    return [ListedAlert(**dict(record)) for record in await conn.fetch(LIST, status, limit)]
