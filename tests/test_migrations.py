"""The migrations go up from nothing, down to nothing, and up again."""

from __future__ import annotations

import asyncio

from alembic import command

from app import migrations
from tests.conftest import empty_database


def test_migrations_round_trip(database_url: str) -> None:
    with empty_database(database_url) as url:
        migrations.upgrade(url)
        command.downgrade(migrations.alembic_config(url), "base")
        assert asyncio.run(migrations.read_schema_state(url)).current is None
        migrations.upgrade(url)
        state = asyncio.run(migrations.read_schema_state(url))
    assert state.is_current
