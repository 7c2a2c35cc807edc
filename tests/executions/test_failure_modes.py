"""How each way n8n can fail is recorded, and what a retry with the same key then does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support.executions_api import new_key, status_of
from tests.support.fake_n8n import BINARY_BODY, FakeN8n, ProxyInFront
from tests.support.problems import assert_problem
from tests.support.servers import blackhole_port, serve_in_thread


@pytest.fixture
async def hangs_up_after_request() -> AsyncIterator[str]:
    """A server that reads the whole request, then closes the connection without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_attempt_history_shows_every_attempt(client: httpx.AsyncClient, n8n: FakeN8n) -> None:
    key = new_key()
    n8n.failures_left[key] = 1
    for _ in range(2):
        await client.post("/webhook/flaky", json={}, headers={"Idempotency-Key": key})
    history = (await status_of(client, key))["attempt_history"]
    assert [(a["attempt"], a["outcome"], a["n8n_status"]) for a in history] == [  # type: ignore[union-attr, index]
        (1, "failed", 500),
        (2, "completed", 200),
    ]
    first, second = history  # type: ignore[misc]
    assert first["error"] == {"type": "n8n-error", "detail": "n8n answered 500: Error in workflow"}
    assert second["error"] is None
    assert first["ended_at"] <= second["started_at"]
    assert all(a["duration_ms"] >= 0 for a in history)  # type: ignore[union-attr]


async def test_dns_failure_is_502_and_recorded(make_client: ClientFactory) -> None:
    key = new_key()
    async with make_client(n8n_base_url="http://n8n-gate-test.invalid:5678") as client:
        response = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
        assert_problem(response, 502, "n8n-unreachable")
        status = await status_of(client, key)
    assert status["last_error"]["type"] == "n8n-dns-failure"  # type: ignore[index]
    assert status["outcome_unknown"] is False


async def test_connect_timeout_is_504_and_nothing_was_sent(make_client: ClientFactory) -> None:
    key = new_key()
    with blackhole_port() as port:
        async with make_client(
            n8n_base_url=f"http://127.0.0.1:{port}", n8n_connect_timeout_seconds=0.3
        ) as client:
            response = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
            assert_problem(response, 504, "n8n-timeout")
            status = await status_of(client, key)
    assert status["last_error"]["type"] == "n8n-connect-timeout"  # type: ignore[index]
    assert status["outcome_unknown"] is False


async def test_connection_lost_after_sending_is_an_unknown_outcome(
    make_client: ClientFactory, hangs_up_after_request: str
) -> None:
    key = new_key()
    async with make_client(n8n_base_url=hangs_up_after_request) as client:
        response = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
        assert_problem(response, 502, "n8n-unreachable")
        status = await status_of(client, key)
    assert status["last_error"]["type"] == "n8n-connection-lost"  # type: ignore[index]
    assert status["outcome_unknown"] is True


