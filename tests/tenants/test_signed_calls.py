"""Every call the gateway makes to n8n is signed (Standard Webhooks) with its tenant's secret;
verified here with `hmac`, as a workflow would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import pytest

from app import db
from app.tenants.signing import SigningSecrets
from tests.conftest import ClientFactory, new_api_key
from tests.support.executions_api import new_key, until_status
from tests.support.fake_n8n import Call, FakeN8n
from tests.support.processes import cli_env
from tests.test_cli import run_cli


def live_secrets(database_url: str, tenant: str, *args: str) -> list[str]:
    result = run_cli(
        "keys", "signing-secret", "--tenant", tenant, *args, env=cli_env(DATABASE_URL=database_url)
    )
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()]


def verifies(call: Call, secret: str) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{call.headers['webhook-id']}.{call.headers['webhook-timestamp']}.".encode()
    expected = base64.b64encode(hmac.new(key, signed + call.body, hashlib.sha256).digest())
    offered = [
        value.removeprefix("v1,").encode() for value in call.headers["webhook-signature"].split()
    ]
    return any(hmac.compare_digest(expected, signature) for signature in offered)


async def test_a_trigger_reaches_n8n_signed_and_a_callers_signature_is_not_believed(
    make_client: ClientFactory, n8n: FakeN8n, database_url: str
) -> None:
    tenant = f"signed-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    key = new_key()
    forged = {
        "webhook-id": "msg_forged",
        "webhook-signature": "v1,Zm9yZ2Vk",
        "svix-id": "msg_forged",
        "svix-signature": "v1,Zm9yZ2Vk",
    }
    async with make_client(api_key=api_key) as gateway:
        answer = await gateway.post(
            "/webhook/echo", json={"n": 1}, headers={"Idempotency-Key": key, **forged}
        )
    assert answer.status_code == 200
    (call,) = n8n.calls_for(key)
    (secret,) = live_secrets(database_url, tenant)
    assert call.headers["webhook-id"].startswith("msg_")
    assert call.headers["webhook-id"] != "msg_forged"
    assert "svix-signature" not in call.headers
    assert abs(int(call.headers["webhook-timestamp"]) - time.time()) < 60
    assert verifies(call, secret)
    assert not verifies(
        call, "whsec_" + base64.b64encode(b"another secret of 32 bytes!!!!!").decode()
    )


async def test_during_a_rotation_both_secrets_verify_and_async_deliveries_are_signed(
    make_client: ClientFactory, n8n: FakeN8n, database_url: str
) -> None:
    tenant = f"rotated-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    (old,) = live_secrets(database_url, tenant)
    new, previous = live_secrets(database_url, tenant, "--rotate", "--overlap-seconds", "3600")
    refused = run_cli(
        *("keys", "signing-secret", "--tenant", tenant, "--rotate", "--overlap-seconds", "nan"),
        env=cli_env(DATABASE_URL=database_url),
    )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert previous == old
    assert new != old
    key = new_key()
    async with make_client(api_key=api_key) as gateway:
        accepted = await gateway.post(
            "/webhook/echo",
            json={"n": 2},
            headers={"Idempotency-Key": key, "Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        await until_status(gateway, key, "completed")
    (call,) = n8n.calls_for(key)
    assert len(call.headers["webhook-signature"].split()) == 2
    assert verifies(call, new)
    assert verifies(call, old)
    # Asked for no overlap, the previous secret still signs for the minute processes may
    # hold it in their caches.
    latest, *still = live_secrets(database_url, tenant, "--rotate", "--overlap-seconds", "0")
    assert latest not in (old, new)
    assert new in still


async def test_a_delivery_whose_secrets_cannot_be_read_is_not_sent_and_runs_later(
    make_client: ClientFactory,
    n8n: FakeN8n,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_of = SigningSecrets.of
    failures = 1

    async def away_once(self: SigningSecrets, tenant_id: uuid.UUID) -> tuple[str, ...]:
        nonlocal failures
        if failures:
            failures -= 1
            raise db.DatabaseUnreachable("the database went away")
        return await real_of(self, tenant_id)

    monkeypatch.setattr(SigningSecrets, "of", away_once)
    key = new_key()
    settings = {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.1}
    async with make_client(**settings) as gateway:
        accepted = await gateway.post(
            "/webhook/echo",
            json={"n": 3},
            headers={"Idempotency-Key": key, "Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        status = await until_status(gateway, key, "completed")
    first, second = status["attempt_history"]  # type: ignore[misc]
    assert first["outcome"] == "failed"
    assert first["error"]["type"] == "signing-secret-unavailable"
    assert second["outcome"] == "completed"
    (call,) = n8n.calls_for(key)
    assert "webhook-signature" in call.headers
