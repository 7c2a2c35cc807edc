"""Real gateway processes: a crash mid-forward, a graceful stop, and replicas on one database."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import aiohttp
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import ClientFactory, new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env, gateways

pytestmark = pytest.mark.slow  # real gateway processes


@dataclass(frozen=True)
class Reply:
    status: int
    replayed: bool


@pytest.fixture
def gateway_env(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> dict[str, str]:
    return cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_ACCESS_LOG="false",
        GATE_LEASE_SECONDS="1",
        GATE_LEASE_RENEW_SECONDS="0.3",
        # Four replicas of 20 connections each, with the rest of the suite, came within reach
        # of the CI server's max_connections (100); a replica then rightly answers 503.
        GATE_DB_POOL_MAX_SIZE="10",
    )


def wait_until(condition: object, *, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def kill_9_mid_forward(env: dict[str, str], n8n: FakeN8n, headers: dict[str, str]) -> None:
    """A gateway process killed while n8n works on its forward to the slow workflow."""
    victim = Gateway(env)
    async with httpx.AsyncClient(base_url=victim.base_url, headers=headers) as to_victim:
        in_flight = asyncio.create_task(to_victim.post("/webhook/slow", json={"n": 1}))
        key = headers["Idempotency-Key"]
        await asyncio.to_thread(wait_until, lambda: n8n.calls_for(key), what="the forward")
        victim.stop(signal.SIGKILL)
        with pytest.raises(httpx.TransportError):
            await in_flight


async def test_a_crash_mid_forward_is_taken_over_after_the_lease(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    key = f"crash-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
    await kill_9_mid_forward(gateway_env, n8n, headers)

    with gateways(1, gateway_env) as [survivor]:
        async with httpx.AsyncClient(base_url=survivor.base_url, headers=headers) as client:
            status = (await client.get(f"/v1/executions/{key}")).json()
            assert (status["status"], status["attempts"]) == ("running", 1)
            n8n.release_slow()
            deadline = time.monotonic() + 10
            while (retry := await client.post("/webhook/slow", json={"n": 1})).status_code == 409:
                assert time.monotonic() < deadline, "the lease never ran out"
                await asyncio.sleep(0.1)
            assert retry.status_code == 200
            status = (await client.get(f"/v1/executions/{key}")).json()
    assert (status["status"], status["attempts"]) == ("completed", 2)
    history = [(a["attempt"], a["outcome"]) for a in status["attempt_history"]]
    assert history == [(1, "abandoned"), (2, "completed")]
    assert status["attempt_history"][0]["error"]["type"] == "abandoned"


async def test_sigterm_lets_the_forward_in_flight_finish_and_record(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n, make_client: ClientFactory
) -> None:
    api_key = await new_api_key(database_url)
    key = f"stop-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
    gateway = Gateway(gateway_env)
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers) as client:
        in_flight = asyncio.create_task(client.post("/webhook/slow?delay=1", json={}))
        await asyncio.to_thread(wait_until, lambda: n8n.calls_for(key), what="the forward")
        gateway.process.send_signal(signal.SIGTERM)
        response = await in_flight
    assert response.status_code == 200
    # Waits for the exit the one SIGTERM started: a second one could land after Python has put
    # the default handler back for its own finalisation, and kill the process (-15).
    assert await asyncio.to_thread(gateway.process.wait, 30) == 0, gateway.output()
    async with make_client(api_key=api_key) as other:
        status = (await other.get(f"/v1/executions/{key}")).json()
    assert status["status"] == "completed"


async def test_replicas_on_one_database_call_n8n_once_per_key(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    auth = {"Authorization": f"Bearer {api_key}"}
    run = uuid.uuid4().hex[:8]
    # aiohttp drives this load: httpx's pool is slow with hundreds of concurrent connections.
    connector = aiohttp.TCPConnector(limit=0)
    # A request left unanswered fails the test after a minute, not aiohttp's default five.
    timeout = aiohttp.ClientTimeout(total=60)
    with gateways(4, gateway_env) as replicas:
        async with aiohttp.ClientSession(
            connector=connector, headers=auth, timeout=timeout
        ) as client:

            async def send(i: int, key: str, *, wait: bool = False) -> Reply:
                url = f"{replicas[i % 4].base_url}/webhook/echo"
                headers = {"Idempotency-Key": key, **({"Prefer": "wait=30"} if wait else {})}
                async with client.post(url, json={"key": key}, headers=headers) as response:
                    await response.read()
                    return Reply(response.status, "idempotent-replayed" in response.headers)

            one_key = f"hot-{run}"
            responses = await asyncio.gather(*(send(i, one_key) for i in range(500)))
            assert len(n8n.calls_for(one_key)) == 1
            kinds = Counter("replay" if r.replayed else r.status for r in responses)
            assert kinds[200] == 1
            assert set(kinds) <= {200, "replay", 409}

            waiting_key = f"hot-wait-{run}"
            jobs = [send(i, waiting_key, wait=True) for i in range(500)]
            responses = await asyncio.gather(*jobs)
            assert len(n8n.calls_for(waiting_key)) == 1
            kinds = Counter("replay" if r.replayed else r.status for r in responses)
            assert kinds == {200: 1, "replay": 499}

            keys = [f"many-{run}-{k}" for k in range(200)]
            jobs = [send(i, key) for i, key in enumerate(key for key in keys for _ in range(5))]
            responses = await asyncio.gather(*jobs)
    assert {r.status for r in responses} <= {200, 409}
    calls = Counter(call.key for call in n8n.calls if call.key in set(keys))
    assert len(calls) == 200
    assert set(calls.values()) == {1}


async def test_n8n_sees_the_forwarded_chain_once_and_how_the_gateway_was_reached(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    """Behind uvicorn: the caller's X-Forwarded-For plus the real peer, once; Proto and Host
    from what the gateway saw, since this peer is not a trusted proxy."""
    api_key = await new_api_key(database_url)
    key = f"xff-{uuid.uuid4()}"
    gateway = Gateway(gateway_env)
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            answer = await client.post(
                "/webhook/echo",
                json={},
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Idempotency-Key": key,
                    "X-Forwarded-For": "203.0.113.9",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "forged.example",
                },
            )
    finally:
        gateway.stop()
    assert answer.status_code == 200
    seen = n8n.calls_for(key)[0].headers
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"


async def test_a_trusted_proxy_s_proto_and_host_reach_n8n(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    key = f"proxy-{uuid.uuid4()}"
    gateway = Gateway({**gateway_env, "GATE_TRUSTED_PROXIES": "127.0.0.0/8"})
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            await client.post(
                "/webhook/echo",
                json={},
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Idempotency-Key": key,
                    "X-Forwarded-For": "203.0.113.9",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "shop.example",
                },
            )
    finally:
        gateway.stop()
    seen = n8n.calls_for(key)[0].headers
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert (seen["x-forwarded-proto"], seen["x-forwarded-host"]) == ("https", "shop.example")


async def test_a_failed_attempt_is_logged_by_a_serving_process(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    key = f"logged-{uuid.uuid4()}"
    gateway = Gateway(gateway_env)
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            answer = await client.post(
                "/webhook/fail",
                json={},
                headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
            )
    finally:
        gateway.stop()
    assert answer.status_code == 500
    line = next(line for line in gateway.output().splitlines() if key in line)
    assert " WARNING app.executions.runner: attempt failed: " in line
    assert "workflow=webhook/fail" in line
    assert "error=n8n-error" in line


async def test_a_sync_execution_whose_process_died_ends_failed_and_expires(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n, make_client: ClientFactory
) -> None:
    api_key = await new_api_key(database_url)
    key = f"abandoned-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
    await kill_9_mid_forward(gateway_env, n8n, headers)
    unknown_before = REGISTRY.get_sample_value("n8n_gate_outcome_unknown_total") or 0
    async with make_client(api_key=api_key, reaper_interval_seconds=0) as client:
        deadline = time.monotonic() + 10
        while not await client.services.reaper.end_abandoned_once():  # once the lease ran out
            assert time.monotonic() < deadline, "never ended"
            await asyncio.sleep(0.1)
        status = (await client.get(f"/v1/executions/{key}")).json()
    # Counted where it ended (other tests' abandoned executions may end in the same pass).
    assert (REGISTRY.get_sample_value("n8n_gate_outcome_unknown_total") or 0) > unknown_before
    assert (status["status"], status["outcome_unknown"]) == ("failed", True)
    assert status["last_error"]["type"] == "abandoned"
    assert status["expires_at"] is not None
    assert [a["outcome"] for a in status["attempt_history"]] == ["abandoned"]


async def test_a_body_lost_to_an_upgrade_request_is_refused_not_forwarded(
    gateway_env: dict[str, str], database_url: str, n8n: FakeN8n
) -> None:
    """curl --http2 on http:// sends Upgrade: h2c, and uvicorn then gives the app no body: an
    empty trigger must never be forwarded or recorded under the key."""
    api_key = await new_api_key(database_url)
    key = f"h2c-{uuid.uuid4()}"
    gateway = Gateway(gateway_env)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /webhook/echo HTTP/1.1\r\nHost: gate\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            + f"Authorization: Bearer {api_key}\r\nIdempotency-Key: {key}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    finally:
        gateway.stop()
    assert head.startswith(b"HTTP/1.1 400 ")
    assert n8n.calls_for(key) == []
