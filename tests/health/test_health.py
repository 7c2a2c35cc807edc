from __future__ import annotations

import httpx

from app.migrations import head_revision
from tests.conftest import ClientFactory


async def test_health_endpoints_need_no_key(make_client: ClientFactory) -> None:
    async with make_client(api_key=None) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "schema": head_revision()}


async def test_unknown_routes_are_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
