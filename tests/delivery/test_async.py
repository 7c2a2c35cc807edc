"""Prefer: respond-async: accepted durably, answered 202, delivered by the gateway's workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
import pytest

from app.delivery.backoff import Backoff, parse_retry_after
from tests.conftest import ClientFactory
from tests.support.executions_api import until_status
from tests.support.fake_n8n import FakeN8n, ProxyInFront
from tests.support.problems import assert_problem
from tests.support.servers import bound_socket, serve_in_thread

ASYNC = {"Prefer": "respond-async"}


async def test_an_async_trigger_is_accepted_then_delivered_once(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"async-{uuid.uuid4()}"
    headers = {**ASYNC, "Idempotency-Key": key}
    async with make_client() as client:
        accepted = await client.post("/webhook/echo?x=1", json={"a": 1}, headers=headers)
        assert accepted.status_code == 202
        assert accepted.headers["location"] == f"/v1/executions/{key}"
        assert accepted.headers["preference-applied"] == "respond-async"
        assert "idempotent-replayed" not in accepted.headers
        status = await until_status(client, key, "completed")
        again = await client.post("/webhook/echo?x=1", json={"a": 1}, headers=headers)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert status["delivery"] == "async"
    assert status["response"]["status_code"] == 200  # type: ignore[index]
    [call] = n8n.calls_for(key)
    assert (call.query, call.body) == ("x=1", b'{"a":1}')
    assert call.headers["x-forwarded-for"] == "127.0.0.1"


async def test_an_async_key_reused_for_another_request_is_422(
    make_client: ClientFactory,
) -> None:
    key = f"async-{uuid.uuid4()}"
    async with make_client(delivery_workers=0) as client:
        await client.post("/webhook/echo", json={"a": 1}, headers={**ASYNC, "Idempotency-Key": key})
        reused = await client.post(
            "/webhook/echo", json={"a": 2}, headers={**ASYNC, "Idempotency-Key": key}
        )
        assert_problem(reused, 422, "idempotency-key-reused")
        status = (await client.get(f"/v1/executions/{key}")).json()
    assert (status["status"], status["attempts"]) == ("pending", 0)
    assert status["next_attempt_at"] is not None


async def test_a_failing_delivery_is_retried_with_backoff_until_it_succeeds(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"async-{uuid.uuid4()}"
    n8n.failures_left[key] = 3
    settings = {"retry_base_seconds": 0.1, "retry_cap_seconds": 0.4, "delivery_poll_seconds": 0.05}
    async with make_client(**settings) as client:
        await client.post("/webhook/flaky", json={}, headers={**ASYNC, "Idempotency-Key": key})
        status = await until_status(client, key, "completed")
    history = status["attempt_history"]
    assert [a["outcome"] for a in history] == ["failed", "failed", "failed", "completed"]  # type: ignore[union-attr]
    starts = [datetime.fromisoformat(a["started_at"]) for a in history]  # type: ignore[union-attr]
    ends = [datetime.fromisoformat(a["ended_at"]) for a in history]  # type: ignore[union-attr]
    for attempt, (ended, next_start) in enumerate(zip(ends, starts[1:], strict=False), start=1):
        ceiling = min(0.4, 0.1 * 2 ** (attempt - 1))
        assert (next_start - ended).total_seconds() <= ceiling + 0.25  # jitter ≤ ceiling, + pickup
    assert len(n8n.calls_for(key)) == 4


async def test_when_attempts_run_out_the_execution_is_a_dead_letter(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"async-{uuid.uuid4()}"
    settings = {
        "retry_base_seconds": 0.05,
        "retry_cap_seconds": 0.1,
        "retry_max_attempts": 3,
        "delivery_poll_seconds": 0.05,
    }
    async with make_client(**settings) as client:
        await client.post("/webhook/fail", json={}, headers={**ASYNC, "Idempotency-Key": key})
        status = await until_status(client, key, "failed")
        listed = (await client.get("/v1/executions", params={"status": "failed"})).json()
    assert status["attempts"] == 3
    assert status["last_error"]["type"] == "n8n-error"  # type: ignore[index]
    assert key in [item["key"] for item in listed["items"]]
    assert len(n8n.calls_for(key)) == 3


async def test_an_answer_over_the_limit_ends_the_delivery_at_once(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    # n8n ran the workflow and would answer the same again: delivering again only repeats it.
    key = f"async-{uuid.uuid4()}"
    limits = {"n8n_max_answer_bytes": 10, "retry_base_seconds": 0.01, "retry_cap_seconds": 0.01}
    async with make_client(delivery_poll_seconds=0.05, **limits) as client:
        await client.post("/webhook/echo", json={}, headers={**ASYNC, "Idempotency-Key": key})
        status = await until_status(client, key, "completed")
    assert status["response"]["status_code"] == 502  # type: ignore[index]
    assert (status["attempts"], status["next_attempt_at"]) == (1, None)
    assert status["last_error"]["type"] == "n8n-answer-too-large"  # type: ignore[index]
    assert len(n8n.calls_for(key)) == 1


@pytest.mark.parametrize(("policy", "deliveries"), [("retry", 2), ("refuse", 1)])
async def test_a_delivery_that_may_have_run_is_repeated_only_under_retry(
    make_client: ClientFactory, policy: str, deliveries: int
) -> None:
    # A proxy's 504: n8n had the trigger and may still be running it. At-most-once (refuse)
    # ends the execution there, for the operator to check in n8n.
    proxy = ProxyInFront(504)
    key = f"async-{uuid.uuid4()}"
    settings = {
        "unknown_outcome": policy,
        "retry_max_attempts": 2,
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.02,
        "delivery_poll_seconds": 0.05,
    }
    with serve_in_thread(proxy.app) as url:
        async with make_client(n8n_base_url=url, **settings) as client:
            await client.post("/webhook/long", json={}, headers={**ASYNC, "Idempotency-Key": key})
            status = await until_status(client, key, "failed")
    assert (status["attempts"], status["next_attempt_at"]) == (deliveries, None)
    assert status["outcome_unknown"] is True
    assert proxy.keys.count(key) == deliveries


async def test_an_operator_can_put_back_a_delivery_that_may_have_run(
    make_client: ClientFactory,
) -> None:
    # Under refuse it stops as a dead letter; once n8n shows it did not run, it goes back.
    proxy = ProxyInFront(524)
    key = f"async-{uuid.uuid4()}"
    settings = {"unknown_outcome": "refuse", "delivery_poll_seconds": 0.05}
    with serve_in_thread(proxy.app) as url:
        async with make_client(n8n_base_url=url, **settings) as client:
            await client.post("/webhook/long", json={}, headers={**ASYNC, "Idempotency-Key": key})
            await until_status(client, key, "failed")
            requeued = await client.post(f"/v1/executions/{key}/retry")
            status = await until_status(client, key, "failed", attempts=2)
    assert requeued.status_code == 202, requeued.text
    assert status["outcome_unknown"] is True
    assert proxy.keys.count(key) == 2


def test_backoff_is_full_jitter_under_an_exponential_cap_and_honours_retry_after() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=10, max_attempts=5)
    assert [backoff.delay(n, retry_after=None, draw=lambda: 1.0) for n in range(1, 6)] == [
        1,
        2,
        4,
        8,
        10,
    ]
    assert backoff.delay(3, retry_after=None, draw=lambda: 0.0) == 0
    assert backoff.delay(1, retry_after=7, draw=lambda: 0.5) == 7
    assert backoff.exhausted(5)
    assert not backoff.exhausted(4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


async def test_n8n_s_retry_after_is_honoured(make_client: ClientFactory, n8n: FakeN8n) -> None:
    key = f"async-{uuid.uuid4()}"
    n8n.failures_left[key] = 1
    settings = {
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.02,
        "delivery_poll_seconds": 0.05,
    }
    async with make_client(**settings) as client:
        await client.post("/webhook/busy", json={}, headers={**ASYNC, "Idempotency-Key": key})
        status = await until_status(client, key, "completed")
    first, second = status["attempt_history"]  # type: ignore[misc]
    assert first["error"]["type"] == "n8n-rate-limited"
    waited = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(
        first["ended_at"]
    )
    # Retry-After: 1 against a backoff of at most 0.02 s. The two times come from the
    # database, the delay from the gateway's clock: 0.1 s of slack for the two to differ.
    assert waited.total_seconds() >= 0.9


async def test_a_thousand_triggers_accepted_while_n8n_is_down_are_each_delivered_once(
    make_client: ClientFactory,
) -> None:
    fake = FakeN8n()
    run = uuid.uuid4().hex[:8]
    keys = [f"down-{run}-{i}" for i in range(1000)]
    settings = {
        "retry_base_seconds": 0.05,
        "retry_cap_seconds": 0.2,
        "retry_max_attempts": 10_000,
        "delivery_poll_seconds": 0.05,
    }
    with bound_socket() as sock:
        n8n_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with make_client(n8n_base_url=n8n_url, **settings) as client:
            gate = asyncio.Semaphore(32)

            async def accept(key: str) -> int:
                async with gate:
                    response = await client.post(
                        "/webhook/echo", json={"k": key}, headers={**ASYNC, "Idempotency-Key": key}
                    )
                    return response.status_code

            assert set(await asyncio.gather(*(accept(key) for key in keys))) == {202}
            with serve_in_thread(fake.app, sock=sock):
                deadline = time.monotonic() + 60
                while True:
                    page = await client.get(
                        "/v1/executions", params={"status": "completed", "limit": 200}
                    )
                    done = len({c.key for c in fake.calls if c.key in set(keys)})
                    if done == len(keys):
                        break
                    assert time.monotonic() < deadline, f"only {done} delivered"
                    await asyncio.sleep(0.1)
                assert page.status_code == 200
    # Other tests' queued executions may reach this fake too: count only this test's keys.
    calls = [call.key for call in fake.calls if call.key in set(keys)]
    assert sorted(calls) == sorted(keys)  # every one, once


async def dead_letter(client: httpx.AsyncClient, key: str, path: str = "fail") -> None:
    await client.post(f"/webhook/{path}", json={}, headers={**ASYNC, "Idempotency-Key": key})
    await until_status(client, key, "failed")


RETRY_FAST = {
    "retry_base_seconds": 0.01,
    "retry_cap_seconds": 0.02,
    "retry_max_attempts": 1,
    "delivery_poll_seconds": 0.05,
}


async def test_a_dead_letter_can_be_put_back_in_the_queue(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = f"retry-{uuid.uuid4()}"
    n8n.failures_left[key] = 1
    async with make_client(**RETRY_FAST) as client:
        await dead_letter(client, key, path="flaky")
        retried = await client.post(f"/v1/executions/{key}/retry")
        assert retried.status_code == 202
        assert retried.headers["location"] == f"/v1/executions/{key}"
        status = await until_status(client, key, "completed")
    assert status["attempts"] == 2
    assert len(n8n.calls_for(key)) == 2


async def test_retry_refuses_what_cannot_be_retried(make_client: ClientFactory) -> None:
    sync_key, done_key = f"sync-{uuid.uuid4()}", f"done-{uuid.uuid4()}"
    async with make_client(**RETRY_FAST) as client:
        await client.post("/webhook/fail", json={}, headers={"Idempotency-Key": sync_key})
        await client.post("/webhook/echo", json={}, headers={**ASYNC, "Idempotency-Key": done_key})
        await until_status(client, done_key, "completed")
        sync = await client.post(f"/v1/executions/{sync_key}/retry")
        done = await client.post(f"/v1/executions/{done_key}/retry")
        missing = await client.post("/v1/executions/never-seen/retry")
    assert "same Idempotency-Key" in assert_problem(sync, 409, "execution-not-retryable")["detail"]
    assert_problem(done, 409, "execution-not-retryable")
    assert_problem(missing, 404, "execution-not-found")


async def test_failed_executions_are_retried_in_bounded_batches_by_filter(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"bulk-{run}-{i}" for i in range(5)]
    async with make_client(**RETRY_FAST) as client:
        for key in keys:
            await dead_letter(client, key)
        other = f"bulk-{run}-other"
        await dead_letter(client, other, path="flaky-other")
        first = await client.post("/v1/executions/retry", json={"workflow": "fail", "limit": 3})
        second = await client.post("/v1/executions/retry", json={"workflow": "fail", "limit": 3})
        bad = await client.post("/v1/executions/retry", json={"limit": 5000})
    assert first.json()["queued"] == 3
    assert second.json()["queued"] == 2
    assert set(first.json()["keys"]) | set(second.json()["keys"]) == set(keys)
    assert_problem(bad, 400, "invalid-request")


@asynccontextmanager
async def capped_gateway(
    make_client: ClientFactory, *, workers: int, cap: int
) -> AsyncIterator[tuple[FakeN8n, httpx.AsyncClient]]:
    """A gateway delivering to an n8n of its own (so its counters start at zero), with at most
    `cap` deliveries in flight per workflow."""
    fake = FakeN8n()
    with serve_in_thread(fake.app) as n8n_url:
        async with make_client(
            n8n_base_url=n8n_url,
            delivery_workers=workers,
            delivery_max_per_workflow=cap,
            delivery_poll_seconds=0.05,
        ) as client:
            yield fake, client


async def test_deliveries_to_one_workflow_are_bounded(make_client: ClientFactory) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"bounded-{run}-{i}" for i in range(12)]
    async with capped_gateway(make_client, workers=8, cap=2) as (fake, client):
        for key in keys:
            headers = {**ASYNC, "Idempotency-Key": key}
            await client.post("/webhook/slow?delay=0.15", json={}, headers=headers)
        for key in keys:
            await until_status(client, key, "completed")
    assert fake.slow_most_in_flight == 2
    assert sorted(call.key for call in fake.calls if call.key in set(keys)) == sorted(keys)


async def test_a_workflow_at_its_cap_does_not_hold_up_the_others(
    make_client: ClientFactory,
) -> None:
    run = uuid.uuid4().hex[:8]
    capped = [f"capped-{run}-{i}" for i in range(4)]
    other = f"other-{run}"
    async with capped_gateway(make_client, workers=4, cap=1) as (fake, client):
        # Queued first, so the capped workflow's backlog is at the head of the queue.
        for key in capped:
            await client.post("/webhook/slow", json={}, headers={**ASYNC, "Idempotency-Key": key})
        await client.post("/webhook/echo", json={}, headers={**ASYNC, "Idempotency-Key": other})
        await until_status(client, other, "completed")
        assert fake.slow_in_flight == 1  # delivered while the capped one still holds its slot
        fake.release_slow()
        for key in capped:
            await until_status(client, key, "completed")
    assert fake.slow_most_in_flight == 1
