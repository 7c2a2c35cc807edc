"""Alerts (GATE_ALERT_URL): an execution that becomes a dead letter or ends with its outcome
unknown is alerted once, durably, signed, through the delivery workers; nothing else is."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import asyncpg
import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from tests.alerts.receiver import (
    AlertReceiver,
    alert_receiver,
    alert_rows,
    signing_secret,
    until_alert,
)
from tests.conftest import ClientFactory, new_api_key
from tests.support.dead_processes import died_mid_delivery
from tests.support.executions_api import until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import cli_env
from tests.test_cli import run_cli

ASYNC = {"Prefer": "respond-async"}
# Deliveries retried quickly, and looked for often.
QUICK = {
    "retry_base_seconds": 0.05,
    "retry_cap_seconds": 0.1,
    "retry_max_attempts": 3,
    "delivery_poll_seconds": 0.05,
}


@pytest.fixture
def receiver() -> Iterator[tuple[AlertReceiver, str]]:
    with alert_receiver() as served:
        yield served


async def new_tenant(database_url: str) -> tuple[str, str]:
    tenant = f"alerts-{uuid.uuid4().hex[:12]}"
    return tenant, await new_api_key(database_url, tenant_name=tenant)


def alert_sends(result: str) -> float:
    return REGISTRY.get_sample_value("n8n_gate_alert_sends_total", {"result": result}) or 0


def new_key() -> str:
    return f"alert-{uuid.uuid4()}"


async def test_a_dead_letter_is_alerted_once_and_retried_after_the_alert_url_failed(
    make_client: ClientFactory,
    n8n: FakeN8n,
    database_url: str,
    receiver: tuple[AlertReceiver, str],
) -> None:
    alerts, url = receiver
    alerts.answers = [500]  # the first send fails; the second is accepted
    tenant, api_key = await new_tenant(database_url)
    key = f"order/42 {uuid.uuid4()}"  # a key with characters the link must encode
    settings = {**QUICK, "alert_url": url, "public_url": "https://gate.example.com/"}
    sends_before = {result: alert_sends(result) for result in ("delivered", "retry_scheduled")}
    async with make_client(api_key=api_key, **settings) as client:
        accepted = await client.post(
            "/webhook/fail",
            json={"card": "4242 4242 4242 4242"},
            headers={**ASYNC, "Idempotency-Key": key, "X-Shop-Token": "hdr-secret"},
        )
        assert accepted.status_code == 202
        status = await until_status(client, key, "failed")
        delivered = await until_alert(database_url, tenant, key, "delivered")
        listed = (await client.get("/v1/executions")).json()
    assert len(n8n.calls_for(key)) == 3  # the dead letter: every attempt refused by n8n
    assert (delivered.type, delivered.sends) == ("execution.dead_letter", 2)
    # In the metrics too (other tests' alerts may be sent meanwhile: at least these).
    assert alert_sends("delivered") >= sends_before["delivered"] + 1
    assert alert_sends("retry_scheduled") >= sends_before["retry_scheduled"] + 1
    # The alert is not an execution: the tenant has one, the one it triggered.
    assert [item["key"] for item in listed["items"]] == [key]

    first, second = alerts.for_key(key)
    assert (first.status, second.status) == (500, 200)
    assert (
        first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_alert_{delivered.id}"
    )
    assert second.headers["content-type"] == "application/json"
    Webhook(await signing_secret(database_url, tenant)).verify(second.body, second.headers)
    document = second.document
    occurred_at = datetime.fromisoformat(document.pop("occurred_at"))
    assert occurred_at == datetime.fromisoformat(status["finished_at"])  # type: ignore[arg-type]
    text = document.pop("text")
    assert document == {
        "type": "execution.dead_letter",
        "tenant": tenant,
        "key": key,
        "workflow": "webhook/fail",
        "execution_id": delivered.execution_id,
        "attempts": 3,
        "outcome_unknown": False,
        "error": {"type": "n8n-error", "detail": "n8n answered 500: Error in workflow"},
        "n8n_status": 500,
        "link": f"https://gate.example.com/ui/executions/order%2F42%20{key.split(' ')[1]}",
    }
    assert text.startswith("Dead letter: webhook/fail failed after 3 attempts (n8n-error).")
    assert document["link"] in text  # type: ignore[operator]
    for sent in (first, second):  # nothing of the request travels with its alert
        assert b"4242" not in sent.body
        assert b"hdr-secret" not in sent.body


async def test_an_unknown_outcome_is_alerted_and_the_trigger_never_waits_for_the_alert(
    make_client: ClientFactory,
    n8n: FakeN8n,
    database_url: str,
    receiver: tuple[AlertReceiver, str],
) -> None:
    alerts, url = receiver
    alerts.hold()  # the alert receiver answers nothing until released
    tenant, api_key = await new_tenant(database_url)
    first, second = new_key(), new_key()
    settings = {**QUICK, "alert_url": url, "n8n_timeout_seconds": 0.3}
    async with make_client(api_key=api_key, **settings) as client:
        timed_out = await client.post("/webhook/slow", json={}, headers={"Idempotency-Key": first})
        assert timed_out.status_code == 504
        await alerts.until_received(first, status=None)  # its alert is held at the receiver
        started = time.monotonic()
        again = await client.post("/webhook/slow", json={}, headers={"Idempotency-Key": second})
        took = time.monotonic() - started
        assert again.status_code == 504
        assert (await until_status(client, second, "failed"))["outcome_unknown"] is True
        alerts.release()
        await until_alert(database_url, tenant, first, "delivered")
        await until_alert(database_url, tenant, second, "delivered")
    assert took < 2.0  # n8n's 0.3 s and the record, not the held alert
    for key in (first, second):
        (alert,) = alerts.for_key(key)
        assert alert.status == 200
        document = alert.document
        assert (document["type"], document["workflow"]) == (
            "execution.outcome_unknown",
            "webhook/slow",
        )
        assert (document["outcome_unknown"], document["attempts"]) == (True, 1)
        assert document["error"]["type"] == "n8n-read-timeout"
        assert document["link"] == f"/v1/executions/{key}"  # no GATE_PUBLIC_URL: the API path
        assert document["text"].startswith("Outcome unknown: webhook/slow, attempt 1 (")


async def test_executions_that_end_otherwise_are_not_alerted(
    make_client: ClientFactory,
    n8n: FakeN8n,
    database_url: str,
    receiver: tuple[AlertReceiver, str],
) -> None:
    alerts, url = receiver
    tenant, api_key = await new_tenant(database_url)
    completed, failed, retried, retried_async, dead = (new_key() for _ in range(5))
    n8n.failures_left[retried_async] = 1
    async with make_client(api_key=api_key, alert_url=url, **QUICK) as client:
        assert (
            await client.post("/webhook/echo", headers={"Idempotency-Key": completed})
        ).status_code == 200
        # n8n's own 500 to a sync caller: the caller has the answer, and may send it again.
        assert (
            await client.post("/webhook/fail", headers={"Idempotency-Key": failed})
        ).status_code == 500
        n8n.failures_left[retried] = 1
        assert (
            await client.post("/webhook/flaky", headers={"Idempotency-Key": retried})
        ).status_code == 500
        assert (
            await client.post("/webhook/flaky", headers={"Idempotency-Key": retried})
        ).status_code == 200
        await client.post("/webhook/flaky", headers={**ASYNC, "Idempotency-Key": retried_async})
        await until_status(client, retried_async, "completed", attempts=2)
        await client.post("/webhook/guarded", headers={**ASYNC, "Idempotency-Key": dead})
        await until_status(client, dead, "failed")
        await until_alert(database_url, tenant, dead, "delivered")
    # Each alert is written with the end of its execution: the others have none.
    assert [row.idempotency_key for row in await alert_rows(database_url, tenant)] == [dead]
    assert [
        alert.document["key"] for alert in alerts.received if alert.document["tenant"] == tenant
    ] == [dead]


async def test_a_delivery_abandoned_under_the_refuse_policy_is_alerted(
    make_client: ClientFactory, database_url: str, receiver: tuple[AlertReceiver, str]
) -> None:
    """GATE_UNKNOWN_OUTCOME=refuse: a take that finds a delivery whose process died ends it
    failed, outcome unknown (take_due_deliveries_v2)."""
    alerts, url = receiver
    tenant, api_key = await new_tenant(database_url)
    key = new_key()
    async with make_client(api_key=api_key, delivery_workers=0) as accepting:
        await accepting.post("/webhook/echo", headers={**ASYNC, "Idempotency-Key": key})
    await died_mid_delivery(database_url, tenant, key)
    async with make_client(
        api_key=api_key, alert_url=url, unknown_outcome="refuse", **QUICK
    ) as client:
        status = await until_status(client, key, "failed")
        await until_alert(database_url, tenant, key, "delivered")
    assert (status["outcome_unknown"], status["last_error"]["type"]) == (True, "abandoned")  # type: ignore[index]
    (alert,) = alerts.for_key(key)
    assert (alert.document["type"], alert.document["outcome_unknown"]) == (
        "execution.dead_letter",
        True,
    )
    assert alert.document["error"]["type"] == "abandoned"
    assert "n8n may have run it" in alert.document["text"]


async def test_a_sync_execution_the_reaper_ends_is_alerted(
    make_client: ClientFactory, database_url: str, receiver: tuple[AlertReceiver, str]
) -> None:
    """A sync execution whose process died is ended by the reaper (end_abandoned_executions)."""
    alerts, url = receiver
    tenant, api_key = await new_tenant(database_url)
    key = new_key()
    await claimed_and_abandoned(database_url, tenant, key)
    async with make_client(
        api_key=api_key, alert_url=url, reaper_interval_seconds=0, **QUICK
    ) as client:
        deadline = time.monotonic() + 10
        while not await client.services.reaper.end_abandoned_once():
            assert time.monotonic() < deadline, "never ended"
            await asyncio.sleep(0.05)
        await until_alert(database_url, tenant, key, "delivered")
    (alert,) = alerts.for_key(key)
    assert (alert.document["type"], alert.document["outcome_unknown"]) == (
        "execution.outcome_unknown",
        True,
    )
    assert alert.document["error"]["type"] == "abandoned"


async def test_an_alert_refused_every_time_is_given_up_logged_and_listed(
    make_client: ClientFactory,
    database_url: str,
    receiver: tuple[AlertReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts, url = receiver
    alerts.answers = [307, 500, 429]  # a redirect is not followed: a failed send like others
    tenant, api_key = await new_tenant(database_url)
    key = new_key()
    settings = {**QUICK, "alert_url": url, "alert_max_sends": 3}
    with caplog.at_level(logging.ERROR, logger="app.alerts.sender"):
        async with make_client(api_key=api_key, **settings) as client:
            await client.post("/webhook/guarded", headers={**ASYNC, "Idempotency-Key": key})
            given_up = await until_alert(database_url, tenant, key, "failed")
    assert (given_up.sends, given_up.last_error) == (3, "answered 429")
    assert [alert.status for alert in alerts.for_key(key)] == [307, 500, 429]
    (logged,) = [
        r
        for r in caplog.records
        if r.name == "app.alerts.sender" and key == getattr(r, "idempotency_key", None)
    ]
    assert f"alert {given_up.id} (execution.dead_letter)" in logged.getMessage()
    assert "given up after 3 sends to 127.0.0.1" in logged.getMessage()
    assert "/hooks/alerts" not in logged.getMessage()  # the URL's path may be its credential
    listed = run_cli("alerts", "list", "--status", "failed", env=cli_env(DATABASE_URL=database_url))
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if key in line]
    assert f"tenant={tenant}" in line
    assert "failed    sends=3" in line
    assert "last error: answered 429" in line


async def test_a_send_without_an_answer_is_a_failed_send(
    make_client: ClientFactory,
    database_url: str,
    receiver: tuple[AlertReceiver, str],
    unreachable_n8n_url: str,
) -> None:
    """Refused, or no answer within GATE_ALERT_TIMEOUT_SECONDS: tried again, then given up;
    the error names neither the URL's path nor its query."""
    alerts, url = receiver
    alerts.hold()
    tenant, api_key = await new_tenant(database_url)
    refused, silent = new_key(), new_key()
    settings = {**QUICK, "alert_max_sends": 2, "alert_timeout_seconds": 0.3}
    for key, alert_url in (
        (refused, f"{unreachable_n8n_url}/hook/T0/s3cr3t?token=x"),
        (silent, url),
    ):
        async with make_client(api_key=api_key, alert_url=alert_url, **settings) as client:
            await client.post("/webhook/guarded", headers={**ASYNC, "Idempotency-Key": key})
            await until_alert(database_url, tenant, key, "failed")
    alerts.release()
    rows = {row.idempotency_key: row for row in await alert_rows(database_url, tenant)}
    assert rows[refused].sends == 2
    assert rows[refused].last_error.startswith("ClientConnectorError: ")  # type: ignore[union-attr]
    assert "s3cr3t" not in rows[refused].last_error  # type: ignore[operator]
    assert "token" not in rows[refused].last_error  # type: ignore[operator]
    assert (rows[silent].sends, rows[silent].last_error) == (2, "no answer within 0.3 s")
    assert len(alerts.for_key(silent)) == 2


