"""The migrations go up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from app import migrations
from tests.conftest import empty_database


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
