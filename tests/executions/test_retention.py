"""Retention: every finished key has an expiry; expired keys are new again and get reaped."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta

import asyncpg

from tests.conftest import ClientFactory
from tests.support.fake_n8n import FakeN8n


async def test_a_finished_key_shows_when_it_expires(make_client: ClientFactory) -> None:
    key = f"keep-{uuid.uuid4()}"
    async with make_client(key_retention_seconds=3600, failed_key_retention_seconds=7200) as client:
        await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
        await client.post("/webhook/fail", json={}, headers={"Idempotency-Key": f"{key}-f"})
        done = (await client.get(f"/v1/executions/{key}")).json()
        failed = (await client.get(f"/v1/executions/{key}-f")).json()
    for status, hours in ((done, 1), (failed, 2)):
        kept = datetime.fromisoformat(status["expires_at"]) - datetime.fromisoformat(
            status["finished_at"]
        )
        assert abs(kept - timedelta(hours=hours)) < timedelta(seconds=1)


async def test_an_expired_key_is_new_again(make_client: ClientFactory, n8n: FakeN8n) -> None:
    key = f"expire-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    async with make_client(key_retention_seconds=0.3, reaper_interval_seconds=0) as client:
        await client.post("/webhook/echo", json={"n": 1}, headers=headers)
        replay = await client.post("/webhook/echo", json={"n": 1}, headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"  # cached in the process now
        await asyncio.sleep(0.4)  # the retention window itself is what is under test
        again = await client.post("/webhook/echo", json={"n": 2}, headers=headers)
        assert again.status_code == 200
        assert "idempotent-replayed" not in again.headers
        assert again.json()["received"] == {"n": 2}
        status = (await client.get(f"/v1/executions/{key}")).json()
    assert status["attempts"] == 1
    assert len(n8n.calls_for(key)) == 2


async def test_the_reaper_deletes_expired_executions_only(
    make_client: ClientFactory, database_url: str
) -> None:
    short, long = f"short-{uuid.uuid4()}", f"long-{uuid.uuid4()}"
    async with make_client(key_retention_seconds=0.2, reaper_interval_seconds=0) as quick:
        await quick.post("/webhook/echo", json={}, headers={"Idempotency-Key": short})
    async with make_client(key_retention_seconds=3600, reaper_batch_size=1) as client:
        await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": long})
        await asyncio.sleep(0.3)
        reaped = await client.services.reaper.reap_once()
        assert reaped >= 1
        assert (await client.get(f"/v1/executions/{short}")).status_code == 404
        assert (await client.get(f"/v1/executions/{long}")).status_code == 200
    conn = await asyncpg.connect(database_url)
    try:
        orphans = await conn.fetchval(
            "SELECT count(*) FROM execution_attempts a "
            "WHERE NOT EXISTS (SELECT FROM executions e WHERE e.id = a.execution_id)"
        )
    finally:
        await conn.close()
    assert orphans == 0


async def test_the_reaper_runs_by_itself(make_client: ClientFactory) -> None:
    key = f"auto-{uuid.uuid4()}"
    async with make_client(key_retention_seconds=0.1, reaper_interval_seconds=0.2) as client:
        await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
        deadline = time.monotonic() + 5
        while (await client.get(f"/v1/executions/{key}")).status_code != 404:
            assert time.monotonic() < deadline, "the reaper never deleted the expired row"
            await asyncio.sleep(0.05)