async def test_two_gateways_send_each_alert_once(
    make_client: ClientFactory, database_url: str, receiver: tuple[AlertReceiver, str]
) -> None:
    alerts, url = receiver
    tenant, api_key = await new_tenant(database_url)
    keys = [new_key() for _ in range(12)]
    settings = {**QUICK, "alert_url": url}
    async with (
        make_client(api_key=api_key, **settings) as one,
        make_client(api_key=api_key, **settings) as other,
    ):
        for index, key in enumerate(keys):
            gateway = one if index % 2 else other
            await gateway.post("/webhook/guarded", headers={**ASYNC, "Idempotency-Key": key})
        for key in keys:
            await until_alert(database_url, tenant, key, "delivered")
    assert [len(alerts.for_key(key)) for key in keys] == [1] * len(keys)


async def test_without_an_alert_url_nothing_is_sent_and_nothing_is_kept(
    make_client: ClientFactory, database_url: str
) -> None:
    tenant, api_key = await new_tenant(database_url)
    key = new_key()
    async with make_client(api_key=api_key, **QUICK) as client:
        await client.post("/webhook/guarded", headers={**ASYNC, "Idempotency-Key": key})
        await until_status(client, key, "failed")
        deadline = time.monotonic() + 10
        while await alert_rows(database_url, tenant):  # written with the end, then dropped
            assert time.monotonic() < deadline, "the alert was kept"
            await asyncio.sleep(0.05)


