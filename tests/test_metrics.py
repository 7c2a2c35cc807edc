"""/metrics: guarded by its token, in Prometheus's text format, counting what callers saw; exact
totals across the workers of a real `serve --workers 2`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, load_settings
from app.delivery.queue import READ_TIMEOUT_SECONDS
from app.metrics import OTHER, WorkflowLabels
from tests.conftest import ClientFactory, new_api_key
from tests.support.dbproxy import DatabaseProxy
from tests.support.dead_processes import died_mid_delivery
from tests.support.executions_api import new_key, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env

TOKEN = "metrics-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics", headers=SCRAPE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return samples_of(answer.text)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_are_404_unless_a_token_is_set(make_client: ClientFactory) -> None:
    async with make_client() as client:
        answer = await client.get("/metrics", headers=SCRAPE)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert "GATE_METRICS_TOKEN" in answer.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
)
async def test_metrics_need_the_token_as_a_bearer(
    make_client: ClientFactory, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with make_client(api_key=None, metrics_token=TOKEN) as client:
        answer = await client.get("/metrics", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert TOKEN not in answer.text


async def test_an_api_key_is_not_a_metrics_token(make_client: ClientFactory, api_key: str) -> None:
    async with make_client(metrics_token=TOKEN) as client:
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 401


async def test_triggers_are_counted_by_mode_outcome_and_status_class(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    async with make_client(metrics_token=TOKEN, metrics_workflows="echo, /fail/") as client:
        before = await scrape(client)
        key = new_key()
        assert (await client.post("/webhook/echo", json={"a": 1}, headers=_key(key))).is_success
        replay = await client.post("/webhook/echo", json={"a": 1}, headers=_key(key))
        assert replay.headers["idempotent-replayed"] == "true"
        reused = await client.post("/webhook/echo", json={"a": 2}, headers=_key(key))
        assert reused.status_code == 422
        assert (await client.post("/webhook/echo", json={})).status_code == 400
        assert (await client.post("/webhook/fail", json={}, headers=_key(new_key()))).is_error
        later = new_key()
        accepted = await client.post(
            "/webhook/echo", json={}, headers={**_key(later), "Prefer": "respond-async"}
        )
        assert accepted.status_code == 202
        await until_status(client, later, "completed")
        after = await scrape(client)

    def triggers(mode: str, outcome: str, status_class: str) -> float:
        labels = {"mode": mode, "outcome": outcome, "status_class": status_class}
        return delta(before, after, "n8n_gate_triggers_total", **labels)

    assert triggers("sync", "forwarded", "2xx") == 1
    assert triggers("sync", "replayed", "2xx") == 1
    assert triggers("sync", "key_reused", "4xx") == 1
    assert triggers("sync", "rejected", "4xx") == 1
    assert triggers("sync", "forwarded", "5xx") == 1
    assert triggers("async", "accepted", "2xx") == 1
    assert delta(before, after, "n8n_gate_n8n_failures_total", type="n8n-error") == 1
    assert delta(before, after, "n8n_gate_delivery_attempts_total", result="completed") == 1
    forwards = "n8n_gate_forward_duration_seconds_count"
    assert delta(before, after, forwards, workflow="webhook/echo", result="2xx") == 2
    assert delta(before, after, forwards, workflow="webhook/fail", result="5xx") == 1
    assert delta(before, after, "n8n_gate_replay_cache_lookups_total", result="hit") == 1


async def test_a_dead_letter_is_counted_once(make_client: ClientFactory, n8n: FakeN8n) -> None:
    async with make_client(metrics_token=TOKEN, retry_max_attempts=1) as client:
        before = await scrape(client)
        key = new_key()
        answer = await client.post(
            "/webhook/fail", json={}, headers={**_key(key), "Prefer": "respond-async"}
        )
        assert answer.status_code == 202
        await until_status(client, key, "failed")
        after = await scrape(client)
        retried = await client.post(f"/v1/executions/{key}/retry")
        assert retried.status_code == 202
        assert delta(after, await scrape(client), "n8n_gate_retries_requested_total") == 1
    assert delta(before, after, "n8n_gate_dead_letters_total") == 1
    assert delta(before, after, "n8n_gate_delivery_attempts_total", result="dead_letter") == 1
    assert delta(before, after, "n8n_gate_delivery_attempts_total", result="retry_scheduled") == 0


async def test_the_queue_depth_and_age_come_from_the_database(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    async with make_client(metrics_token=TOKEN, delivery_workers=0) as client:
        for _ in range(3):
            answer = await client.post(
                "/webhook/echo", json={}, headers={**_key(new_key()), "Prefer": "respond-async"}
            )
            assert answer.status_code == 202
        samples = await scrape(client)
    # The queue is every tenant's: other tests' deliveries may be in it too.
    assert value(samples, "n8n_gate_queue_depth", state="due") >= 3
    assert value(samples, "n8n_gate_queue_oldest_due_age_seconds") > 0
    assert value(samples, "n8n_gate_database_up") == 1
    assert value(samples, "n8n_gate_db_pool_connections_in_use") >= 0


async def test_only_the_listed_workflows_have_a_label_of_their_own(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    listed, invented = f"listed-{uuid.uuid4().hex}", f"invented-{uuid.uuid4().hex}"
    async with make_client(metrics_token=TOKEN, metrics_workflows=listed) as client:
        before = await scrape(client)
        for path in (listed, invented):
            await client.post(f"/webhook/{path}", json={}, headers=_key(new_key()))
        after = await scrape(client)
    forwards = "n8n_gate_forward_duration_seconds_count"
    assert not any(invented in str(labels) for _, labels in after)
    # n8n does not know either path: 404, "not registered".
    assert delta(before, after, forwards, workflow=f"webhook/{listed}", result="4xx") == 1
    assert delta(before, after, forwards, workflow=OTHER, result="4xx") >= 1


def test_workflow_labels_come_from_the_list() -> None:
    labels = WorkflowLabels(["a", "b/c"])
    workflows = ("webhook/a", "webhook-test/b/c", "webhook/b", "webhook/ab")
    assert [labels.label(w) for w in workflows] == ["webhook/a", "webhook-test/b/c", OTHER, OTHER]


@pytest.mark.parametrize(
    ("listed", "problem"),
    [(",".join(f"w{n}" for n in range(201)), "at most 200"), ("x" * 201, "at most 200 char")],
)
def test_the_workflow_list_is_bounded(listed: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(_env_file=None, metrics_workflows=listed)


@pytest.mark.slow
@pytest.mark.parametrize("directory", ["the operator's", "serve's own"])
async def test_two_workers_report_exact_totals(
    database_url: str, n8n: FakeN8n, fake_n8n: tuple[FakeN8n, str], tmp_path: Path, directory: str
) -> None:
    api_key = await new_api_key(database_url)
    chosen = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)} if directory == "the operator's" else {}
    (tmp_path / "counter_1.db").write_bytes(b"an earlier run's values")
    env = cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_METRICS_TOKEN=TOKEN,
        GATE_METRICS_WORKFLOWS="echo",
        **chosen,
    )
    gateway = Gateway(env, workers=2)
    auth = {"Authorization": f"Bearer {api_key}"}
    try:
        keys = [new_key() for _ in range(20)]
        # A new connection per call, so the kernel spreads calls over both workers.
        for key in keys:
            async with httpx.AsyncClient(base_url=gateway.base_url) as client:
                fresh = await client.post("/webhook/echo", json={}, headers={**auth, **_key(key)})
                assert fresh.status_code == 200
        for key in keys[:7]:
            async with httpx.AsyncClient(base_url=gateway.base_url) as client:
                again = await client.post("/webhook/echo", json={}, headers={**auth, **_key(key)})
                assert again.headers["idempotent-replayed"] == "true"
        for _ in range(3):
            async with httpx.AsyncClient(base_url=gateway.base_url) as client:
                assert (
                    await client.post("/webhook/echo", json={}, headers=auth)
                ).status_code == 400
        scrapes = []
        for _ in range(6):
            async with httpx.AsyncClient(base_url=gateway.base_url) as client:
                scrapes.append(await scrape(client))
    finally:
        gateway.stop()
    if chosen:
        counted_by = {file for file in os.listdir(tmp_path) if file.startswith("counter_")}
        assert len(counted_by) == 2, "both workers counted triggers; the stale file is gone"
    triggers = "n8n_gate_triggers_total"
    for samples in scrapes:
        assert value(samples, triggers, mode="sync", outcome="forwarded", status_class="2xx") == 20
        assert value(samples, triggers, mode="sync", outcome="replayed", status_class="2xx") == 7
        assert value(samples, triggers, mode="sync", outcome="rejected", status_class="4xx") == 3
        assert (
            value(samples, "n8n_gate_forward_duration_seconds_count", workflow="webhook/echo",
                  result="2xx")
            == 20
        )  # fmt: skip


@pytest.mark.parametrize("outage", ["cut", "stall"])
async def test_a_scrape_while_the_database_is_away_says_so_in_time(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n, outage: str
) -> None:
    async with (
        DatabaseProxy(database_url).running() as proxy,
        make_client(DATABASE_URL=proxy.url, metrics_token=TOKEN) as client,
    ):
        assert value(await scrape(client), "n8n_gate_database_up") == 1
        getattr(proxy, outage)()
        started = time.monotonic()
        samples = await scrape(client)
        assert time.monotonic() - started < READ_TIMEOUT_SECONDS + 2
        proxy.restore()
    assert value(samples, "n8n_gate_database_up") == 0
    assert ("n8n_gate_queue_depth", frozenset({("state", "due")})) not in samples


def _key(key: str) -> Mapping[str, str]:
    return {"Idempotency-Key": key}


def test_a_multiprocess_directory_that_does_not_exist_is_no_harm_to_the_cli(
    tmp_path: Path,
) -> None:
    env = cli_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    done = subprocess.run(
        [sys.executable, "-m", "app", "--help"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
async def test_one_process_keeps_its_metrics_in_memory_whatever_the_environment_says(
    database_url: str, n8n: FakeN8n, fake_n8n: tuple[FakeN8n, str], tmp_path: Path
) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"an earlier run's values")
    api_key = await new_api_key(database_url)
    env = cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    gateway = Gateway(env)
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            auth = {"Authorization": f"Bearer {api_key}", **_key(new_key())}
            assert (await client.post("/webhook/echo", json={}, headers=auth)).status_code == 200
            samples = await scrape(client)
    finally:
        gateway.stop()
    forwarded = {"mode": "sync", "outcome": "forwarded", "status_class": "2xx"}
    assert value(samples, "n8n_gate_triggers_total", **forwarded) == 1
    assert os.listdir(tmp_path) == ["counter_1.db"]  # neither read nor written


@pytest.mark.parametrize("policy", ["retry", "refuse"])
async def test_a_delivery_whose_process_died_is_counted_when_it_is_found(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n, policy: str
) -> None:
    """The take finds it (take_due_deliveries_v3): taken over, its dead attempt's outcome
    unknown (retry), or ended as a dead letter (refuse). Other tests' dead deliveries may be
    found in the same take: at least this one is counted."""
    tenant = f"metrics-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    key = new_key()
    async with make_client(api_key=api_key, delivery_workers=0) as accepting:
        prefer = {"Prefer": "respond-async"}
        await accepting.post("/webhook/echo", json={}, headers={**_key(key), **prefer})
    await died_mid_delivery(database_url, tenant, key)
    unknown = REGISTRY.get_sample_value("n8n_gate_outcome_unknown_total") or 0
    dead = REGISTRY.get_sample_value("n8n_gate_dead_letters_total") or 0
    quick = {"delivery_poll_seconds": 0.05, "retry_base_seconds": 0.05}
    async with make_client(api_key=api_key, unknown_outcome=policy, **quick) as client:
        await until_status(client, key, "completed" if policy == "retry" else "failed")
    assert (REGISTRY.get_sample_value("n8n_gate_outcome_unknown_total") or 0) >= unknown + 1
    if policy == "refuse":
        assert (REGISTRY.get_sample_value("n8n_gate_dead_letters_total") or 0) >= dead + 1