async def test_unknown_outcome_is_run_again_under_the_retry_policy(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(n8n_timeout_seconds=0.2) as impatient:
        assert (await impatient.post("/webhook/slow", json={}, headers=headers)).status_code == 504
    n8n.release_slow()
    async with make_client(unknown_outcome="retry") as client:
        again = await client.post("/webhook/slow", json={}, headers=headers)
        assert again.status_code == 200
        assert (await status_of(client, key))["outcome_unknown"] is False
    assert len(n8n.calls_for(key)) == 2


async def test_unknown_outcome_is_refused_under_the_refuse_policy(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(n8n_timeout_seconds=0.2, unknown_outcome="refuse") as client:
        assert (await client.post("/webhook/slow", json={}, headers=headers)).status_code == 504
        n8n.release_slow()
        refused = await client.post("/webhook/slow", json={}, headers=headers)
        problem = assert_problem(refused, 409, "execution-outcome-unknown")
        assert "GATE_UNKNOWN_OUTCOME" in problem["detail"]
        assert "retry-after" not in refused.headers
        assert (await status_of(client, key))["status"] == "failed"
    assert len(n8n.calls_for(key)) == 1


async def test_a_refused_connection_is_retried_even_under_the_refuse_policy(
    make_client: ClientFactory, unreachable_n8n_url: str, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(n8n_base_url=unreachable_n8n_url, unknown_outcome="refuse") as down:
        assert (await down.post("/webhook/echo", json={}, headers=headers)).status_code == 502
    async with make_client(unknown_outcome="refuse") as up:
        assert (await up.post("/webhook/echo", json={}, headers=headers)).status_code == 200
    assert len(n8n.calls_for(key)) == 1


@pytest.mark.parametrize(
    ("status", "unknown"),
    [(504, True), (524, True), (500, False), (502, False), (503, False)],
)
async def test_a_proxy_s_timeout_is_an_unknown_outcome(
    make_client: ClientFactory, status: int, unknown: bool
) -> None:
    # n8n Cloud's proxy cuts an answer after 100 s while the workflow runs on; nginx after 60 s.
    proxy = ProxyInFront(status)
    key = new_key()
    headers = {"Idempotency-Key": key}
    with serve_in_thread(proxy.app) as url:
        async with make_client(n8n_base_url=url, unknown_outcome="refuse") as client:
            first = await client.post("/webhook/long", json={}, headers=headers)
            recorded = await status_of(client, key)
            second = await client.post("/webhook/long", json={}, headers=headers)
    assert first.status_code == status, first.text
    assert first.text.startswith("<html>"), first.text  # the proxy's own answer, relayed
    assert (recorded["status"], recorded["outcome_unknown"]) == ("failed", unknown), recorded
    if unknown:
        assert_problem(second, 409, "execution-outcome-unknown")
        assert "a proxy's timeout" in recorded["last_error"]["detail"]  # type: ignore[index]
    else:  # n8n's own error, or nothing reached it: run again
        assert (second.status_code, second.text) == (first.status_code, first.text)
    assert proxy.keys.count(key) == (1 if unknown else 2)


async def test_a_large_answer_is_stored_truncated_but_the_caller_gets_it_whole(
    make_client: ClientFactory,
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(max_stored_body_bytes=100) as client:
        first = await client.post("/webhook/binary", headers=headers)
        replay = await client.post("/webhook/binary", headers=headers)
        status = await status_of(client, key)
    assert first.content == BINARY_BODY
    assert "n8n-gate-body-truncated" not in first.headers
    assert replay.content == BINARY_BODY[:100]
    assert replay.headers["n8n-gate-body-truncated"] == str(len(BINARY_BODY))
    assert status["response"]["truncated"] is True  # type: ignore[index]
    assert status["response"]["body_bytes"] == len(BINARY_BODY)  # type: ignore[index]


@pytest.mark.parametrize("policy", ["retry", "refuse"])
async def test_an_answer_over_the_limit_is_a_final_502_and_never_runs_again(
    make_client: ClientFactory, n8n: FakeN8n, policy: str
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    limit = len(BINARY_BODY) - 1
    async with make_client(n8n_max_answer_bytes=limit, unknown_outcome=policy) as client:
        first = await client.post("/webhook/binary", headers=headers)
        problem = assert_problem(first, 502, "n8n-answer-too-large")
        replay = await client.post("/webhook/binary", headers=headers)
        status = await status_of(client, key)
    assert f"its answer (200) is larger than {limit} bytes" in problem["detail"]
    assert "GATE_N8N_MAX_ANSWER_BYTES" in problem["detail"]
    assert first.headers["n8n-gate-execution"] == f"/v1/executions/{key}"
    assert (replay.status_code, replay.content) == (502, first.content)
    assert replay.headers["idempotent-replayed"] == "true"
    assert (status["status"], status["attempts"], status["outcome_unknown"]) == (
        "completed",
        1,
        False,
    )
    assert status["last_error"]["type"] == "n8n-answer-too-large"  # type: ignore[index]
    assert len(n8n.calls_for(key)) == 1


async def test_a_renewed_lease_is_not_taken_over_while_n8n_works(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(lease_seconds=0.6, lease_renew_seconds=0.2) as client:
        first = asyncio.create_task(
            client.post("/webhook/slow?delay=1.5", json={}, headers=headers)
        )
        await asyncio.sleep(1.0)  # longer than the lease: only renewal keeps it
        during = await client.post("/webhook/slow?delay=1.5", json={}, headers=headers)
        assert_problem(during, 409, "execution-in-flight")
        assert (await first).status_code == 200
    assert len(n8n.calls_for(key)) == 1
