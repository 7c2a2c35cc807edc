"""Row Level Security at the SQL level, for the role the service runs as."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app import db
from app.config import Settings
from tests.conftest import new_api_key

INSERT = """
INSERT INTO executions
    (tenant_id, idempotency_key, fingerprint, method, mode, workflow_path, status)
VALUES ($1, $2, '\\x00', 'POST', 'webhook', 'echo', 'completed')
"""


async def tenant_id_of(conn: asyncpg.Connection, api_key: str) -> uuid.UUID:
    tenant: uuid.UUID = await conn.fetchval(
        "SELECT tenant_id FROM api_keys WHERE prefix = $1", api_key.split("_")[1]
    )
    return tenant


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[db.Pool]:
    pool = await db.create_pool(str(settings.database_url), settings)
    yield pool
    await pool.close()


@pytest.fixture
async def two_tenants(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    conn = await asyncpg.connect(database_url)
    try:
        a = await tenant_id_of(conn, await new_api_key(database_url))
        b = await tenant_id_of(conn, await new_api_key(database_url))
        for tenant in (a, b):
            await conn.execute(INSERT, tenant, "same-key")
    finally:
        await conn.close()
    return a, b


async def test_the_service_role_is_subject_to_rls(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        role = await conn.fetchrow(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        forced = await conn.fetchval(
            "SELECT relforcerowsecurity AND relrowsecurity FROM pg_class "
            "WHERE relname = 'executions'"
        )
    assert dict(role) == {"rolname": "n8n_gate_app", "rolsuper": False, "rolbypassrls": False}
    assert forced is True


async def test_a_query_without_a_tenant_filter_sees_only_its_tenant(
    pool: db.Pool, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = two_tenants
    async with db.tenant_transaction(pool, a) as conn:
        visible = await conn.fetch(
            "SELECT tenant_id FROM executions WHERE idempotency_key = 'same-key'"
        )
        deleted = await conn.execute("DELETE FROM executions WHERE tenant_id = $1", b)
    assert [row["tenant_id"] for row in visible] == [a]
    assert deleted == "DELETE 0"


async def test_without_a_tenant_nothing_is_visible(
    pool: db.Pool, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM executions") == 0


async def test_the_tenant_setting_does_not_outlive_its_transaction(
    pool: db.Pool, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = two_tenants
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute(db.SET_TENANT, str(a))
            assert await conn.fetchval("SELECT count(*) FROM executions") == 1
        assert await conn.fetchval("SELECT count(*) FROM executions") == 0


async def test_rows_for_another_tenant_cannot_be_written(
    pool: db.Pool, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with db.tenant_transaction(pool, a) as conn:
            await conn.execute(INSERT, b, "smuggled")


async def test_the_service_role_cannot_read_api_keys(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM api_keys")


async def test_a_temporary_table_cannot_stand_in_for_ours_in_an_owners_function(
    pool: db.Pool, two_tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    """The owner's functions search pg_temp last: else the service role's temporary table named
    like ours would take the owner's writes (and any trigger on it would run as the owner)."""
    tenant = two_tenants[0]
    key = f"abandoned-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        claimed = await conn.fetchrow(
            "SELECT claimed, (execution).id AS id FROM claim_execution("
            "$1, $2, '\\x00', 'POST', 'webhook', 'echo', 0.001, gen_random_uuid())",
            tenant,
            key,
        )
        assert claimed["claimed"]
        await conn.execute("SELECT pg_sleep(0.01)")  # past the 1 ms lease
        await conn.execute(
            "CREATE TEMP TABLE execution_attempts (execution_id bigint, attempt int, "
            "outcome text, ended_at timestamptz, error_type text, error_detail text)"
        )
        try:
            await conn.fetchval("SELECT end_abandoned_executions(1000, 60)")
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
                ended = await conn.fetchval(
                    "SELECT outcome FROM public.execution_attempts WHERE execution_id = $1",
                    claimed["id"],
                )
        finally:
            await conn.execute("DROP TABLE pg_temp.execution_attempts")
    assert ended == "abandoned"
