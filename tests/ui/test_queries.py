"""The dashboard's statements on a tenant with many executions beside another busy tenant: the
list takes its page from an index, never by walking the other tenant's newer rows, and its counts
stop at their cap. Read from the plans Postgres chooses (EXPLAIN), on real rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.executions import repo

ROWS = 20_000

SEED = """
INSERT INTO executions (tenant_id, idempotency_key, fingerprint, method, mode, workflow_path,
    status, attempts, deliver_async, response_body)
SELECT $1, 'order-' || g, '\\x00', 'POST', 'webhook', 'flow-' || (g % 20),
    CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'completed' END, 1, g % 2 = 0,
    convert_to(repeat('x', 300), 'UTF8')
FROM generate_series(1, $2) g
"""


@pytest.fixture
async def quiet_and_busy(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
    """A quiet tenant's rows, then as many newer ones of a busy tenant; a connection as the
    service's role, and the quiet tenant's id."""
    conn = await asyncpg.connect(database_url)
    tenants = []
    for name in ("quiet", "busy"):
        tenants.append(
            await conn.fetchval(
                "INSERT INTO tenants (name) VALUES ($1) RETURNING id",
                f"{name}-{uuid.uuid4().hex[:8]}",
            )
        )
    for tenant in tenants:  # as the login user (the owner, superuser here): RLS lets it insert
        await conn.execute(SEED, tenant, ROWS)
    await conn.execute("VACUUM ANALYZE executions")  # as autovacuum leaves a table in use
    await conn.execute("SET ROLE n8n_gate_app")
    try:
        yield conn, tenants[0]
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute("DELETE FROM executions WHERE tenant_id = any($1::uuid[])", tenants)
        await conn.execute("DELETE FROM tenants WHERE id = any($1::uuid[])", tenants)
        await conn.close()


async def plan(conn: asyncpg.Connection, tenant: Any, statement: str, *args: Any) -> str:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
        rows = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
    return json.dumps(json.loads(rows) if isinstance(rows, str) else rows)


INDEXED = [
    (repo.ExecutionFilter(), "executions_recent"),
    (repo.ExecutionFilter(status="failed"), "executions_status_recent"),
    (repo.ExecutionFilter(workflow="flow-3"), "executions_workflow_recent"),
]


async def test_the_list_takes_its_page_from_an_index(
    quiet_and_busy: tuple[asyncpg.Connection, Any],
) -> None:
    conn, tenant = quiet_and_busy
    for filters, index in INDEXED:
        where, args = repo._where(tenant, filters)
        statement = repo.LIST_RECENT.format(where=where, order="DESC", limit=f"${len(args) + 1}")
        chosen = await plan(conn, tenant, statement, *args, 51)
        assert f'"Index Name": "{index}"' in chosen, filters
        assert '"Seq Scan"' not in chosen, filters
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
            rows = await repo.list_recent(conn, tenant_id=tenant, filters=filters, limit=51)
        assert len(rows) == 51


async def test_counts_stop_at_the_cap_and_scan_nothing_whole(
    quiet_and_busy: tuple[asyncpg.Connection, Any],
) -> None:
    conn, tenant = quiet_and_busy
    where, args = repo._where(tenant, repo.ExecutionFilter())
    statement = repo.COUNT_BY_STATUS.format(where=where, cap=f"${len(args) + 1}")
    chosen = await plan(conn, tenant, statement, *args, 1000)
    assert chosen.count('"Index Name": "executions_status_recent"') >= 3  # the rare statuses
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
        counts = await repo.count_by_status(
            conn, tenant_id=tenant, filters=repo.ExecutionFilter(), cap=1000
        )
        exact = await repo.count_by_status(
            conn, tenant_id=tenant, filters=repo.ExecutionFilter(), cap=ROWS
        )
    assert counts.counts == {"pending": 0, "running": 0, "completed": 1000, "failed": 200}
    assert counts.at_least == {"completed"}
    assert exact.counts["completed"] == ROWS - ROWS // 100


async def test_a_list_reads_no_bodies_or_headers(database_url: str) -> None:
    """A page of executions with megabyte answers and requests moves a few hundred bytes a row
    from the database, not the bodies: only the execution's own page reads those."""
    conn = await asyncpg.connect(database_url)
    tenant = await conn.fetchval(
        "INSERT INTO tenants (name) VALUES ($1) RETURNING id", f"big-{uuid.uuid4().hex[:8]}"
    )
    big = b"x" * (1024 * 1024)
    await conn.execute(
        """
        INSERT INTO executions (tenant_id, idempotency_key, fingerprint, method, mode,
            workflow_path, status, attempts, deliver_async, response_status, response_headers,
            response_body, request_raw_path, request_headers, request_body)
        SELECT $1, 'big-' || g, '\\x00', 'POST', 'webhook', 'flow', 'completed', 1, true, 200,
            '[["x-big", "v"]]', $2, 'flow', '[]', $2
        FROM generate_series(1, 5) g
        """,
        tenant,
        big,
    )
    try:
        await conn.execute("SET ROLE n8n_gate_app")
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
            where, args = repo._where(tenant, repo.ExecutionFilter())
            statement = repo.LIST_RECENT.format(
                where=where, order="DESC", limit=f"${len(args) + 1}"
            )
            records = await conn.fetch(statement, *args, 50)
            rows = await repo.list_recent(
                conn, tenant_id=tenant, filters=repo.ExecutionFilter(), limit=50
            )
    finally:
        await conn.execute("RESET ROLE")
        await conn.execute("DELETE FROM executions WHERE tenant_id = $1", tenant)
        await conn.execute("DELETE FROM tenants WHERE id = $1", tenant)
        await conn.close()
    assert len(records) == len(rows) == 5
    read = sum(len(str(value)) for record in records for value in record.values())
    assert read < 5 * 1000, f"{read} characters for 5 rows"
    assert {"response_body", "request_body", "response_headers"}.isdisjoint(records[0].keys())
