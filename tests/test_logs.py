"""One logging setup: request ids on every answer and forwarded to n8n, and JSON lines with the
request's context from a real serving process, with nothing secret in them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import new_api_key
from tests.support.executions_api import new_key, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import ROOT, Gateway, cli_env


async def test_a_request_id_is_kept_or_made_and_reaches_n8n(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    sent = await client.post(
        "/webhook/echo", json={}, headers={"Idempotency-Key": key, "X-Request-Id": "req-42.a"}
    )
    assert sent.headers["x-request-id"] == "req-42.a"
    assert n8n.calls_for(key)[0].headers["x-request-id"] == "req-42.a"

    made = await client.get("/v1/executions", headers={"X-Request-Id": "bad id\twith space"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert (await client.get("/healthz")).headers["x-request-id"] != made.headers["x-request-id"]

    later = new_key()
    accepted = await client.post(
        "/webhook/echo",
        json={},
        headers={"Idempotency-Key": later, "Prefer": "respond-async", "X-Request-Id": "async-1"},
    )
    assert accepted.headers["x-request-id"] == "async-1"
    await until_status(client, later, "completed")
    assert n8n.calls_for(later)[0].headers["x-request-id"] == "async-1"


@pytest.mark.slow
async def test_a_serving_process_logs_json_lines_with_the_requests_context(
    database_url: str, n8n: FakeN8n, fake_n8n: tuple[FakeN8n, str]
) -> None:
    tenant = f"logs-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    key = new_key()
    env = cli_env(DATABASE_URL=database_url, N8N_BASE_URL=fake_n8n[1], GATE_LOG_FORMAT="json")
    gateway = Gateway(env)
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as client:
            answer = await client.post(
                "/webhook/fail?token=query-secret",
                json={"card": "4242424242424242"},
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Idempotency-Key": key,
                    "X-Request-Id": "req-json-1",
                },
            )
    finally:
        gateway.stop()
    assert answer.status_code == 500
    output = gateway.output()
    lines = [line for line in output.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records, output
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    failed = next(record for record in records if record.get("idempotency_key") == key)
    assert failed["level"] == "WARNING"
    assert failed["logger"] == "app.executions.runner"
    assert failed["request_id"] == "req-json-1"
    assert failed["tenant"] == tenant
    assert failed["workflow"] == "webhook/fail"
    assert failed["attempt"] == 1
    assert isinstance(failed["execution_id"], int)
    assert failed["error_type"] == "n8n-error"
    access = [record for record in records if record["logger"] == "uvicorn.access"]
    assert any("/webhook/fail" in record["message"] for record in access)
    for secret in (api_key, api_key.split("_")[-1], "4242424242424242", "query-secret"):
        assert secret not in output


def test_a_callers_tracestate_writes_no_log_line() -> None:
    """OpenTelemetry warns of a malformed tracestate member quoting it, before any API key is
    checked: with the gateway's logging, a caller cannot write lines of its own text."""
    script = (
        "import logging.config\n"
        "from app.logs import log_config\n"
        "logging.config.dictConfig(log_config('INFO'))\n"
        "from opentelemetry.trace.span import TraceState\n"
        "TraceState.from_header(['ok=1,INJECTED-by-a-caller'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "INJECTED" not in done.stdout + done.stderr
