"""While Postgres is unreachable: 503s with Retry-After, nothing forwarded, and recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from app.embedded import EmbeddedPostgres
from tests.conftest import ClientFactory, GatewayClient
from tests.support.dbproxy import DatabaseProxy
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    async with DatabaseProxy(database_url).running() as proxy:
        yield proxy


@pytest.fixture
async def gateway(make_client: ClientFactory, proxy: DatabaseProxy) -> AsyncIterator[GatewayClient]:
    async with make_client(DATABASE_URL=proxy.url, auth_cache_seconds=0) as client:
        yield client


async def post(client: httpx.AsyncClient, path: str, key: str) -> httpx.Response:
    return await client.post(f"/webhook/{path}", json={"k": key}, headers={"Idempotency-Key": key})


async def eventually_ok(client: httpx.AsyncClient, path: str, key: str) -> httpx.Response:
    deadline = time.monotonic() + 10
    while (response := await post(client, path, key)).status_code == 503:
        assert time.monotonic() < deadline, "the gateway did not recover"
        await asyncio.sleep(0.05)
    return response


async def test_an_outage_answers_503_forwards_nothing_and_recovers(
    gateway: GatewayClient, proxy: DatabaseProxy, n8n: FakeN8n
) -> None:
    assert (await post(gateway, "echo", f"before-{uuid.uuid4()}")).status_code == 200

    proxy.cut()
    during = [f"during-{uuid.uuid4()}" for _ in range(5)]
    responses = await asyncio.gather(*(post(gateway, "echo", key) for key in during))
    for response in responses:
        problem = assert_problem(response, 503, "database-unavailable")
        assert int(response.headers["retry-after"]) > 0
        assert "nothing was forwarded" in problem["detail"]
    assert all(n8n.calls_for(key) == [] for key in during)
    assert_problem(await gateway.get("/readyz"), 503, "database-unavailable")
    assert_problem(await gateway.get("/v1/executions"), 503, "database-unavailable")

    proxy.restore()
    for key in during:
        assert (await eventually_ok(gateway, "echo", key)).status_code == 200
        assert len(n8n.calls_for(key)) == 1
    assert (await gateway.get("/readyz")).status_code == 200


async def test_a_database_that_stops_answering_is_503_within_the_connect_timeout(
    make_client: ClientFactory, proxy: DatabaseProxy, n8n: FakeN8n
) -> None:
    settings = {"auth_cache_seconds": 0, "db_connect_timeout_seconds": 0.5}
    async with make_client(DATABASE_URL=proxy.url, **settings) as gateway:
        assert (await post(gateway, "echo", f"before-{uuid.uuid4()}")).status_code == 200
        proxy.stall()
        during = f"during-{uuid.uuid4()}"
        for _ in range(3):  # the pooled connections are gone: each needs a new one
            started = time.monotonic()
            async with asyncio.timeout(10):  # asyncpg's own default would wait 60 s
                response = await post(gateway, "echo", during)
            assert_problem(response, 503, "database-unavailable")
            assert time.monotonic() - started < 3
        proxy.restore()
        assert (await eventually_ok(gateway, "echo", during)).status_code == 200
    assert len(n8n.calls_for(during)) == 1


async def test_an_outcome_that_arrives_during_an_outage_is_recorded_afterwards(
    gateway: GatewayClient, proxy: DatabaseProxy, n8n: FakeN8n
) -> None:
    key = f"through-{uuid.uuid4()}"
    first = asyncio.create_task(post(gateway, "slow", key))
    deadline = time.monotonic() + 5
    while not n8n.calls_for(key):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    proxy.cut()
    n8n.release_slow()
    answer = await first
    assert answer.status_code == 200  # n8n answered; the caller gets it despite the outage

    proxy.restore()
    deadline = time.monotonic() + 10
    while True:
        status = await gateway.get(f"/v1/executions/{key}")
        if status.status_code == 200 and status.json()["status"] == "completed":
            break
        assert time.monotonic() < deadline, "the outcome was never recorded"
        await asyncio.sleep(0.05)
    replay = await post(gateway, "slow", key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(key)) == 1


async def test_an_outage_under_load_loses_and_strands_nothing(
    gateway: GatewayClient, proxy: DatabaseProxy, n8n: FakeN8n
) -> None:
    results: dict[str, int] = {}
    stop = asyncio.Event()

    async def worker(worker_id: int) -> None:
        sequence = 0
        while not stop.is_set():
            key = f"load-{worker_id}-{sequence}-{uuid.uuid4().hex[:8]}"
            sequence += 1
            results[key] = (await post(gateway, "echo", key)).status_code

    async def settled(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(results) < count:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker(i)) for i in range(16)]
    await settled(100)
    proxy.cut()
    await asyncio.sleep(0.5)  # the outage itself lasts a while; that is what is under test
    proxy.restore()
    await settled(len(results) + 200)
    stop.set()
    await asyncio.gather(*workers)

    assert set(results.values()) <= {200, 503}
    assert 200 in results.values()
    assert 503 in results.values()
    for key, status in results.items():
        assert len(n8n.calls_for(key)) == (1 if status == 200 else 0), key
    deadline = time.monotonic() + 10
    while running := (await gateway.get("/v1/executions?status=running")).json()["items"]:
        assert time.monotonic() < deadline, f"stuck executions: {running}"
        await asyncio.sleep(0.05)


async def test_a_real_restart_of_postgres_is_survived(
    make_client: ClientFactory, embedded_server: EmbeddedPostgres | None, n8n: FakeN8n
) -> None:
    if embedded_server is None:
        pytest.skip("restarts only the suite's own embedded server, never a shared one")
    async with make_client(auth_cache_seconds=0) as gateway:
        before = f"restart-before-{uuid.uuid4()}"
        assert (await post(gateway, "echo", before)).status_code == 200
        await asyncio.to_thread(embedded_server.restart)
        after = f"restart-after-{uuid.uuid4()}"
        response = await eventually_ok(gateway, "echo", after)
        assert response.status_code == 200
        assert (await post(gateway, "echo", before)).headers["idempotent-replayed"] == "true"
        assert (await gateway.get("/readyz")).status_code == 200
    assert len(n8n.calls_for(after)) == 1


async def test_a_lease_whose_renewal_met_an_outage_is_renewed_once_the_database_is_back(
    make_client: ClientFactory,
    proxy: DatabaseProxy,
    n8n: FakeN8n,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"renewed-{uuid.uuid4()}"
    settings = {"auth_cache_seconds": 0, "lease_seconds": 1.0, "lease_renew_seconds": 0.2}
    async with make_client(DATABASE_URL=proxy.url, **settings) as gateway:
        first = asyncio.create_task(post(gateway, "slow", key))
        deadline = time.monotonic() + 5
        while not n8n.calls_for(key):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        proxy.cut()
        while "could not renew the lease" not in caplog.text:
            assert time.monotonic() < deadline + 5, "no renewal met the outage"
            await asyncio.sleep(0.01)
        proxy.restore()
        await asyncio.sleep(1.5)  # longer than the lease: only renewals after the outage keep it
        during = await post(gateway, "slow", key)
        assert_problem(during, 409, "execution-in-flight")
        n8n.release_slow()
        assert (await first).status_code == 200
    assert len(n8n.calls_for(key)) == 1
