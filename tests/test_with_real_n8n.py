"""The gateway in front of a real n8n (tests/support/real_n8n.py): what it records and replays
is what n8n answered, and every trigger runs its workflow once, through restarts of n8n included.
Runs per key are read from n8n's own database."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.conftest import ClientFactory, GatewayClient, new_api_key
from tests.support.dbproxy import DatabaseProxy
from tests.support.executions_api import new_key, status_of, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.real_n8n import (
    HOOK_SECRET,
    LATE_ID,
    PAGE,
    REDIRECT_TO,
    SIGNING_SECRET,
    RealN8n,
)

pytestmark = pytest.mark.slow

# Headers a replay may differ in: regenerated on every answer, or the gateway's own (each
# answer's X-Request-Id is its own request's).
VOLATILE = {
    "date",
    "content-length",
    "idempotent-replayed",
    "connection",
    "keep-alive",
    "x-request-id",
}


@pytest.fixture(autouse=True)
def running_n8n(real_n8n: RealN8n) -> RealN8n:
    real_n8n.ensure_running()
    return real_n8n


@pytest.fixture
async def gate(real_n8n: RealN8n, make_client: ClientFactory) -> AsyncIterator[GatewayClient]:
    async with make_client(
        n8n_base_url=real_n8n.base_url,
        n8n_startup_wait_seconds=60,
        retry_base_seconds=0.5,
        retry_cap_seconds=5,
        retry_max_attempts=30,
    ) as client:
        yield client


def lasting(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.multi_items() if k not in VOLATILE)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    body: bytes | None = None


@pytest.mark.parametrize(
    "case",
    [
        Case("POST", "echo", 200),
        Case("POST", "started", 200, b'{"message":"Workflow was started"}'),
        Case("POST", "respond", 201, b'{"ok":true,"order":7}'),
        Case("POST", "redirect", 307),
        Case("POST", "customer", 404, b'{"message":"Customer 42 is not registered"}'),
        Case("POST", "page", 200, PAGE.encode()),
        Case("GET", "lookup", 200),
        Case("HEAD", "probe", 200, b""),
    ],
    ids=lambda case: case.path,
)
async def test_a_replay_is_n8n_s_answer_byte_for_byte_and_the_workflow_ran_once(
    gate: GatewayClient, real_n8n: RealN8n, case: Case
) -> None:
    key = new_key()
    # Over 1 KiB: n8n gzips its answer, the gateway decodes it.
    body = {"order": 7, "note": "x" * 2048} if case.method == "POST" else None
    headers = {"Idempotency-Key": key}
    first = await gate.request(case.method, f"/webhook/{case.path}", json=body, headers=headers)
    again = await gate.request(case.method, f"/webhook/{case.path}", json=body, headers=headers)
    assert first.status_code == case.status, first.text
    if case.body is not None:
        assert first.content == case.body
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert lasting(again) == lasting(first)
    assert again.headers["idempotent-replayed"] == "true"
    assert (await status_of(gate, key))["status"] == "completed"
    assert real_n8n.settled_runs_for([key]) == {key: 1}
    if case.path == "echo":
        assert first.json()["body"] == body
        assert first.json()["headers"]["idempotency-key"] == key
    if case.path == "respond":
        assert first.headers["x-execution-id"].isdigit()
    if case.path == "redirect":
        assert first.headers["location"] == REDIRECT_TO
        assert first.headers["n8n-gate-execution"] == f"/v1/executions/{key}"


async def test_a_failing_workflow_is_recorded_failed_and_runs_again_on_retry(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    key = new_key()
    first = await gate.post("/webhook/fail", json={}, headers={"Idempotency-Key": key})
    status = await status_of(gate, key)
    assert first.status_code == 500
    assert (status["status"], status["last_error"]["type"]) == ("failed", "n8n-error")  # type: ignore[index]


async def test_a_wrong_method_is_n8n_s_404_and_not_retried(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    key = new_key()
    accepted = await gate.delete(
        "/webhook/lookup", headers={"Idempotency-Key": key, "Prefer": "respond-async"}
    )
    assert accepted.status_code == 202
    status = await until_status(gate, key, "failed")
    assert (status["attempts"], status["next_attempt_at"]) == (1, None)
    assert status["last_error"]["type"] == "n8n-method-not-registered"  # type: ignore[index]


async def test_concurrent_duplicates_run_the_workflow_once(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key, "Prefer": "wait=30"}
    answers = await asyncio.gather(
        *(gate.post("/webhook/slow", json={"n": 1}, headers=headers) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    assert len({a.content for a in answers}) == 1
    assert real_n8n.settled_runs_for([key]) == {key: 1}


async def test_an_inactive_workflow_is_delivered_once_it_is_activated(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key, "Prefer": "respond-async"}
    assert (await gate.post("/webhook/late", json={"n": 1}, headers=headers)).status_code == 202
    waiting = await until_status(gate, key, "pending", attempts=1)
    assert waiting["last_error"]["type"] == "n8n-not-registered"  # type: ignore[index]
    real_n8n.publish(LATE_ID)  # picked up at n8n's next start
    await asyncio.to_thread(restart, real_n8n)
    done = await until_status(gate, key, "completed", within=60)
    assert done["response_status"] == 200
    assert real_n8n.settled_runs_for([key]) == {key: 1}


async def test_a_backlog_accepted_while_n8n_is_down_is_delivered_once_each(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    keys = [new_key() for _ in range(20)]
    await asyncio.to_thread(real_n8n.stop)
    try:
        for key in keys:
            accepted = await gate.post(
                "/webhook/echo",
                json={"key": key},
                headers={"Idempotency-Key": key, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
    finally:
        await asyncio.to_thread(real_n8n.start, wait=False)
    done = [await until_status(gate, key, "completed", within=120) for key in keys]
    await asyncio.to_thread(real_n8n.wait_ready)
    assert {d["response_status"] for d in done} == {200}
    assert set(real_n8n.settled_runs_for(keys).values()) == {1}


@pytest.fixture
async def drained_n8n(real_n8n: RealN8n) -> AsyncIterator[DatabaseProxy]:
    """n8n behind a proxy that takes it out of rotation before each stop, as a load balancer
    (or Kubernetes, ending a pod) does: n8n 2.40.7 takes new executions while it waits for the
    running ones at SIGTERM, so a stream sent straight to it kept it from stopping until its
    shutdown timed out, and a start after such a crash left its webhooks unregistered for
    minutes under load."""
    async with DatabaseProxy(real_n8n.base_url).running() as proxy:
        yield proxy


async def test_every_trigger_of_a_stream_runs_once_through_three_restarts_of_n8n(
    real_n8n: RealN8n, drained_n8n: DatabaseProxy, make_client: ClientFactory
) -> None:
    """Sync callers retry what the gateway says to retry (5xx, connection errors), as a
    client would; async triggers are accepted throughout. Three restarts of n8n meanwhile."""
    async with make_client(
        n8n_base_url=f"http://127.0.0.1:{drained_n8n.port}",
        # What one n8n process on this 2-core machine keeps up with: 100 at once after a
        # restart left it finishing one execution every few seconds.
        n8n_max_connections=8,
        n8n_startup_wait_seconds=60,
        retry_base_seconds=0.5,
        retry_cap_seconds=5,
        retry_max_attempts=30,
    ) as gate:
        await stream_through_restarts(gate, real_n8n, drained_n8n)


async def stream_through_restarts(
    gate: GatewayClient, real_n8n: RealN8n, proxy: DatabaseProxy
) -> None:
    log_before = len(real_n8n.output())
    stop = asyncio.Event()
    sync_keys: list[str] = []
    async_keys: list[str] = []
    answers: dict[str, httpx.Response] = {}

    async def call_until_answered(key: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                answer = await gate.post(
                    "/webhook/echo", json={"key": key}, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                continue
            final = answer.status_code < 500 and answer.status_code != 409
            if final or "idempotent-replayed" in answer.headers:
                answers[key] = answer
                return
            await asyncio.sleep(0.5)

    async def produce() -> list[asyncio.Task[None]]:
        tasks = []
        while not stop.is_set():
            sync_key, async_key = new_key(), new_key()
            sync_keys.append(sync_key)
            tasks.append(asyncio.create_task(call_until_answered(sync_key)))
            async_keys.append(async_key)
            accepted = await gate.post(
                "/webhook/echo",
                json={"key": async_key},
                headers={"Idempotency-Key": async_key, "Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
            await asyncio.sleep(0.15)
        return tasks

    producer = asyncio.create_task(produce())
    for _ in range(3):
        await asyncio.sleep(1.5)
        proxy.drain()
        await asyncio.to_thread(restart, real_n8n)
        await proxy.listen_again()
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.gather(*await producer)

    assert set(answers) == set(sync_keys)
    for key, answer in answers.items():
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"] == {"key": key}
    for key in async_keys:
        done = await until_status(gate, key, "completed", within=120)
        assert done["response_status"] == 200
    every_key = sync_keys + async_keys
    runs = real_n8n.settled_runs_for(every_key)
    # Where n8n left the outcome unknown (it hung up, or answered "There was a problem
    # executing the workflow" as it stopped) the policy (retry) may have run it twice.
    unknown = [key for key in every_key if await had_unknown_outcome(gate, key)]
    assert {k: n for k, n in runs.items() if n != 1 and k not in unknown} == {}
    assert {k: n for k, n in runs.items() if k in unknown and n not in (1, 2)} == {}
    assert len(every_key) >= 60
    assert len(unknown) <= len(every_key) // 20, unknown
    # Each stop was graceful: the gateway's connections did not keep n8n's shutdown waiting
    # on new executions until it gave up and marked them crashed.
    log = real_n8n.output()[log_before:]
    assert "Shutdown timed out" not in log
    assert "Last session crashed" not in log


async def had_unknown_outcome(client: GatewayClient, key: str) -> bool:
    history = (await status_of(client, key))["attempt_history"]
    return any(a["error"] and a["error"]["type"] in UNKNOWN for a in history)  # type: ignore[union-attr,index]


UNKNOWN = {"n8n-could-not-execute", "n8n-connection-lost", "n8n-read-timeout"}


def restart(n8n: RealN8n) -> None:
    n8n.stop(signal.SIGTERM)
    n8n.start()


async def test_a_binary_answer_is_replayed_byte_for_byte(
    gate: GatewayClient, real_n8n: RealN8n
) -> None:
    key = new_key()
    payload, headers = bytes(range(256)), {"Idempotency-Key": key}
    body = {"data": base64.b64encode(payload).decode()}
    first = await gate.post("/webhook/binary", json=body, headers=headers)
    again = await gate.post("/webhook/binary", json=body, headers=headers)
    assert (first.status_code, first.content) == (200, payload)
    assert first.headers["content-type"].startswith("application/octet-stream")
    assert (again.content, lasting(again)) == (first.content, lasting(first))
    status = await status_of(gate, key)
    assert status["response"]["body_encoding"] == "base64"  # type: ignore[index]
    assert real_n8n.settled_runs_for([key]) == {key: 1}


async def test_n8n_s_own_authorization_passes_when_the_gateway_key_is_apart(
    real_n8n: RealN8n, make_client: ClientFactory, api_key: str
) -> None:
    """A Webhook node with Header Auth on Authorization: the caller puts the gateway's key in
    N8n-Gate-Key, and its Authorization reaches n8n."""
    good, bad = new_key(), new_key()
    async with make_client(n8n_base_url=real_n8n.base_url, api_key=None) as gate:
        allowed = await gate.post(
            "/webhook/guarded",
            json={"n": 1},
            headers={
                "N8n-Gate-Key": api_key,
                "Authorization": HOOK_SECRET,
                "Idempotency-Key": good,
            },
        )
        refused = await gate.post(
            "/webhook/guarded",
            json={"n": 1},
            headers={
                "N8n-Gate-Key": api_key,
                "Authorization": "Bearer wrong",
                "Idempotency-Key": bad,
            },
        )
    assert (allowed.status_code, allowed.json()["body"]) == (200, {"n": 1})
    assert "n8n-gate-key" not in allowed.json()["headers"]
    assert refused.status_code == 403  # n8n's own answer, and the workflow did not run
    assert real_n8n.settled_runs_for([good]) == {good: 1}
    assert real_n8n.runs_for(bad) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/webhook/no-such-hook"),
        ("DELETE", "/webhook/lookup"),
        ("POST", "/webhook-test/no-such-hook"),
        ("POST", "/webhook/started"),
        ("POST", "/webhook/customer"),
        ("POST", "/webhook/redirect"),
        ("POST", "/webhook/fail"),
        ("HEAD", "/webhook/probe"),
        ("GET", "/healthz/readiness"),
    ],
)
async def test_the_fake_n8n_answers_as_the_real_one(
    real_n8n: RealN8n, fake_n8n: tuple[FakeN8n, str], method: str, path: str
) -> None:
    """Where the fast fake stands in for n8n (its own answers, and the workflows both have),
    status, content type and body are the real one's."""
    answers = []
    for base_url in (real_n8n.base_url, fake_n8n[1]):
        async with httpx.AsyncClient(base_url=base_url) as n8n:
            body = None if method in ("GET", "HEAD") else {}
            answer = await n8n.request(method, path, json=body)
        answers.append(
            (
                answer.status_code,
                answer.headers.get("content-type"),
                answer.headers.get("location"),
                answer.json() if answer.content else None,
            )
        )
    real, fake = answers
    assert fake == real


async def test_the_documented_recipe_verifies_the_gateways_calls_in_n8n(
    real_n8n: RealN8n, make_client: ClientFactory, database_url: str
) -> None:
    """docs/verify-in-n8n.md's Code node, run by n8n itself: the gateway's call verifies; the
    same call straight to n8n without the signature, or with another body, does not."""
    tenant = f"recipe-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO signing_secrets (tenant_id, secret) "
            "SELECT id, $2 FROM tenants WHERE name = $1",
            tenant,
            SIGNING_SECRET,
        )
    finally:
        await conn.close()
    key = new_key()
    async with make_client(
        n8n_base_url=real_n8n.base_url, n8n_startup_wait_seconds=60, api_key=api_key
    ) as gate:
        answer = await gate.post(
            "/webhook/verified", json={"order": 7}, headers={"Idempotency-Key": key}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"verified": True, "body": {"order": 7}}
    async with httpx.AsyncClient(base_url=real_n8n.base_url) as n8n:
        unsigned = await n8n.post("/webhook/verified", json={"order": 7})
        forged = await n8n.post(
            "/webhook/verified",
            json={"order": 8},
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode(),
            },
        )
    assert unsigned.status_code == 500  # the Code node threw: the workflow stopped there
    assert forged.status_code == 500
