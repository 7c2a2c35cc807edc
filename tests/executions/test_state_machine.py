"""In flight, failure and retry: which answers are final, which let the next request run again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from app.executions import repo
from tests.conftest import ClientFactory
from tests.support.executions_api import new_key, status_of, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem


async def wait_for_calls(n8n: FakeN8n, key: str, count: int, *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while len(n8n.calls_for(key)) < count:
        assert time.monotonic() < deadline, f"n8n saw {len(n8n.calls_for(key))} calls for {key}"
        await asyncio.sleep(0.005)


async def test_a_retry_while_the_first_runs_gets_409_then_the_replay(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = asyncio.create_task(client.post("/webhook/slow", json={"n": 1}, headers=headers))
    await wait_for_calls(n8n, key, 1)

    in_flight = await client.post("/webhook/slow", json={"n": 1}, headers=headers)
    assert_problem(in_flight, 409, "execution-in-flight")
    assert int(in_flight.headers["retry-after"]) >= 1
    assert (await status_of(client, key))["status"] == "running"

    n8n.release_slow()
    assert (await first).status_code == 200
    replay = await client.post("/webhook/slow", json={"n": 1}, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(key)) == 1


async def test_fifty_concurrent_requests_with_one_key_call_n8n_once(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()

    async def send() -> httpx.Response:
        return await client.post(
            "/webhook/echo", json={"charge": 100}, headers={"Idempotency-Key": key}
        )

    responses = await asyncio.gather(*(send() for _ in range(50)))
    assert len(n8n.calls_for(key)) == 1
    outcomes = Counter(
        "fresh"
        if r.status_code == 200 and "idempotent-replayed" not in r.headers
        else "replay"
        if r.status_code == 200
        else r.status_code
        for r in responses
    )
    assert outcomes["fresh"] == 1
    assert set(outcomes) <= {"fresh", "replay", 409}
    bodies = {r.content for r in responses if r.status_code == 200}
    assert len(bodies) == 1


async def test_a_workflow_error_is_returned_and_the_next_request_runs_again(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    n8n.failures_left[key] = 1
    headers = {"Idempotency-Key": key}
    failed = await client.post("/webhook/flaky", json={}, headers=headers)
    assert failed.status_code == 500
    assert failed.json() == {"message": "Error in workflow"}
    status = await status_of(client, key)
    assert status["status"] == "failed"
    assert status["last_error"] == {
        "type": "n8n-error",
        "detail": "n8n answered 500: Error in workflow",
    }

    retried = await client.post("/webhook/flaky", json={}, headers=headers)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    status = await status_of(client, key)
    assert (status["status"], status["attempts"]) == ("completed", 2)
    assert status["last_error"] is None or status["last_error"]["type"] == "n8n-error"  # type: ignore[index]
    assert len(n8n.calls_for(key)) == 2

    replay = await client.post("/webhook/flaky", json={}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(key)) == 2


async def test_an_inactive_workflow_404_is_retried(client: httpx.AsyncClient, n8n: FakeN8n) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = await client.post("/webhook/not-yet-active", json={}, headers=headers)
    assert first.status_code == 404
    assert "is not registered" in first.json()["message"]
    status = await status_of(client, key)
    assert status["status"] == "failed"
    assert status["last_error"]["type"] == "n8n-not-registered"  # type: ignore[index]
    await client.post("/webhook/not-yet-active", json={}, headers=headers)
    assert len(n8n.calls_for(key)) == 2
    assert (await status_of(client, key))["attempts"] == 2


async def test_a_method_n8n_does_not_register_is_retried_too(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    response = await client.post("/webhook/lookup", json={}, headers={"Idempotency-Key": key})
    assert response.status_code == 404
    assert "Did you mean to make a GET request?" in response.json()["message"]
    assert (await status_of(client, key))["status"] == "failed"


async def test_a_workflows_own_404_is_final_and_replayed(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = await client.post("/webhook/missing-order", json={}, headers=headers)
    again = await client.post("/webhook/missing-order", json={}, headers=headers)
    assert first.status_code == again.status_code == 404
    assert again.json() == {"error": "order not found"}
    assert again.headers["idempotent-replayed"] == "true"
    assert (await status_of(client, key))["status"] == "completed"
    assert len(n8n.calls_for(key)) == 1


async def test_unreachable_n8n_is_502_and_the_key_runs_again_once_n8n_is_back(
    make_client: ClientFactory, unreachable_n8n_url: str, client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(n8n_base_url=unreachable_n8n_url) as down:
        response = await down.post("/webhook/echo", json={"a": 1}, headers=headers)
    problem = assert_problem(response, 502, "n8n-unreachable")
    assert "N8N_BASE_URL" in problem["detail"]
    assert response.headers["location"] == f"/v1/executions/{key}"
    status = await status_of(client, key)
    assert status["status"] == "failed"
    assert status["last_error"]["type"] == "n8n-connection-refused"  # type: ignore[index]
    assert status["outcome_unknown"] is False

    recovered = await client.post("/webhook/echo", json={"a": 1}, headers=headers)
    assert recovered.status_code == 200
    assert (await status_of(client, key))["attempts"] == 2
    assert len(n8n.calls_for(key)) == 1


async def test_a_slow_workflow_is_504_and_recorded_as_a_timeout(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    async with make_client(n8n_timeout_seconds=0.2) as impatient:
        response = await impatient.post("/webhook/slow", json={}, headers={"Idempotency-Key": key})
        assert_problem(response, 504, "n8n-timeout")
        status = await status_of(impatient, key)
    assert status["status"] == "failed"
    assert status["last_error"]["type"] == "n8n-read-timeout"  # type: ignore[index]
    assert status["outcome_unknown"] is True


async def test_a_failed_answer_stays_visible_in_the_status(client: httpx.AsyncClient) -> None:
    key = new_key()
    await client.post("/webhook/fail", json={}, headers={"Idempotency-Key": key})
    status = await status_of(client, key)
    assert status["response"]["status_code"] == 500  # type: ignore[index]
    assert status["response"]["body"] == '{"message":"Error in workflow"}'  # type: ignore[index]


async def test_a_claim_won_for_a_caller_that_went_away_still_runs(
    make_client: ClientFactory, n8n: FakeN8n, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn lets a request run on when its client leaves, but an in-process caller (or
    # another server) cancels it, here in the middle of the claim. A claim it won must not
    # hold the key until its lease runs out: it runs, as it would have a moment later.
    key = new_key()
    claiming, go_on = asyncio.Event(), asyncio.Event()
    claim_many = repo.claim_many

    async def paused(*args: Any, **kwargs: Any) -> Any:
        claiming.set()
        await go_on.wait()
        return await claim_many(*args, **kwargs)

    monkeypatch.setattr(repo, "claim_many", paused)
    headers = {"Idempotency-Key": key}
    async with make_client() as client:
        caller = asyncio.create_task(client.post("/webhook/echo", json={}, headers=headers))
        await claiming.wait()
        caller.cancel()
        go_on.set()
        await wait_for_calls(n8n, key, 1)
        status = await until_status(client, key, "completed")
        replay = await client.post("/webhook/echo", json={}, headers=headers)
    assert caller.cancelled()
    assert status["attempts"] == 1
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(key)) == 1
