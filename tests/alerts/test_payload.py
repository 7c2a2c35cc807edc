"""What an alert says, as a pure function of the alert row and the public URL."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from app.alerts.payload import MAX_DETAIL_CHARS, body, document, link_for
from app.alerts.repo import Alert

ALERT = Alert(
    id=7,
    tenant_id=uuid.uuid4(),
    tenant_name="acme",
    type="execution.dead_letter",
    execution_id=42,
    attempt=1,
    idempotency_key="a<b>&c/d e",
    workflow="webhook/orders",
    error_type="n8n-refused",
    error_detail="n8n refused the request",
    n8n_status=403,
    outcome_unknown=False,
    occurred_at=datetime(2026, 12, 6, 13, 0, tzinfo=timezone(timedelta(hours=2))),
    sends=1,
)


def test_the_link_encodes_the_key_under_the_public_url_or_is_the_api_path() -> None:
    assert link_for("a/b c?", public_url="https://gate.example.com/") == (
        "https://gate.example.com/ui/executions/a%2Fb%20c%3F"
    )
    assert link_for("a/b c?", public_url="https://ops.example.com/gate") == (
        "https://ops.example.com/gate/ui/executions/a%2Fb%20c%3F"
    )
    assert link_for("a/b c?", public_url=None) == "/v1/executions/a%2Fb%20c%3F"


def test_the_text_is_one_line_escaped_for_slack_and_the_fields_are_not() -> None:
    sent = document(ALERT, public_url=None)
    assert sent["text"] == (
        "Dead letter: webhook/orders failed after 1 attempt (n8n-refused). "
        "Key 'a&lt;b&gt;&amp;c/d e', tenant acme. /v1/executions/a%3Cb%3E%26c%2Fd%20e"
    )
    assert sent["key"] == "a<b>&c/d e"
    assert sent["occurred_at"] == "2026-12-06T11:00:00+00:00"


def test_an_unknown_outcome_says_n8n_may_have_run_it() -> None:
    alert = replace(ALERT, type="execution.outcome_unknown", outcome_unknown=True, attempt=2)
    text = document(alert, public_url=None)["text"]
    assert isinstance(text, str)
    assert text.startswith(
        "Outcome unknown: webhook/orders, attempt 2 (n8n-refused; n8n may have run it). "
    )


def test_the_error_detail_is_bounded_and_the_body_is_json() -> None:
    alert = replace(ALERT, error_detail="x" * 5000, error_type=None, n8n_status=None)
    sent = json.loads(body(alert, public_url="https://gate.example.com"))
    assert sent["error"] == {"type": None, "detail": "x" * MAX_DETAIL_CHARS}
    assert sent["n8n_status"] is None
    assert "(error)" in sent["text"]
    assert datetime.fromisoformat(sent["occurred_at"]).tzinfo == UTC
