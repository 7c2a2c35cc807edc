"""What a gateway process killed mid-work leaves in the database, made directly: quicker and
surer than killing one at the right instant (tests/executions/test_processes.py does that too)."""

from __future__ import annotations

import asyncpg


async def died_mid_delivery(database_url: str, tenant: str, key: str) -> None:
    """The delivery of `key` as a worker leaves it when its process dies mid-attempt: running,
    its lease run out."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            execution_id, tenant_id = await conn.fetchrow(
                "UPDATE executions e SET status = 'running', attempts = 1, "
                "lease_expires_at = now() - interval '1 second', lease_owner = gen_random_uuid(), "
                "started_at = now() FROM tenants t "
                "WHERE t.id = e.tenant_id AND t.name = $1 AND e.idempotency_key = $2 "
                "RETURNING e.id, e.tenant_id",
                tenant,
                key,
            )
            await conn.execute(
                "INSERT INTO execution_attempts (execution_id, attempt, tenant_id) "
                "VALUES ($1, 1, $2)",
                execution_id,
                tenant_id,
            )
            await conn.execute(
                "UPDATE delivery_queue SET running = true, due_at = now() WHERE execution_id = $1",
                execution_id,
            )
    finally:
        await conn.close()
