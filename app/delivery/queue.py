"""What the delivery queue holds, across tenants, for /metrics. The queue carries ids and times
only (no tenant data), so the service role reads it whole without Row Level Security."""

from __future__ import annotations

import asyncio

from app import db
from app.metrics import QueueFacts

# Read at scrape time; a scrape must not wait on a database that stopped answering.
READ_TIMEOUT_SECONDS = 2.0

QUEUE_FACTS = """
SELECT count(*) FILTER (WHERE NOT running AND due_at <= now()) AS due,
       count(*) FILTER (WHERE NOT running AND due_at > now()) AS scheduled,
       count(*) FILTER (WHERE running) AS running,
       COALESCE(
           EXTRACT(EPOCH FROM now() - min(due_at) FILTER (WHERE NOT running AND due_at <= now())),
           0
       )::double precision AS oldest_due_age_seconds
FROM delivery_queue
"""


async def queue_facts(pool: db.Pool) -> QueueFacts | None:
    """The queue now; None when the database could not say within READ_TIMEOUT_SECONDS."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS), db.connection(pool) as conn:
            row = await conn.fetchrow(QUEUE_FACTS)
    except (db.DatabaseUnreachable, TimeoutError):
        return None
    assert row is not None
    return QueueFacts(**dict(row))
