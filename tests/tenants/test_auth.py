"""API keys and tenant isolation, seen from the HTTP edge."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from app.tenants import repo
from tests.conftest import ClientFactory, new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer nonsense",
        "Bearer n8ng_000000000000_" + "x" * 43,
    ],
)
async def test_every_api_endpoint_needs_a_valid_key(
    make_client: ClientFactory, n8n: FakeN8n, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    key = f"key-{uuid.uuid4()}"
    async with make_client(api_key=None) as anonymous:
        for method, path in [
            ("POST", "/webhook/echo"),
            ("POST", "/webhook-test/echo"),
            ("GET", "/v1/executions"),
            ("GET", f"/v1/executions/{key}"),
        ]:
            response = await anonymous.request(
                method, path, headers={**headers, "Idempotency-Key": key}
            )
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert n8n.calls_for(key) == []


async def test_a_key_with_a_wrong_secret_is_refused(
    make_client: ClientFactory, api_key: str
) -> None:
    tampered = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    async with make_client(api_key=tampered) as client:
        assert_problem(await client.get("/v1/executions"), 401, "unauthorized")


async def test_a_revoked_key_is_refused(make_client: ClientFactory, database_url: str) -> None:
    api_key = await new_api_key(database_url)
    async with make_client(api_key=api_key, auth_cache_seconds=0) as client:
        assert (await client.get("/v1/executions")).status_code == 200
        conn = await asyncpg.connect(database_url)
        try:
            assert await repo.revoke_key(conn, prefix=api_key.split("_")[1])
        finally:
            await conn.close()
        assert_problem(await client.get("/v1/executions"), 401, "unauthorized")


async def test_tenants_never_see_or_replay_each_others_executions(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n
) -> None:
    shared_key = f"shared-{uuid.uuid4()}"
    key_a, key_b = await new_api_key(database_url), await new_api_key(database_url)
    as_a = {"Authorization": f"Bearer {key_a}", "Idempotency-Key": shared_key}
    as_b = {"Authorization": f"Bearer {key_b}", "Idempotency-Key": shared_key}
    async with make_client(api_key=None) as gateway:  # one process: one cache for both
        a = await gateway.post("/webhook/echo", json={"tenant": "a"}, headers=as_a)
        for _ in range(2):  # tenant A's execution is now in the process's replay cache too
            await gateway.post("/webhook/echo", json={"tenant": "a"}, headers=as_a)
        assert (await gateway.get(f"/v1/executions/{shared_key}", headers=as_b)).status_code == 404
        assert (await gateway.get("/v1/executions", headers=as_b)).json()["items"] == []

        b = await gateway.post("/webhook/echo", json={"tenant": "b"}, headers=as_b)
        assert "idempotent-replayed" not in b.headers
        assert b.json()["received"] == {"tenant": "b"}
        assert a.json()["received"] == {"tenant": "a"}
        again_b = await gateway.post("/webhook/echo", json={"tenant": "b"}, headers=as_b)
        assert again_b.json()["received"] == {"tenant": "b"}
    assert len(n8n.calls_for(shared_key)) == 2


@pytest.mark.parametrize("prefer", [None, "respond-async"])
async def test_with_the_key_in_n8n_gate_key_authorization_reaches_n8n(
    make_client: ClientFactory, api_key: str, n8n: FakeN8n, prefer: str | None
) -> None:
    # n8n's Basic, JWT and Header Auth webhooks read Authorization: it must pass through.
    key = f"key-{uuid.uuid4()}"
    headers = {"N8n-Gate-Key": api_key, "Authorization": "Basic dXNlcjpwYXNz"}
    headers |= {"Idempotency-Key": key} | ({"Prefer": prefer} if prefer else {})
    async with make_client(api_key=None, delivery_poll_seconds=0.05) as anonymous:
        response = await anonymous.post("/webhook/echo", json={}, headers=headers)
        assert response.status_code == (202 if prefer else 200), response.text
        status = await anonymous.get(f"/v1/executions/{key}", headers={"N8n-Gate-Key": api_key})
        assert status.status_code == 200
        deadline = asyncio.get_running_loop().time() + 10
        while not n8n.calls_for(key):  # an async trigger is delivered by the workers
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    [call] = n8n.calls_for(key)
    assert call.headers["authorization"] == "Basic dXNlcjpwYXNz"
    assert "n8n-gate-key" not in call.headers


async def test_a_wrong_n8n_gate_key_is_refused_whatever_authorization_holds(
    make_client: ClientFactory, api_key: str, n8n: FakeN8n
) -> None:
    key = f"key-{uuid.uuid4()}"
    headers = {"N8n-Gate-Key": "n8ng_000000000000_" + "x" * 43, "Idempotency-Key": key}
    async with make_client(api_key=api_key) as client:  # a valid key in Authorization
        response = await client.post("/webhook/echo", json={}, headers=headers)
        assert_problem(response, 401, "unauthorized")
        listed = await client.get("/v1/executions", headers={"N8n-Gate-Key": ""})
        assert_problem(listed, 401, "unauthorized")
    assert n8n.calls_for(key) == []
