"""What the delivery queue holds, across tenants, for /metrics. The queue carries ids and times
only (no tenant data), so the service role reads it whole without Row Level Security.

A scrape reads it on a connection of its own, not the pool's: a pool busy with triggers is not
a database that is down, and a scrape must not take a connection a trigger waits for. Counts
stop at QUEUE_COUNT_CAP and the oldest due row comes from the due-time index, so a scrape costs
the same under any backlog.
"""

from __future__ import annotations

import asyncio

import asyncpg

from app import db
from app.metrics import QUEUE_COUNT_CAP, QueueFacts, ScrapeFacts

# A scrape must not wait on a database that stopped answering.
READ_TIMEOUT_SECONDS = 2.0
_UNREACHABLE: tuple[type[BaseException], ...] = (*db.UNAVAILABLE_ERRORS, TimeoutError)

QUEUE_FACTS = """
SELECT
    (SELECT count(*) FROM (
        SELECT FROM delivery_queue WHERE NOT running AND due_at <= now() LIMIT $1) AS d) AS due,
    (SELECT count(*) FROM (
        SELECT FROM delivery_queue WHERE NOT running AND due_at > now() LIMIT $1) AS s)
        AS scheduled,
    (SELECT count(*) FROM (SELECT FROM delivery_queue WHERE running LIMIT $1) AS r) AS running,
    COALESCE(EXTRACT(EPOCH FROM now() - (
        SELECT due_at FROM delivery_queue WHERE NOT running AND due_at <= now()
        ORDER BY due_at LIMIT 1
    )), 0)::double precision AS oldest_due_age_seconds
"""


async def scrape_facts(database_url: str) -> ScrapeFacts:
    """Whether the database answers, and the queue as it has it now: each within
    READ_TIMEOUT_SECONDS (the queue is None when only its query took too long)."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            conn = await asyncpg.connect(
                database_url, server_settings={"application_name": "n8n-gate metrics"}
            )
    except _UNREACHABLE:
        return ScrapeFacts(database_up=False, queue=None)
    try:
        await conn.execute(db.SET_APP_ROLE, timeout=READ_TIMEOUT_SECONDS)
        row = await conn.fetchrow(QUEUE_FACTS, QUEUE_COUNT_CAP, timeout=READ_TIMEOUT_SECONDS)
    except TimeoutError:
        return ScrapeFacts(database_up=True, queue=None)
    except _UNREACHABLE:
        return ScrapeFacts(database_up=False, queue=None)
    finally:
        conn.terminate()  # closing politely could wait on the same silent network
    assert row is not None
    return ScrapeFacts(database_up=True, queue=QueueFacts(**dict(row)))
