"""What the gateway does with each kind of answer n8n gives: its start-up pages, its own 404s,
a workflow's own 404 or HTML page, a path under another method. (The fake answers byte for
byte as n8n 2.40.7 does; tests/support/real_n8n checks the same against the real one.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support.executions_api import new_key, status_of, until_status
from tests.support.fake_n8n import FakeN8n, Phase
from tests.support.problems import assert_problem


@pytest.fixture
def starting_n8n(n8n: FakeN8n) -> Iterator[FakeN8n]:
    yield n8n
    n8n.phase = "ready"


async def until_probed(n8n: FakeN8n, more_than: int, *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while n8n.readiness_probes <= more_than:
        assert time.monotonic() < deadline, "the gateway never asked n8n's readiness"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("phase", ["starting", "mounting", "registering"])
async def test_a_trigger_sent_while_n8n_starts_waits_and_gets_the_workflow_s_answer(
    make_client: ClientFactory, starting_n8n: FakeN8n, phase: Phase
) -> None:
    n8n, key = starting_n8n, new_key()
    n8n.phase = phase
    async with make_client(n8n_startup_wait_seconds=20) as client:
        sent = asyncio.create_task(
            client.post("/webhook/echo", json={"n": 1}, headers={"Idempotency-Key": key})
        )
        await until_probed(n8n, n8n.readiness_probes)  # it asks n8n, not the workflow
        assert not sent.done()
        n8n.phase = "ready"
        answer = await sent
        status = await status_of(client, key)
    assert (answer.status_code, answer.json()["received"]) == (200, {"n": 1})
    assert (status["status"], status["attempts"]) == ("completed", 1)
    assert len(n8n.calls_for(key)) == 1
    assert len(n8n.refused_for(key)) >= 1


@pytest.mark.parametrize("phase", ["starting", "mounting"])
async def test_a_start_up_page_is_never_an_answer_even_when_the_wait_runs_out(
    make_client: ClientFactory, starting_n8n: FakeN8n, phase: Phase
) -> None:
    n8n, key = starting_n8n, new_key()
    n8n.phase = phase
    headers = {"Idempotency-Key": key}
    async with make_client(n8n_startup_wait_seconds=0) as client:
        first = await client.post("/webhook/echo", json={"n": 1}, headers=headers)
        problem = assert_problem(first, 503, "n8n-starting")
        assert first.headers["retry-after"] == "5"
        assert "nothing ran" in problem["detail"]
        failed = await status_of(client, key)
        n8n.phase = "ready"
        retried = await client.post("/webhook/echo", json={"n": 1}, headers=headers)
    assert (failed["status"], failed["last_error"]["type"]) == ("failed", "n8n-starting")  # type: ignore[index]
    assert failed["outcome_unknown"] is False
    assert (retried.status_code, retried.json()["received"]) == (200, {"n": 1})
    assert len(n8n.calls_for(key)) == 1


async def test_async_triggers_accepted_while_n8n_starts_are_each_delivered_once(
    make_client: ClientFactory, starting_n8n: FakeN8n
) -> None:
    n8n, keys = starting_n8n, [new_key() for _ in range(6)]
    n8n.phase = "mounting"
    async with make_client(n8n_startup_wait_seconds=0.2, retry_base_seconds=0.05) as client:
        for key in keys:
            accepted = await client.post(
                "/webhook/echo",
                json={"key": key},
                headers={"Idempotency-Key": key, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
        await until_probed(n8n, 0)
        n8n.phase = "ready"
        done = [await until_status(client, key, "completed") for key in keys]
    for key, status in zip(keys, done, strict=True):
        assert status["response"]["content_type"] == "application/json; charset=utf-8"  # type: ignore[index]
        assert len(n8n.calls_for(key)) == 1


async def test_a_workflow_s_own_404_is_its_final_answer(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    """ "Customer 42 is not registered" is the workflow's answer, not n8n's "not registered"."""
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = await client.post("/webhook/customer", json={}, headers=headers)
    replay = await client.post("/webhook/customer", json={}, headers=headers)
    assert (first.status_code, first.json()) == (404, {"message": "Customer 42 is not registered"})
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (404, "true")
    assert (await status_of(client, key))["status"] == "completed"
    assert len(n8n.calls_for(key)) == 1


async def test_a_workflow_s_own_html_page_is_its_final_answer(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    first = await client.post("/webhook/page", json={}, headers=headers)
    replay = await client.post("/webhook/page", json={}, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert replay.content == first.content
    assert b"n8n is starting up" in first.content
    assert (await status_of(client, key))["status"] == "completed"
    assert len(n8n.calls_for(key)) == 1


async def test_a_path_registered_for_another_method_is_not_delivered_again(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    """While the workflow is active under other methods, sending again cannot help: the
    async delivery ends at once (a dead letter the retry endpoint can put back)."""
    keys = {"lookup": new_key(), "multi": new_key()}  # GET only; GET, POST or PUT
    async with make_client(retry_base_seconds=0.01) as client:
        for path, key in keys.items():
            accepted = await client.delete(
                f"/webhook/{path}", headers={"Idempotency-Key": key, "Prefer": "respond-async"}
            )
            assert accepted.status_code == 202
        ended = [await until_status(client, key, "failed") for key in keys.values()]
    for key, status in zip(keys.values(), ended, strict=True):
        assert (status["attempts"], status["next_attempt_at"]) == (1, None)
        assert status["last_error"]["type"] == "n8n-method-not-registered"  # type: ignore[index]
        assert len(n8n.calls_for(key)) == 1


async def test_a_sync_trigger_to_a_path_under_another_method_gets_n8n_s_404_and_may_retry(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    answer = await client.put("/webhook/lookup", json={}, headers={"Idempotency-Key": key})
    assert answer.status_code == 404
    assert "Did you mean to make a GET request?" in answer.json()["message"]
    status = await status_of(client, key)
    assert (status["status"], status["last_error"]["type"]) == (  # type: ignore[index]
        "failed",
        "n8n-method-not-registered",
    )


async def test_failed_attempts_and_dead_letters_are_logged_with_their_key(
    make_client: ClientFactory, n8n: FakeN8n, caplog: pytest.LogCaptureFixture
) -> None:
    sync_key, async_key = new_key(), new_key()
    caplog.set_level(logging.WARNING, logger="app")
    async with make_client(retry_base_seconds=0.01, retry_max_attempts=2) as client:
        await client.post("/webhook/fail", json={}, headers={"Idempotency-Key": sync_key})
        await client.post(
            "/webhook/fail",
            json={},
            headers={"Idempotency-Key": async_key, "Prefer": "respond-async"},
        )
        await until_status(client, async_key, "failed", attempts=2)
    lines = {
        (r.levelname, r.getMessage().split(":")[0], getattr(r, "idempotency_key", None))
        for r in caplog.records
    }
    assert ("WARNING", "attempt failed", sync_key) in lines
    assert ("WARNING", "attempt failed", async_key) in lines
    assert ("ERROR", "dead letter", async_key) in lines
    dead = next(r for r in caplog.records if r.getMessage().startswith("dead letter"))
    message = dead.getMessage()
    assert "workflow=webhook/fail" in message
    assert "error=n8n-error" in message
    assert "n8n_status=500" in message


@pytest.mark.parametrize(("policy", "runs"), [("retry", 2), ("refuse", 1)])
async def test_n8n_s_could_not_execute_answer_is_an_unknown_outcome(
    make_client: ClientFactory, n8n: FakeN8n, policy: str, runs: int
) -> None:
    """Seen as n8n stops: n8n may have stored the execution (it then runs it at its next start)
    or not. GATE_UNKNOWN_OUTCOME decides, as for a proxy's timeout."""
    key = new_key()
    headers = {"Idempotency-Key": key}
    async with make_client(unknown_outcome=policy) as client:
        first = await client.post("/webhook/stopping", json={}, headers=headers)
        recorded = await status_of(client, key)
        again = await client.post("/webhook/stopping", json={}, headers=headers)
    assert first.status_code == 500
    assert (recorded["status"], recorded["outcome_unknown"]) == ("failed", True)
    assert recorded["last_error"]["type"] == "n8n-could-not-execute"  # type: ignore[index]
    if policy == "refuse":
        assert_problem(again, 409, "execution-outcome-unknown")
    else:
        assert again.status_code == 500
    assert len(n8n.calls_for(key)) == runs


