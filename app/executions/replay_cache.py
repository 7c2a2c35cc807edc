"""The replay cache: completed executions kept in memory, so replays need no database trip.

A completed execution never changes, so a copy cannot go stale while the key lives. An entry
is dropped when the key's retention ends (the database's clock set `expires_at`) and after
`ttl_seconds` in any case, looked up or not: each call sweeps the entries whose time is up.
Bounded by what the entries hold (body, headers, key and a measured overhead per entry), least
recently used first: counting only bodies let entries with large headers hold many times the
bound.

An entry is a plain tuple of the row's values under a key of plain values: the garbage collector
stops tracking those, where a row object and its key made three tracked objects per entry, and
a full collection walked them all while the process's requests waited.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

from app import metrics
from app.executions.repo import ExecutionRow

# The row's other values, the tuples and the two dicts' slots, rounded up from what
# tracemalloc shows (tests/executions/test_replay_cache.py holds the count to what it measures).
ENTRY_OVERHEAD_BYTES = 1024
_row_values = attrgetter(*(field.name for field in fields(ExecutionRow)))
CacheKey = tuple[int, str]


class ReplayCache:
    def __init__(
        self,
        *,
        max_bytes: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_bytes = max_bytes
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        # Least recently used first, and by time of entry (the same ttl for all: by expiry).
        self._entries: OrderedDict[CacheKey, tuple[tuple[Any, ...], int]] = OrderedDict()
        self._expiries: OrderedDict[CacheKey, float] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tenant_id: UUID, key: str) -> ExecutionRow | None:
        self._sweep()
        cache_key = (tenant_id.int, key)
        entry = self._entries.get(cache_key)
        if entry is None:
            metrics.replay_cache_looked_up(hit=False)
            return None
        row = ExecutionRow(*entry[0])
        if _key_expired(row):
            self._drop(cache_key)
            metrics.replay_cache_looked_up(hit=False)
            return None
        self._entries.move_to_end(cache_key)
        metrics.replay_cache_looked_up(hit=True)
        return row

    def put(self, tenant_id: UUID, row: ExecutionRow) -> None:
        assert row.status == "completed", "only completed executions are immutable"
        self._sweep()
        size = entry_bytes(row)
        if size > self._max_bytes // 8:
            return  # one large entry must not evict everything else
        cache_key = (tenant_id.int, row.idempotency_key)
        self._drop(cache_key)
        self._entries[cache_key] = (_row_values(row), size)
        self._expiries[cache_key] = self._clock() + self._ttl_seconds
        self.bytes += size
        while self.bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))
        metrics.REPLAY_CACHE_BYTES.set(self.bytes)

    def _sweep(self) -> None:
        now = self._clock()
        while self._expiries:
            cache_key, expires_at = next(iter(self._expiries.items()))
            if expires_at > now:
                return
            self._drop(cache_key)

    def _drop(self, cache_key: CacheKey) -> None:
        entry = self._entries.pop(cache_key, None)
        if entry is not None:
            del self._expiries[cache_key]
            self.bytes -= entry[1]
            metrics.REPLAY_CACHE_BYTES.set(self.bytes)


def entry_bytes(row: ExecutionRow) -> int:
    """What an entry holds, counted from the values that vary in size."""
    return (
        len(row.response_body or b"")
        + len(row.response_headers or "")
        + len(row.idempotency_key)
        + len(row.workflow_path)
        + len(row.response_content_type or "")
        + len(row.last_error_detail or "")
        + ENTRY_OVERHEAD_BYTES
    )


def _key_expired(row: ExecutionRow) -> bool:
    """Past the row's retention the key is new again, cached copy or not."""
    return row.expires_at is not None and row.expires_at <= datetime.now(UTC)
