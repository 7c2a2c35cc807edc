"""The LISTEN connection that wakes waiting requests: it must notice when it has gone dead."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.executions.notifications import CHANNEL, DatabaseNotifications
from tests.support.dbproxy import DatabaseProxy

TENANT = uuid.uuid4()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    async with DatabaseProxy(database_url).running() as proxy:
        yield proxy


async def notify(database_url: str, execution_id: int) -> None:
    """What recording an outcome sends, straight to the database (not through the proxy)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{TENANT} {execution_id}")
    finally:
        await conn.close()


async def woken_by_notify(
    finished: DatabaseNotifications, database_url: str, execution_id: int
) -> None:
    """Notify until the listener hears it: it connects in the background."""
    async with finished.subscription(TENANT, execution_id) as woken:
        while not woken.done():
            await notify(database_url, execution_id)
            await asyncio.wait({woken}, timeout=0.1)


async def test_a_listen_connection_gone_silent_is_found_and_its_waiters_woken(
    database_url: str, proxy: DatabaseProxy
) -> None:
    # A NAT or firewall that drops an idle connection tells neither side: notifications just
    # stop coming, and a waiter would sleep through the end of the execution it waits for.
    listener = DatabaseNotifications(
        proxy.url, connect_timeout=0.5, on_delivery_due=lambda: None, heartbeat_seconds=0.2
    )
    async with listener as finished:
        await asyncio.wait_for(woken_by_notify(finished, database_url, 1), 5)
        async with finished.subscription(TENANT, 2) as woken:
            proxy.silence()
            await notify(database_url, 2)  # lost on the silent connection
            await asyncio.wait_for(woken, 5)  # woken to read the execution again
        # and it listens again on a new connection
        await asyncio.wait_for(woken_by_notify(finished, database_url, 3), 5)


async def test_a_connection_gone_silent_while_it_starts_listening_is_found_too(
    database_url: str, proxy: DatabaseProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Silent between its two LISTENs: the second would wait forever for its answer (CI hit
    # this once in the test above, when a notification came in between).
    listens = 0
    listening_again = asyncio.Event()  # both LISTENs again, on a new connection
    add_listener = asyncpg.Connection.add_listener

    async def counted(conn: asyncpg.Connection, *args: Any) -> None:
        nonlocal listens
        listens += 1
        if listens == 2:
            proxy.silence()
        await add_listener(conn, *args)
        if listens == 4:
            listening_again.set()

    monkeypatch.setattr(asyncpg.Connection, "add_listener", counted)
    listener = DatabaseNotifications(
        proxy.url, connect_timeout=0.5, on_delivery_due=lambda: None, heartbeat_seconds=0.2
    )
    async with listener as finished:
        async with finished.subscription(TENANT, 4) as woken:
            await asyncio.wait_for(woken, 5)  # woken when the LISTEN timed out
        await asyncio.wait_for(listening_again.wait(), 5)
