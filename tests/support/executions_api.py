"""Reading executions the way a client does: through the status endpoint."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def status_of(client: httpx.AsyncClient, key: str) -> dict[str, object]:
    response = await client.get(f"/v1/executions/{key}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def until_status(
    client: httpx.AsyncClient,
    key: str,
    status: str,
    *,
    attempts: int | None = None,
    within: float = 10.0,
) -> dict[str, object]:
    """Poll until the execution has `status` (after `attempts` attempts, when given)."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/v1/executions/{key}")
        body: dict[str, object] = response.json()
        if body.get("status") == status and attempts in (None, body.get("attempts")):
            return body
        assert time.monotonic() < deadline, f"{key} stayed {body.get('status')}"
        await asyncio.sleep(0.02)
