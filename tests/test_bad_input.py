"""Bad numbers in headers and query strings: a 400, or ignored where the standard says so,
never a 500 (issue 14, item 10)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from app.delivery.backoff import parse_retry_after
from tests.conftest import ClientFactory
from tests.support.executions_api import new_key
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem


@pytest.mark.parametrize("wait", ["²", "1" * 5000, "-1", "1e3", ""])
async def test_a_wait_preference_that_is_no_number_is_ignored(
    client: httpx.AsyncClient, wait: str
) -> None:
    """RFC 7240: a preference the server does not understand is ignored."""
    answer = await client.post(
        "/webhook/echo",
        json={},
        # Header bytes are latin-1: "²" arrives as the one character that isdigit() accepts.
        headers={"Idempotency-Key": new_key(), "Prefer": f"wait={wait}".encode("latin-1")},
    )
    assert answer.status_code == 200
    assert "preference-applied" not in answer.headers


@pytest.mark.parametrize("value", ["v1:99999999999999999999", "v1:²", "v1:" + "9" * 5000, "v1:-5"])
async def test_a_forged_cursor_is_400(client: httpx.AsyncClient, value: str) -> None:
    cursor = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    answer = await client.get("/v1/executions", params={"cursor": cursor[:200]})
    assert_problem(answer, 400, "invalid-request")


@pytest.mark.parametrize("value", ["²", "1" * 5000, "٣"])
def test_a_retry_after_that_is_no_number_or_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None


async def test_a_body_that_stops_arriving_is_408_and_not_forwarded(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    never = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"half": '
        await never.wait()  # the rest never comes
        yield b"1}"

    async with make_client(body_timeout_seconds=0.2) as client:
        answer = await client.post(
            "/webhook/echo", content=trickle(), headers={"Idempotency-Key": key}
        )
    assert_problem(answer, 408, "request-timeout")
    assert n8n.calls_for(key) == []