async def test_a_caller_n8n_refused_can_fix_its_credentials_and_retry_with_the_key(
    make_client: ClientFactory, n8n: FakeN8n, api_key: str
) -> None:
    """The Webhook node's own 403: nothing ran, so the key is not spent on it."""
    key, dead = new_key(), new_key()
    gate_key = {"N8n-Gate-Key": api_key}
    async with make_client(api_key=None, retry_base_seconds=0.01) as client:
        wrong = {**gate_key, "Authorization": "Bearer wrong", "Idempotency-Key": key}
        refused = await client.post("/webhook/guarded", json={"n": 1}, headers=wrong)
        failed = await status_of_with(client, key, gate_key)
        right = {**wrong, "Authorization": "Bearer hook-secret"}
        allowed = await client.post("/webhook/guarded", json={"n": 1}, headers=right)
        await client.post(
            "/webhook/guarded",
            json={},
            headers={**gate_key, "Idempotency-Key": dead, "Prefer": "respond-async"},
        )
        deadline = time.monotonic() + 10
        while (ended := await status_of_with(client, dead, gate_key))["status"] != "failed":
            assert time.monotonic() < deadline, ended
            await asyncio.sleep(0.02)
    assert (refused.status_code, refused.content) == (403, b"Authorization data is wrong!")
    assert (failed["status"], failed["last_error"]["type"]) == ("failed", "n8n-refused")  # type: ignore[index]
    assert (allowed.status_code, allowed.json()["received"]) == (200, {"n": 1})
    assert (ended["attempts"], ended["next_attempt_at"]) == (1, None)


