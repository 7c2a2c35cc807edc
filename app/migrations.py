"""Runs Alembic from the application: the schema's one owner stays `alembic/`.

The migrations are found through the package, never the working directory: a checkout keeps
them beside `app/`, and the wheel carries the same files inside it as `app/alembic/`
(pyproject.toml), so an installed gateway migrates from anywhere. `alembic.ini` at the top is
for developers running `alembic` by hand; the gateway configures Alembic itself.
"""

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
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
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


def script_location() -> Path:
    """The migrations inside the installed package, else beside it (a checkout)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"no migrations in {package / 'alembic'} nor beside {package}")
