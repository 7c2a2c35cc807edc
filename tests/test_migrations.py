"""The migrations go up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic import command

from app import migrations
from tests.conftest import empty_database, gate_settings, gateway_client, new_api_key, run_as_admin
from tests.support.fake_n8n import FakeN8n


def read_schema_state(url: str) -> migrations.SchemaState:
    async def read() -> migrations.SchemaState:
        conn = await asyncpg.connect(url)
        try:
            return await migrations.schema_state(conn)
        finally:
            await conn.close()

    return asyncio.run(read())


def test_migrations_round_trip(database_url: str) -> None:
    with empty_database(database_url) as url:
        migrations.upgrade(url)
        command.downgrade(migrations.alembic_config(url), "base")
        assert read_schema_state(url).current is None
        migrations.upgrade(url)
        state = read_schema_state(url)
    assert state.is_current


def test_a_login_role_that_is_no_superuser_migrates_and_serves(
    database_url: str, fake_n8n: tuple[FakeN8n, str]
) -> None:
    """As docker-compose.yml sets it up (deploy/postgres/10-gate-role.sh): a login that owns
    its database's schema and is a member of the service role, and nothing more."""
    role = f"gate_{uuid.uuid4().hex[:12]}"
    for statement in (
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
        f"GRANT n8n_gate_app TO {role}",  # created already: the session's migrations made it
    ):
        asyncio.run(run_as_admin(database_url, statement))
    try:
        with empty_database(database_url) as url:
            asyncio.run(run_as_admin(url, f"ALTER SCHEMA public OWNER TO {role}"))
            parts = urlsplit(url)
            as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
            migrations.upgrade(as_role)
            answer, status = asyncio.run(_trigger_once(as_role, fake_n8n[1]))
    finally:
        asyncio.run(run_as_admin(database_url, f"DROP ROLE IF EXISTS {role}"))
    assert answer == 200
    assert status == "completed"


async def _trigger_once(database_url: str, n8n_url: str) -> tuple[int, str]:
    key = await new_api_key(database_url)
    async with gateway_client(gate_settings(database_url, n8n_url), key) as gate:
        answer = await gate.post("/webhook/echo", json={}, headers={"Idempotency-Key": "k"})
        status = await gate.get("/v1/executions/k")
    return answer.status_code, status.json()["status"]