async def status_of_with(
    client: httpx.AsyncClient, key: str, headers: dict[str, str]
) -> dict[str, object]:
    answer = await client.get(f"/v1/executions/{key}", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_not_registered_just_after_n8n_came_back_means_not_yet(
    make_client: ClientFactory, starting_n8n: FakeN8n
) -> None:
    """n8n says it is ready a moment before it has registered its webhooks."""
    n8n, key = starting_n8n, new_key()
    n8n.phase = "starting"
    async with make_client(n8n_startup_wait_seconds=20) as client:
        sent = asyncio.create_task(
            client.post("/webhook/echo", json={"n": 1}, headers={"Idempotency-Key": key})
        )
        await until_probed(n8n, n8n.readiness_probes)
        n8n.phase = "settling"  # ready by its endpoint; webhooks not yet there
        await until_refused(n8n, key, more_than=len(n8n.refused_for(key)))
        n8n.phase = "ready"
        answer = await sent
    assert (answer.status_code, answer.json()["received"]) == (200, {"n": 1})
    assert len(n8n.calls_for(key)) == 1


async def until_refused(n8n: FakeN8n, key: str, *, more_than: int) -> None:
    deadline = time.monotonic() + 10
    while len(n8n.refused_for(key)) <= more_than:
        assert time.monotonic() < deadline, "the gateway never sent again"
        await asyncio.sleep(0.01)


async def test_an_inactive_path_just_after_n8n_came_back_is_not_sent_in_a_tight_loop(
    make_client: ClientFactory, starting_n8n: FakeN8n
) -> None:
    """Within the settle window a "not registered" is sent again, a poll apart at most."""
    n8n, key = starting_n8n, new_key()
    n8n.phase = "starting"
    async with make_client(n8n_startup_wait_seconds=3) as client:
        first = asyncio.create_task(
            client.post("/webhook/echo", json={}, headers={"Idempotency-Key": new_key()})
        )
        await until_probed(n8n, n8n.readiness_probes)
        n8n.phase = "ready"
        await first
        stop = asyncio.Event()

        async def other_callers() -> None:  # their answers tell the process n8n is ready
            while not stop.is_set():
                await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": new_key()})

        others = [asyncio.create_task(other_callers()) for _ in range(4)]
        answer = await client.post("/webhook/nowhere", json={}, headers={"Idempotency-Key": key})
        stop.set()
        await asyncio.gather(*others)
    assert answer.status_code == 404
    sent = [call for call in n8n.calls if call.key == key]
    assert 1 < len(sent) <= 3 / 0.5 + 2


async def test_delivery_workers_take_nothing_while_n8n_is_starting(
    make_client: ClientFactory, starting_n8n: FakeN8n
) -> None:
    n8n, probe, key = starting_n8n, new_key(), new_key()
    n8n.phase = "starting"
    async with make_client(n8n_startup_wait_seconds=0, retry_base_seconds=0.01) as client:
        # A sync trigger finds n8n starting: from then on the process knows.
        await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": probe})
        accepted = await client.post(
            "/webhook/echo", json={}, headers={"Idempotency-Key": key, "Prefer": "respond-async"}
        )
        assert accepted.status_code == 202
        await until_probed(n8n, n8n.readiness_probes + 2)  # a second and more of probing
        waiting = await status_of(client, key)
        n8n.phase = "ready"
        done = await until_status(client, key, "completed")
    assert (waiting["status"], waiting["attempts"]) == ("pending", 0)
    assert done["attempts"] == 1
    assert n8n.refused_for(key) == []
