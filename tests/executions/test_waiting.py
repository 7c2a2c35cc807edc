"""RFC 7240 `Prefer: wait`: duplicates that wait for the first request instead of a 409."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from app.executions.trigger import parse_prefer_wait
from tests.conftest import ClientFactory, GatewayClient
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem


async def until_waiting(gateway: GatewayClient, count: int = 1, *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while gateway.services.executions.notifications.waiting < count:
        assert time.monotonic() < deadline, "no request started waiting"
        await asyncio.sleep(0.005)


async def until_forwarded(n8n: FakeN8n, key: str, *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not n8n.calls_for(key):
        assert time.monotonic() < deadline, "n8n never got the request"
        await asyncio.sleep(0.005)


async def start_slow_first(
    client: httpx.AsyncClient, n8n: FakeN8n, key: str
) -> asyncio.Task[httpx.Response]:
    """Send the key's first request to the slow workflow; return once n8n is working on it."""
    first = asyncio.create_task(
        client.post("/webhook/slow", json={}, headers={"Idempotency-Key": key})
    )
    await until_forwarded(n8n, key)
    return first


async def test_a_waiting_duplicate_gets_the_replay_when_the_first_finishes(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"wait-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    async with make_client() as gateway:
        first = await start_slow_first(gateway, n8n, key)
        waiting = asyncio.create_task(
            gateway.post("/webhook/slow", json={}, headers={**headers, "Prefer": "wait=10"})
        )
        await until_waiting(gateway)
        n8n.release_slow()
        original, duplicate = await first, await waiting
    assert duplicate.status_code == 200
    assert duplicate.headers["idempotent-replayed"] == "true"
    assert duplicate.headers["preference-applied"] == "wait=10"
    assert duplicate.content == original.content
    assert len(n8n.calls_for(key)) == 1


async def test_a_waiter_in_another_replica_is_woken_through_the_database(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"wait-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    async with make_client() as replica_a, make_client() as replica_b:
        first = await start_slow_first(replica_a, n8n, key)
        waiting = asyncio.create_task(
            replica_b.post("/webhook/slow", json={}, headers={**headers, "Prefer": "wait=10"})
        )
        await until_waiting(replica_b)
        started = time.monotonic()
        n8n.release_slow()
        await first
        duplicate = await waiting
        woken_after = time.monotonic() - started
    assert duplicate.headers["idempotent-replayed"] == "true"
    assert woken_after < 2, "the waiter was not woken by the notification"


async def test_when_the_wait_runs_out_the_answer_is_409(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"wait-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    async with make_client() as gateway:
        first = await start_slow_first(gateway, n8n, key)
        started = time.monotonic()
        response = await gateway.post(
            "/webhook/slow", json={}, headers={**headers, "Prefer": "wait=1"}
        )
        waited = time.monotonic() - started
        n8n.release_slow()
        await first
    assert_problem(response, 409, "execution-in-flight")
    assert response.headers["preference-applied"] == "wait=1"
    assert 0.9 < waited < 3


async def test_the_wait_is_capped_by_the_setting(make_client: ClientFactory, n8n: FakeN8n) -> None:
    key = f"wait-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    async with make_client(max_wait_seconds=0) as gateway:
        first = await start_slow_first(gateway, n8n, key)
        response = await gateway.post(
            "/webhook/slow", json={}, headers={**headers, "Prefer": "wait=30"}
        )
        n8n.release_slow()
        await first
    assert_problem(response, 409, "execution-in-flight")
    assert response.headers["preference-applied"] == "wait=0"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (["wait=10"], 10),
        (["respond-async, wait=5"], 5),
        (["handling=lenient", "Wait = 3"], 3),
        (['wait="7"'], 7),
        (["wait=soon"], None),
        (["wait=-1"], None),
        (["return=minimal"], None),
    ],
)
def test_prefer_header_parsing(headers: list[str], expected: int | None) -> None:
    assert parse_prefer_wait(headers) == expected
