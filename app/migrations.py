"""Runs Alembic from the application: the schema's one owner stays `alembic/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db import AnyConnection

CURRENT_REVISION = "SELECT version_num FROM alembic_version"


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def alembic_config(database_url: str) -> Config:
    config = Config(str(_alembic_ini()))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str) -> None:
    """Migrate to head. Synchronous: Alembic's env runs its own event loop."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


async def schema_state(conn: AnyConnection) -> SchemaState:
    try:
        current = await conn.fetchval(CURRENT_REVISION)
    except asyncpg.UndefinedTableError:
        current = None
    return SchemaState(current=current, head=head_revision())


def _alembic_ini() -> Path:
    """alembic.ini beside the working directory (Docker, a checkout) or beside the package."""
    for candidate in (
        Path.cwd() / "alembic.ini",
        Path(__file__).resolve().parent.parent / "alembic.ini",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("alembic.ini not found: run n8n-gate from the project directory.")
