"""The server edge of a real `n8n-gate serve` process: request heads are bounded in size and in
time, without a key (issue 14, items 6 and 7)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env

pytestmark = pytest.mark.slow


@pytest.fixture
def gateway(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> Iterator[Gateway]:
    env = cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_ACCESS_LOG="false",
        GATE_HEAD_TIMEOUT_SECONDS="1",
    )
    gateway = Gateway(env)
    yield gateway
    gateway.stop()


async def test_a_64_mib_header_is_refused_at_once_and_others_are_served_meanwhile(
    gateway: Gateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    started = time.monotonic()

    async def bomb() -> None:
        writer.write(b"POST /webhook/echo HTTP/1.1\r\nHost: gate\r\nX-Bomb: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(64):
                writer.write(b"a" * (1024 * 1024))
                await writer.drain()

    sending = asyncio.create_task(bomb())
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=1) as client:
        health = await client.get("/healthz")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    answered = time.monotonic() - started
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    await close(writer)
    assert health.status_code == 200
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"application/problem+json" in head
    assert answered < 3


async def test_a_head_over_the_bound_sent_in_one_write_is_431_too(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gate\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    await close(writer)
    assert head.startswith(b"HTTP/1.1 431 ")


async def test_connections_that_stop_in_the_middle_of_a_head_are_closed(
    gateway: Gateway,
) -> None:
    connections = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(200)]
    for _, writer in connections:
        writer.write(b"POST /webhook/echo HTTP/1.1\r\nHost: gate\r\nIdempotency-")
    started = time.monotonic()
    closed = await asyncio.gather(
        *(asyncio.wait_for(reader.read(), 10) for reader, _ in connections)
    )
    for _, writer in connections:
        await close(writer)
    assert closed == [b""] * 200  # closed without an answer, after the head timeout (1 s)
    assert time.monotonic() - started < 10


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_requests_within_the_bounds_are_served(
    gateway: Gateway, database_url: str, n8n: FakeN8n
) -> None:
    """A 12 KiB header and a 1 MiB body sent in one write pass the head bound."""
    api_key = await new_api_key(database_url)
    key = f"bounds-{uuid.uuid4()}"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        answer = await client.post(
            "/webhook/echo",
            content=b'{"big": "' + b"x" * (1024 * 1024) + b'"}',
            headers={
                "Authorization": f"Bearer {api_key}",
                "Idempotency-Key": key,
                "Content-Type": "application/json",
                "X-Large": "y" * (12 * 1024),
            },
        )
    assert answer.status_code == 200
    assert n8n.calls_for(key)[0].headers["x-large"] == "y" * (12 * 1024)
