"""What an alert says: a small JSON document about the execution that ended, never its request
headers or body. `text` comes first, one line for a chat: a Slack incoming webhook shows it
(and refuses a message without it); an n8n workflow reads the fields."""

from __future__ import annotations

import json
from datetime import UTC
from urllib.parse import quote

from app.alerts.repo import Alert

# An error's detail is the gateway's own sentence (n8n's message in it is cut at 200 characters
# already); this bounds it whatever it holds.
MAX_DETAIL_CHARS = 1000
DEAD_LETTER = "execution.dead_letter"


def link_for(key: str, *, public_url: str | None) -> str:
    """The execution's dashboard page under the public URL; without one, its API path."""
    encoded = quote(key, safe="")
    if public_url is None:
        return f"/v1/executions/{encoded}"
    return f"{public_url.rstrip('/')}/ui/executions/{encoded}"


def document(alert: Alert, *, public_url: str | None) -> dict[str, object]:
    link = link_for(alert.idempotency_key, public_url=public_url)
    detail = alert.error_detail
    return {
        "text": summary(alert, link=link),
        "type": alert.type,
        "tenant": alert.tenant_name,
        "key": alert.idempotency_key,
        "workflow": alert.workflow,
        "execution_id": alert.execution_id,
        "attempts": alert.attempt,
        "outcome_unknown": alert.outcome_unknown,
        "error": {
            "type": alert.error_type,
            "detail": detail[:MAX_DETAIL_CHARS] if detail is not None else None,
        },
        "n8n_status": alert.n8n_status,
        "occurred_at": alert.occurred_at.astimezone(UTC).isoformat(),
        "link": link,
    }


def body(alert: Alert, *, public_url: str | None) -> bytes:
    return json.dumps(document(alert, public_url=public_url), ensure_ascii=False).encode()


def summary(alert: Alert, *, link: str) -> str:
    """One line: what ended, where, and why; `&`, `<` and `>` escaped as Slack asks."""
    attempts = f"{alert.attempt} attempt{'s' if alert.attempt != 1 else ''}"
    if alert.type == DEAD_LETTER:
        what = f"Dead letter: {alert.workflow} failed after {attempts}"
    else:
        what = f"Outcome unknown: {alert.workflow}, attempt {alert.attempt}"
    maybe_ran = "; n8n may have run it" if alert.outcome_unknown else ""
    line = (
        f"{what} ({alert.error_type or 'error'}{maybe_ran}). "
        f"Key {alert.idempotency_key!r}, tenant {alert.tenant_name}. {link}"
    )
    return _slack_escaped(line)


def _slack_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