async def test_the_reaper_deletes_alerts_nobody_sends(
    make_client: ClientFactory, database_url: str
) -> None:
    """No process sends them (no delivery workers anywhere): the reaper keeps the table bounded."""
    tenant, api_key = await new_tenant(database_url)
    key = new_key()
    await claimed_and_abandoned(database_url, tenant, key)
    async with make_client(
        api_key=api_key,
        delivery_workers=0,
        reaper_interval_seconds=0,
        failed_key_retention_seconds=0.2,
    ) as client:
        reaper = client.services.reaper
        deadline = time.monotonic() + 10
        while not await reaper.end_abandoned_once():
            assert time.monotonic() < deadline, "never ended"
            await asyncio.sleep(0.05)
        assert [row.status for row in await alert_rows(database_url, tenant)] == ["pending"]
        while await alert_rows(database_url, tenant):
            await reaper.reap_alerts_once()
            assert time.monotonic() < deadline, "never reaped"
            await asyncio.sleep(0.05)


async def claimed_and_abandoned(database_url: str, tenant: str, key: str) -> None:
    """A sync claim whose process died at once: running under a 1 ms lease."""
    conn = await asyncpg.connect(database_url)
    try:
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", tenant)
        claimed = await conn.fetchval(
            "SELECT claimed FROM claim_execution("
            "$1, $2, '\\x00', 'POST', 'webhook', 'echo', 0.001, gen_random_uuid())",
            tenant_id,
            key,
        )
        assert claimed
        await conn.execute("SELECT pg_sleep(0.01)")  # past the lease
    finally:
        await conn.close()


