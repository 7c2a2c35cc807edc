"""A real `n8n-gate serve` process holds at most its budget of bytes for requests in flight, and
a caller that does not read its answer is cut off in time (issue 14, item 9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import new_api_key
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


@pytest.fixture
def gateway(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> Iterator[Gateway]:
    env = cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        GATE_ACCESS_LOG="false",
        GATE_MAX_BODY_BYTES=str(9 * MIB),
        GATE_MAX_BYTES_IN_FLIGHT=str(12 * MIB),
        GATE_MAX_STORED_BODY_BYTES=str(9 * MIB),
        GATE_SEND_TIMEOUT_SECONDS="2",
        GATE_SEND_MIN_BYTES_PER_SECOND=str(64 * MIB),
    )
    gateway = Gateway(env)
    yield gateway
    gateway.stop()


@pytest.fixture
async def api_key(database_url: str) -> str:
    return await new_api_key(database_url, f"memory-{uuid.uuid4().hex[:8]}")


def headers(api_key: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}


def echo_body(size: int) -> bytes:
    return json.dumps("x" * size).encode()


async def test_bodies_waiting_for_n8n_hold_the_budget_and_one_more_is_refused(
    gateway: Gateway, n8n: FakeN8n, api_key: str
) -> None:
    n8n.hold_slow()
    body = echo_body(5 * MIB)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        first = asyncio.create_task(
            client.post("/webhook/slow", content=body, headers=headers(api_key, "waits-1"))
        )
        await until(lambda: n8n.slow_in_flight == 1)
        second = asyncio.create_task(
            client.post("/webhook/slow", content=body, headers=headers(api_key, "waits-2"))
        )
        await until(lambda: n8n.slow_in_flight == 2)
        refused = await client.post(
            "/webhook/echo", content=body, headers=headers(api_key, "one-too-many")
        )
        n8n.release_slow()
        answers = await asyncio.gather(first, second)
        again = await client.post(
            "/webhook/echo", content=body, headers=headers(api_key, "one-too-many")
        )
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith(":gateway-busy")
    assert refused.headers["retry-after"] == "1"
    assert [answer.status_code for answer in answers] == [200, 200]
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert len(n8n.calls_for("one-too-many")) == 1


async def test_a_caller_that_reads_nothing_is_cut_off_and_its_answer_given_back(
    gateway: Gateway, n8n: FakeN8n, api_key: str
) -> None:
    big = f"/webhook/large?bytes={8 * MIB}"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        stored = await client.post(big, headers=headers(api_key, "big"))
        assert stored.status_code == 200
        stalled = stalled_reader(gateway.port, api_key, key="big", body=b"", path=big[9:])
        stalled.recv(1, socket.MSG_PEEK)  # its answer has started: the gateway holds it
        started = time.monotonic()
        small = await client.post(
            "/webhook/echo", content=b'"small"', headers=headers(api_key, "small")
        )
        busy = await client.post(big, headers={**headers(api_key, "big"), "Prefer": "wait=5"})

        async def replayed() -> httpx.Response | None:
            answer = await client.post(big, headers=headers(api_key, "big"))
            return None if answer.status_code == 503 else answer

        replay = await eventually(replayed, within=10)
        freed_after = time.monotonic() - started
    received = drain(stalled)
    assert small.status_code == 200
    assert busy.status_code == 503
    assert busy.json()["type"].endswith(":gateway-busy")
    assert busy.headers["location"] == "/v1/executions/big"
    assert busy.headers["n8n-gate-execution"] == "/v1/executions/big"
    assert busy.headers["preference-applied"] == "wait=5"
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == stored.content
    assert freed_after < 2 + 3  # GATE_SEND_TIMEOUT_SECONDS, and slack for a busy machine
    assert received < len(stored.content)  # the stalled caller's connection was dropped
    assert len(n8n.calls_for("big")) == 1


async def test_a_fresh_answer_over_the_budget_waits_on_disk_and_arrives_whole(
    gateway: Gateway, n8n: FakeN8n, api_key: str
) -> None:
    """The workflow ran: its answer is not refused, and waits for its caller on disk (an
    unlinked file the gateway holds open) when memory is spoken for."""
    path = f"large?bytes={10 * MIB}"
    in_memory = stalled_reader(gateway.port, api_key, key="holds-10", body=b"", path=path)
    in_memory.recv(1, socket.MSG_PEEK)
    assert spooled_files(gateway) == []
    on_disk = stalled_reader(gateway.port, api_key, key="spooled", body=b"", path=path)
    on_disk.recv(1, socket.MSG_PEEK)
    spooled = spooled_files(gateway)
    in_memory.close()
    status, body = read_answer(on_disk)
    assert spooled == [10 * MIB]
    assert status == 200
    assert body == b"\x00" * (10 * MIB)
    assert len(n8n.calls_for("spooled")) == 1


async def test_a_declared_length_holds_nothing_until_its_bytes_arrive(
    gateway: Gateway, api_key: str
) -> None:
    """Else a few bytes declaring large bodies would shut every tenant out."""
    liars = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(4)]
    for liar in liars:
        liar.sendall(
            f"POST /webhook/echo HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {api_key}\r\n"
            f'Idempotency-Key: liar\r\nContent-Length: {9 * MIB}\r\n\r\n"'.encode()
        )
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        honest = await client.post(
            "/webhook/echo", content=echo_body(5 * MIB), headers=headers(api_key, "honest")
        )
    for liar in liars:
        liar.close()
    assert honest.status_code == 200


def spooled_files(gateway: Gateway) -> list[int]:
    """The sizes of the unlinked temporary files the gateway process holds open."""
    sizes = []
    for fd in Path(f"/proc/{gateway.process.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).endswith("(deleted)"):
                sizes.append(fd.stat().st_size)
    return sizes


def stalled_reader(
    port: int, api_key: str, *, key: str, body: bytes, path: str = "echo"
) -> socket.socket:
    """Sends a trigger and reads nothing of the answer, with a small receive window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /webhook/{path} HTTP/1.1\r\nHost: gate\r\nAuthorization: Bearer {api_key}\r\n"
        f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.settimeout(10)
    sock.sendall(head.encode() + body)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """The rest of an answer, read as fast as it comes: its status and body."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        received += sock.recv(1 << 16)
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    body = bytearray(rest)
    while len(body) < length:
        body += sock.recv(1 << 20)
    sock.close()
    return int(head.split(b" ", 2)[1]), bytes(body)


def drain(sock: socket.socket) -> int:
    received = 0
    sock.settimeout(5)
    with contextlib.suppress(ConnectionError), sock:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    return received


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def eventually(
    attempt: Callable[[], Awaitable[httpx.Response | None]], *, within: float
) -> httpx.Response:
    """The first answer `attempt` accepts, asked again every 50 ms until `within` is up."""
    deadline = time.monotonic() + within
    while (answer := await attempt()) is None:
        assert time.monotonic() < deadline, "no accepted answer in time"
        await asyncio.sleep(0.05)
    return answer
