"""Claims, accepts and outcomes of concurrent triggers share commits (app/batching.py); each
caller must still get exactly its own answer, across tenants and keys that collide."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import httpx

from tests.conftest import ClientFactory, new_api_key
from tests.delivery.test_async import until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem

KEYS = 30


async def test_concurrent_triggers_of_two_tenants_each_get_their_own_answer(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"group-{run}-{i}" for i in range(KEYS)]
    tenants = {name: await new_api_key(database_url) for name in ("a", "b")}

    def headers(tenant: str, key: str) -> dict[str, str]:
        sent = {"Authorization": f"Bearer {tenants[tenant]}", "Idempotency-Key": key}
        if keys.index(key) % 2 == 0:
            sent["Prefer"] = "respond-async"
        return sent

    async def trigger(gateway: httpx.AsyncClient, tenant: str, key: str, body: object) -> int:
        response = await gateway.post("/webhook/echo", json=body, headers=headers(tenant, key))
        if response.status_code == 422:
            assert_problem(response, 422, "idempotency-key-reused")
        elif response.status_code == 200:
            assert response.json()["received"] == {"tenant": tenant, "key": key}
        return response.status_code

    async with make_client(api_key=None, db_batch_max_calls=8) as gateway:
        # Each key twice per tenant at once: one run, the duplicate replays or waits (409).
        firsts = await asyncio.gather(
            *(
                trigger(gateway, tenant, key, {"tenant": tenant, "key": key})
                for key in keys
                for tenant in tenants
                for _ in range(2)
            )
        )
        # The same keys again with another body, all at once: every one is refused.
        reused = await asyncio.gather(
            *(
                trigger(gateway, tenant, key, {"tenant": tenant, "key": "other"})
                for key in keys
                for tenant in tenants
            )
        )
        for api_key in tenants.values():
            gateway.headers["Authorization"] = f"Bearer {api_key}"
            for key in keys[::2]:
                await until_status(gateway, key, "completed")

    assert set(reused) == {422}
    assert Counter(firsts).keys() <= {200, 202, 409}
    assert Counter(firsts)[202] == 2 * KEYS  # async: the duplicate gets the same 202
    for key in keys:
        received = sorted(json.loads(call.body)["tenant"] for call in n8n.calls_for(key))
        assert received == ["a", "b"], key