async def test_a_single_worker_delivers_while_alerts_wait_on_a_silent_receiver(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n, receiver: tuple[AlertReceiver, str]
) -> None:
    """GATE_DELIVERY_WORKERS=1: the one slot goes to a due delivery first. Taken first, each
    due alert took it again as it freed, and a receiver that never answers held back every
    delivery for as long as alerts were due."""
    alerts, url = receiver
    alerts.hold()
    _tenant, api_key = await new_tenant(database_url)
    settings = {**QUICK, "alert_url": url, "alert_timeout_seconds": 0.5, "retry_max_attempts": 1}
    async with make_client(api_key=api_key, delivery_workers=1, **settings) as client:
        dead = [new_key() for _ in range(8)]
        for key in dead:
            await client.post("/webhook/fail", json={}, headers={**ASYNC, "Idempotency-Key": key})
        for key in dead:
            await until_status(client, key, "failed")
        started = time.monotonic()
        fresh = new_key()
        await client.post("/webhook/echo", json={}, headers={**ASYNC, "Idempotency-Key": fresh})
        await until_status(client, fresh, "completed")
        waited = time.monotonic() - started
    alerts.release()
    # Eight alerts due, each send waiting out 0.5 s: taken first, the delivery waited them all.
    assert waited < 2.0, waited
