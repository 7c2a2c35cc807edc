"""Completed executions kept in memory, so replays need no database round trip.

A completed execution never changes, so a copy cannot go stale while the key lives. An entry
is dropped when the key's retention ends (the database's clock set `expires_at`) and after
`ttl_seconds` in any case. Bounded by total body bytes; least recently used entries go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from uuid import UUID

from app.executions.repo import ExecutionRow

ENTRY_OVERHEAD_BYTES = 1024


class CompletedExecutions:
    def __init__(self, *, max_bytes: int, ttl_seconds: float) -> None:
        self._max_bytes = max_bytes
        self._ttl_seconds = ttl_seconds
        self._entries: OrderedDict[tuple[UUID, str], tuple[ExecutionRow, float, int]] = (
            OrderedDict()
        )
        self._bytes = 0

    def get(self, tenant_id: UUID, key: str) -> ExecutionRow | None:
        entry = self._entries.get((tenant_id, key))
        if entry is None:
            return None
        row, expires_at, _ = entry
        if expires_at < time.monotonic() or _key_expired(row):
            self._drop((tenant_id, key))
            return None
        self._entries.move_to_end((tenant_id, key))
        return row

    def put(self, tenant_id: UUID, row: ExecutionRow) -> None:
        assert row.status == "completed", "only completed executions are immutable"
        size = len(row.response_body or b"") + ENTRY_OVERHEAD_BYTES
        if size > self._max_bytes // 8:
            return  # one large body must not evict everything else
        cache_key = (tenant_id, row.idempotency_key)
        self._drop(cache_key)
        self._entries[cache_key] = (row, time.monotonic() + self._ttl_seconds, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, cache_key: tuple[UUID, str]) -> None:
        entry = self._entries.pop(cache_key, None)
        if entry is not None:
            self._bytes -= entry[2]


def _key_expired(row: ExecutionRow) -> bool:
    """Past the row's retention the key is new again, cached copy or not."""
    return row.expires_at is not None and row.expires_at <= datetime.now(UTC)
