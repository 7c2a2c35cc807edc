"""GET /v1/executions/{key} and GET /v1/executions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
import pytest

from tests.support.problems import assert_problem


async def trigger(client: httpx.AsyncClient, path: str = "echo", key: str | None = None) -> str:
    key = key or f"key-{uuid.uuid4()}"
    await client.post(f"/webhook/{path}", json={"k": key}, headers={"Idempotency-Key": key})
    return key


async def test_status_shows_the_whole_execution(client: httpx.AsyncClient) -> None:
    key = await trigger(client)
    response = await client.get(f"/v1/executions/{key}")
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == key
    assert (body["workflow"], body["mode"], body["method"]) == ("echo", "webhook", "POST")
    assert (body["status"], body["attempts"], body["last_error"]) == ("completed", 1, None)
    assert body["response"]["status_code"] == 200
    assert body["response"]["content_type"] == "application/json; charset=utf-8"
    assert body["response"]["body_encoding"] == "utf-8"
    assert '"received":{"k":' in body["response"]["body"]
    created, finished = (datetime.fromisoformat(body[f]) for f in ("created_at", "finished_at"))
    assert created <= finished
    assert body["duration_ms"] >= 0
    assert body["lease_expires_at"] is None


async def test_unknown_key_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/executions/never-used")
    assert_problem(response, 404, "execution-not-found")


async def test_keys_with_slashes_and_spaces_can_be_looked_up(client: httpx.AsyncClient) -> None:
    key = await trigger(client, key="a/b c")
    response = await client.get("/v1/executions/a%2Fb%20c")
    assert response.json()["key"] == key


async def test_list_is_newest_first_and_filters_by_status_and_workflow(
    client: httpx.AsyncClient,
) -> None:
    ok = [await trigger(client) for _ in range(3)]
    failed = await trigger(client, path="fail")
    started = await trigger(client, path="started")

    everything = (await client.get("/v1/executions")).json()
    assert [item["key"] for item in everything["items"]] == [started, failed, *reversed(ok)]
    assert everything["next_cursor"] is None
    only_failed = (await client.get("/v1/executions", params={"status": "failed"})).json()
    assert [item["key"] for item in only_failed["items"]] == [failed]
    only_echo = (await client.get("/v1/executions", params={"workflow": "echo"})).json()
    assert [item["key"] for item in only_echo["items"]] == list(reversed(ok))
    assert "response" not in everything["items"][0]


async def test_pages_neither_repeat_nor_skip_while_new_executions_arrive(
    client: httpx.AsyncClient,
) -> None:
    older = [await trigger(client) for _ in range(7)]
    first_page = (await client.get("/v1/executions", params={"limit": 3})).json()
    newer = await asyncio.gather(*(trigger(client) for _ in range(4)))
    seen = [item["key"] for item in first_page["items"]]
    cursor = first_page["next_cursor"]
    while cursor:
        page = (await client.get("/v1/executions", params={"limit": 3, "cursor": cursor})).json()
        seen += [item["key"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(older))
    assert not set(newer) & set(seen)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "201"},
        {"limit": "0"},
        {"limit": "many"},
        {"status": "done"},
        {"cursor": "not-a-cursor"},
        {"cursor": "djI6MTA"},  # base64 of another version's cursor
    ],
)
async def test_bad_list_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/v1/executions", params=params)
    assert_problem(response, 400, "invalid-request")


async def test_limit_200_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/executions", params={"limit": 200})
    assert response.status_code == 200
