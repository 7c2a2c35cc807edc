"""The process's one LISTEN connection: it wakes requests that wait for an execution to finish
(RFC 7240 `Prefer: wait`), and this process's delivery workers when another accepted work.

It hears `n8n_gate_execution_finished`, which the database sends when any process records an
outcome for an execution someone waits on, and `n8n_gate_delivery_due`. If that connection
drops, every waiter is woken (it then re-reads the execution) and the listener reconnects, so a
lost notification costs a re-read, never a missed wake-up. A connection can also die without a
word: a NAT or firewall that drops an idle flow (AWS's NAT gateway after 350 s, Azure's load
balancer after 4 min) tells neither side until one of them sends, and notifications just stop.
So an idle listener sends a query every `HEARTBEAT_SECONDS`, which keeps such a flow alive and
finds a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import UUID

import asyncpg

from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CHANNEL = "n8n_gate_execution_finished"
# Accepted async executions, sent by a process that has no delivery workers of its own.
DELIVERY_CHANNEL = "n8n_gate_delivery_due"
RECONNECT_SECONDS = 1.0
HEARTBEAT_SECONDS = 30.0


class DatabaseNotifications:
    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: float,
        on_delivery_due: Callable[[], None],
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._heartbeat_seconds = heartbeat_seconds
        self._waiters: defaultdict[tuple[UUID, int], set[asyncio.Future[None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._on_delivery_due = on_delivery_due

    async def __aenter__(self) -> DatabaseNotifications:
        self._task = asyncio.create_task(self._listen_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel_and_wait(self._task)
        self._wake_all()

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    @asynccontextmanager
    async def subscription(
        self, tenant_id: UUID, execution_id: int
    ) -> AsyncIterator[asyncio.Future[None]]:
        """A future set when the execution finishes; subscribe before reading its state."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[(tenant_id, execution_id)].add(future)
        try:
            yield future
        finally:
            waiters = self._waiters.get((tenant_id, execution_id))
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[(tenant_id, execution_id)]

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                logger.warning("lost the LISTEN connection; reconnecting", exc_info=True)
            self._wake_all()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_once(self) -> None:
        # Every command is bounded too (LISTEN, the heartbeat): on a connection gone silent
        # any of them would otherwise wait forever.
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            command_timeout=self._connect_timeout,
            server_settings={"application_name": "n8n-gate"},
        )
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
            await conn.add_listener(DELIVERY_CHANNEL, self._on_delivery_notification)
            self._wake_all()  # anything that finished while we were not listening
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), self._heartbeat_seconds)
                    return
                await conn.execute("SELECT 1")
        except TimeoutError:
            conn.terminate()  # closing politely would wait on the dead connection too
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _on_notification(
        self,
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        pid: int,
        channel: str,
        payload: object,
    ) -> None:
        tenant, _, execution_id = str(payload).partition(" ")
        with contextlib.suppress(ValueError):
            self._wake((UUID(tenant), int(execution_id)))

    def _on_delivery_notification(
        self,
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        pid: int,
        channel: str,
        payload: object,
    ) -> None:
        self._on_delivery_due()

    def _wake(self, waited_on: tuple[UUID, int]) -> None:
        for future in self._waiters.pop(waited_on, set()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for waited_on in list(self._waiters):
            self._wake(waited_on)
        self._on_delivery_due()  # anything accepted elsewhere while we were not listening
