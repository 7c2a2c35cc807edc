"""The connection pool and tenant-scoped transactions.

Every connection the service lends runs as `n8n_gate_app` (see the first migration), a role that
Row Level Security applies to; each transaction names its tenant with `app.tenant_id`, so a query
that forgot its tenant filter still sees only that tenant's rows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg

from app import metrics
from app.config import Settings

APP_ROLE = "n8n_gate_app"
SET_APP_ROLE = "SET ROLE n8n_gate_app"
SET_TENANT = "SELECT set_config('app.tenant_id', $1, true)"

Connection = asyncpg.Connection
# What a pool lends: it proxies a Connection's whole API.
PooledConnection = asyncpg.pool.PoolConnectionProxy
# What repositories accept: a pooled connection, or a plain one (CLI, migrations checks).
AnyConnection = Connection | PooledConnection
Pool = asyncpg.Pool


class DatabaseUnreachable(Exception):
    """The database cannot be reached right now (not a bug in a query); nothing was done.
    The edge answers it as 503 database-unavailable (app/problems.py)."""


# Errors that mean "the database cannot be reached right now", as opposed to a bug in a query.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


async def _init_connection(conn: Connection) -> None:
    await conn.execute(SET_APP_ROLE)


async def _keep_session(conn: Connection) -> None:
    """Replaces asyncpg's per-release reset (RESET ALL, UNLISTEN *, ...): the service leaves no
    session state behind (tenant settings are transaction-local), the reset costs a round trip on
    every release, and RESET ALL would drop the SET ROLE that makes Row Level Security apply."""


async def create_pool(dsn: str, settings: Settings) -> Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(settings.db_pool_min_size, settings.db_pool_max_size),
        max_size=settings.db_pool_max_size,
        # asyncpg waits 60 s by default: every request would hang that long on a database
        # whose network path went silent, before the 503 that says to retry.
        timeout=settings.db_connect_timeout_seconds,
        command_timeout=settings.db_command_timeout_seconds,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"application_name": "n8n-gate"},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def tenant_transaction(pool: Pool, tenant_id: UUID) -> AsyncIterator[PooledConnection]:
    """A transaction in which Row Level Security shows only `tenant_id`'s rows."""
    async with _unreachable(), _lent(pool) as conn, conn.transaction():
        await conn.execute(SET_TENANT, str(tenant_id))
        yield conn


@asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[PooledConnection]:
    """A connection for statements that need no tenant (auth lookup, health) or that set it
    for their own transaction (the trigger-path functions of migration 0002)."""
    async with _unreachable(), _lent(pool) as conn:
        yield conn


@asynccontextmanager
async def _lent(pool: Pool) -> AsyncIterator[PooledConnection]:
    """A connection from the pool, counted in the pool's metrics while lent."""
    started = time.perf_counter()
    async with pool.acquire() as conn:
        metrics.DB_ACQUIRE_DURATION.observe(time.perf_counter() - started)
        metrics.DB_CONNECTIONS_IN_USE.inc()
        try:
            yield conn
        finally:
            metrics.DB_CONNECTIONS_IN_USE.dec()


@asynccontextmanager
async def _unreachable() -> AsyncIterator[None]:
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnreachable(str(exc) or type(exc).__name__) from exc
