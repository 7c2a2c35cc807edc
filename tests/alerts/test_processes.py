"""Alerts survive a gateway process killed with -9: queued with the dead letter's commit, they
are sent by the process that comes after it."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.alerts.receiver import AlertReceiver, alert_receiver, alert_rows, until_alert
from tests.conftest import new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env

pytestmark = pytest.mark.slow  # real gateway processes


@pytest.fixture
def receiver() -> Iterator[tuple[AlertReceiver, str]]:
    with alert_receiver() as served:
        yield served


def alert_env(database_url: str, n8n_url: str, alert_url: str, **values: str) -> dict[str, str]:
    defaults = {"GATE_REAPER_INTERVAL_SECONDS": "0", "GATE_DELIVERY_POLL_SECONDS": "0.1"}
    return cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=n8n_url,
        GATE_ACCESS_LOG="false",
        GATE_ALERT_URL=alert_url,
        **{**defaults, **values},
    )


async def dead_letter(gateway: Gateway, api_key: str, key: str) -> None:
    """An async trigger n8n refuses (403): a dead letter at its first attempt."""
    async with httpx.AsyncClient(base_url=gateway.base_url) as client:
        accepted = await client.post(
            "/webhook/guarded",
            json={},
            headers={
                "Authorization": f"Bearer {api_key}",
                "Idempotency-Key": key,
                "Prefer": "respond-async",
            },
        )
    assert accepted.status_code == 202, accepted.text


async def test_an_alert_queued_when_its_process_was_killed_is_sent_after_the_restart(
    database_url: str, fake_n8n: tuple[FakeN8n, str], receiver: tuple[AlertReceiver, str]
) -> None:
    alerts, url = receiver
    tenant = f"alerts-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    key = f"killed-{uuid.uuid4()}"
    # Alerts are looked for when the process starts, then not for 30 s: the dead letter's
    # alert stays queued, unsent, until the kill.
    victim = Gateway(alert_env(database_url, fake_n8n[1], url, GATE_DELIVERY_POLL_SECONDS="30"))
    try:
        await dead_letter(victim, api_key, key)
        await until_alert(database_url, tenant, key, "pending")
    finally:
        victim.stop(signal.SIGKILL)
    assert alerts.for_key(key) == []
    successor = Gateway(alert_env(database_url, fake_n8n[1], url))
    try:
        delivered = await until_alert(database_url, tenant, key, "delivered")
    finally:
        successor.stop()
    assert delivered.sends == 1
    (sent,) = alerts.for_key(key)
    assert (sent.status, sent.document["type"]) == (200, "execution.dead_letter")


async def test_an_alert_cut_mid_send_by_kill_9_is_sent_again_under_the_same_id(
    database_url: str, fake_n8n: tuple[FakeN8n, str], receiver: tuple[AlertReceiver, str]
) -> None:
    alerts, url = receiver
    tenant = f"alerts-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    key = f"cut-{uuid.uuid4()}"
    # A send's lease is GATE_LEASE_SECONDS + GATE_ALERT_TIMEOUT_SECONDS: 3 s.
    env = alert_env(
        database_url,
        fake_n8n[1],
        url,
        GATE_LEASE_SECONDS="1",
        GATE_LEASE_RENEW_SECONDS="0.3",
        GATE_ALERT_TIMEOUT_SECONDS="2",
    )
    alerts.hold()
    victim = Gateway(env)
    try:
        await dead_letter(victim, api_key, key)
        await alerts.until_received(key, status=None)  # the send is in flight, unanswered
    finally:
        victim.stop(signal.SIGKILL)
        alerts.release()
    successor = Gateway(env)
    try:
        delivered = await until_alert(database_url, tenant, key, "delivered")
    finally:
        successor.stop()
    assert delivered.sends == 2
    cut, resent = alerts.for_key(key)
    assert cut.headers["webhook-id"] == resent.headers["webhook-id"] == f"msg_alert_{delivered.id}"
    assert resent.status == 200
    assert [row.idempotency_key for row in await alert_rows(database_url, tenant)] == [key]
