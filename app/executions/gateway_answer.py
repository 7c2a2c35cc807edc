"""What the caller of a trigger gets: n8n's answer, fresh or replayed from the record."""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.executions.repo import ExecutionRow
from app.memory import Body

# On a replay whose body was stored cut short (GATE_MAX_STORED_BODY_BYTES): its whole size.
TRUNCATED_HEADER = "N8n-Gate-Body-Truncated"


@dataclass(frozen=True)
class GatewayAnswer:
    status: int
    content_type: str | None
    headers: list[tuple[str, str]]
    body: bytes | Body  # Body: fresh from n8n, charged to the budget or on disk
    replayed: bool


def replay_answer(row: ExecutionRow) -> GatewayAnswer:
    assert row.response_status is not None
    headers = [(name, value) for name, value in json.loads(row.response_headers or "[]")]
    body = row.response_body or b""
    if row.response_body_bytes is not None and row.response_body_bytes > len(body):
        headers.append((TRUNCATED_HEADER, str(row.response_body_bytes)))
    return GatewayAnswer(
        status=row.response_status,
        content_type=row.response_content_type,
        headers=headers,
        body=body,
        replayed=True,
    )
