"""Delivery workers in real processes: two processes share a queue; a killed one is replaced."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter

import pytest

from tests.conftest import ClientFactory, new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env, gateways

pytestmark = pytest.mark.slow  # real gateway processes

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def worker_env(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> dict[str, str]:
    return cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_ACCESS_LOG="false",
        GATE_DELIVERY_WORKERS="4",
        GATE_LEASE_SECONDS="1",
        GATE_LEASE_RENEW_SECONDS="0.3",
        GATE_DELIVERY_POLL_SECONDS="0.1",
    )


async def until_delivered(n8n: FakeN8n, keys: list[str], *, within: float = 60) -> None:
    wanted = set(keys)
    deadline = time.monotonic() + within
    while len({call.key for call in n8n.calls if call.key in wanted}) < len(wanted):
        assert time.monotonic() < deadline, "not every execution was delivered"
        await asyncio.sleep(0.05)


async def test_two_processes_deliver_two_thousand_queued_executions_once_each(
    make_client: ClientFactory, database_url: str, worker_env: dict[str, str], n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    run = uuid.uuid4().hex[:8]
    keys = [f"queued-{run}-{i}" for i in range(2000)]
    async with make_client(api_key=api_key, delivery_workers=0) as client:
        gate = asyncio.Semaphore(32)

        async def accept(key: str) -> int:
            async with gate:
                headers = {**ASYNC, "Idempotency-Key": key}
                return (await client.post("/webhook/echo", json={}, headers=headers)).status_code

        assert set(await asyncio.gather(*(accept(key) for key in keys))) == {202}
        with gateways(2, worker_env):
            await until_delivered(n8n, keys)
    calls = Counter(call.key for call in n8n.calls if call.key in set(keys))
    assert set(calls.values()) == {1}


async def test_a_delivery_cut_by_kill_9_is_finished_by_another_process(
    make_client: ClientFactory, database_url: str, worker_env: dict[str, str], n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    key = f"killed-{uuid.uuid4()}"
    async with make_client(api_key=api_key, delivery_workers=0) as client:
        headers = {**ASYNC, "Idempotency-Key": key}
        assert (await client.post("/webhook/slow", json={}, headers=headers)).status_code == 202
        victim = Gateway(worker_env)
        await until_delivered(n8n, [key], within=10)
        victim.stop(signal.SIGKILL)
        n8n.release_slow()
        with gateways(1, worker_env):
            deadline = time.monotonic() + 15
            while (status := (await client.get(f"/v1/executions/{key}")).json())["status"] != (
                "completed"
            ):
                assert time.monotonic() < deadline, f"still {status['status']}"
                await asyncio.sleep(0.1)
    assert [a["outcome"] for a in status["attempt_history"]] == ["abandoned", "completed"]


@pytest.mark.parametrize("policy", ["retry", "refuse"])
async def test_a_crash_at_a_webhook_s_cap_does_not_stop_that_webhook(
    make_client: ClientFactory,
    database_url: str,
    worker_env: dict[str, str],
    n8n: FakeN8n,
    policy: str,
) -> None:
    """kill -9 with the cap's four deliveries in flight: their dead leases must not hold the
    cap, the backlog behind them is delivered, and the four end as the policy says."""
    api_key = await new_api_key(database_url)
    run = uuid.uuid4().hex[:8]
    in_flight = [f"cap-{run}-{i}" for i in range(4)]
    backlog = [f"cap-{run}-later-{i}" for i in range(6)]
    env = {**worker_env, "GATE_UNKNOWN_OUTCOME": policy, "GATE_DELIVERY_MAX_PER_WORKFLOW": "4"}
    async with make_client(api_key=api_key, delivery_workers=0) as client:
        for key in in_flight + backlog:
            headers = {**ASYNC, "Idempotency-Key": key}
            assert (await client.post("/webhook/slow", json={}, headers=headers)).status_code == 202
        victim = Gateway(env)
        await until_delivered(n8n, in_flight, within=10)
        victim.stop(signal.SIGKILL)
        n8n.release_slow()
        with gateways(1, env):
            deadline = time.monotonic() + 1 + 20  # the lease, then 20 s
            await until_delivered(n8n, backlog, within=deadline - time.monotonic())
            ends = {}
            for key in in_flight:
                while (status := (await client.get(f"/v1/executions/{key}")).json())[
                    "status"
                ] not in ("completed", "failed"):
                    assert time.monotonic() < deadline, f"{key} stayed {status['status']}"
                    await asyncio.sleep(0.1)
                ends[key] = status
    calls = Counter(call.key for call in n8n.calls if call.key in set(in_flight + backlog))
    for key in in_flight:
        outcomes = [a["outcome"] for a in ends[key]["attempt_history"]]
        if policy == "retry":
            assert (ends[key]["status"], outcomes) == ("completed", ["abandoned", "completed"])
            assert calls[key] == 2
        else:
            assert (ends[key]["status"], outcomes) == ("failed", ["abandoned"])
            assert ends[key]["outcome_unknown"] is True
            assert calls[key] == 1
    assert all(calls[key] == 1 for key in backlog)
