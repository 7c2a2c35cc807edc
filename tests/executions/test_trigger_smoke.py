from __future__ import annotations

import httpx

from tests.fake_n8n import FakeN8n


async def test_first_call_is_forwarded_and_retry_is_replayed(client: httpx.AsyncClient, n8n: FakeN8n) -> None:
    first = await client.post("/webhook/echo", json={"order": 1}, headers={"Idempotency-Key": "k-1"})
    second = await client.post("/webhook/echo", json={"order": 1}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert first.json()["received"] == {"order": 1}
    assert second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(n8n.calls_for("k-1")) == 1
