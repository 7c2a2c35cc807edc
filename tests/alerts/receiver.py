"""A stand-in for whatever receives the gateway's alerts (an n8n workflow's webhook, Slack):
it records every request and answers the statuses it is given in turn, then 200; held, it
answers nothing until released. Plus reading the alerts table as its owner."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread

HOLD_AT_MOST_SECONDS = 60.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None while held, or when the sender went away first

    @property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class AlertReceiver:
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _released: asyncio.Event | None = None

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._receive, methods=["POST"])],
            lifespan=self._lifespan,
        )

    def hold(self) -> None:
        """Answer nothing until released."""
        assert self._loop is not None
        assert self._released is not None
        self._loop.call_soon_threadsafe(self._released.clear)

    def release(self) -> None:
        assert self._loop is not None
        assert self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        self._released.set()
        yield

    def for_key(self, key: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.document.get("key") == key]

    async def until_received(
        self, key: str, *, count: int = 1, status: int | None = 200, within: float = 15.0
    ) -> list[Received]:
        """The requests for `key` once `count` of them were answered `status` (or arrived,
        with `status=None`)."""
        deadline = time.monotonic() + within
        while True:
            got = self.for_key(key)
            if sum(1 for r in got if status is None or r.status == status) >= count:
                return got
            assert time.monotonic() < deadline, f"alerts for {key}: {got}"
            await asyncio.sleep(0.02)

    async def _receive(self, request: Request) -> Response:
        received = Received(
            headers={k.lower(): v for k, v in request.headers.items()}, body=await request.body()
        )
        with self._lock:
            self.received.append(received)
            status = self.answers.pop(0) if self.answers else 200
        assert self._released is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), HOLD_AT_MOST_SECONDS)
        headers = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= status < 400 else {}
        received.status = status
        return Response(b"x" * 100_000, status_code=status, headers=headers)


@contextmanager
def alert_receiver() -> Iterator[tuple[AlertReceiver, str]]:
    receiver = AlertReceiver()
    with serve_in_thread(receiver.app) as base_url:
        yield receiver, f"{base_url}/hooks/alerts"


@dataclass(frozen=True)
class AlertRow:
    id: int
    execution_id: int
    type: str
    idempotency_key: str
    status: str
    sends: int
    outcome_unknown: bool
    last_error: str | None


async def alert_rows(database_url: str, tenant: str) -> list[AlertRow]:
    """The tenant's alerts, oldest first, read as the table's owner."""
    conn = await asyncpg.connect(database_url)
    try:
        records = await conn.fetch(
            "SELECT a.id, a.execution_id, a.type, a.idempotency_key, a.status, a.sends, "
            "a.outcome_unknown, a.last_error "
            "FROM alerts a JOIN tenants t ON t.id = a.tenant_id WHERE t.name = $1 ORDER BY a.id",
            tenant,
        )
    finally:
        await conn.close()
    return [AlertRow(**dict(record)) for record in records]


async def until_alert(
    database_url: str, tenant: str, key: str, status: str, *, within: float = 15.0
) -> AlertRow:
    deadline = time.monotonic() + within
    while True:
        rows = [row for row in await alert_rows(database_url, tenant) if row.idempotency_key == key]
        if rows and rows[-1].status == status:
            return rows[-1]
        assert time.monotonic() < deadline, f"alert for {key}: {rows}"
        await asyncio.sleep(0.05)


async def signing_secret(database_url: str, tenant: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        secret: str = await conn.fetchval(
            "SELECT s.secret FROM signing_secrets s JOIN tenants t ON t.id = s.tenant_id "
            "WHERE t.name = $1 ORDER BY s.id DESC LIMIT 1",
            tenant,
        )
    finally:
        await conn.close()
    return secret
