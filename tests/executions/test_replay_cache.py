"""The in-process cache of completed executions, on its own: what it returns, and that its
entries cost the garbage collector nothing (a full collection stalls every request)."""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

from app.executions.replay_cache import ReplayCache
from app.executions.repo import ExecutionRow


def completed_row(
    key: str,
    *,
    expires_in: timedelta = timedelta(hours=1),
    headers: str = '[["x-n8n", "1"]]',
    body: bytes = b'{"ok": true}',
) -> ExecutionRow:
    now = datetime.now(UTC)
    return ExecutionRow(
        id=1,
        idempotency_key=key,
        fingerprint=b"\x01" * 32,
        method="POST",
        mode="webhook",
        workflow_path="orders",
        status="completed",
        attempts=1,
        lease_expires_at=None,
        lease_expired=False,
        response_status=200,
        response_content_type="application/json",
        response_headers=headers,
        response_body=body,
        response_body_bytes=len(body),
        outcome_unknown=False,
        last_error_type=None,
        last_error_detail=None,
        created_at=now,
        updated_at=now,
        started_at=now,
        finished_at=now,
        expires_at=now + expires_in,
        deliver_async=False,
        next_attempt_at=None,
    )


def test_a_cached_row_comes_back_equal_for_its_tenant_only() -> None:
    cache = ReplayCache(max_bytes=1 << 20, ttl_seconds=60)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    row = completed_row("k1")
    cache.put(tenant, row)
    assert cache.get(tenant, "k1") == row
    assert cache.get(other, "k1") is None


def test_a_row_past_its_retention_is_not_returned() -> None:
    cache = ReplayCache(max_bytes=1 << 20, ttl_seconds=60)
    tenant = uuid.uuid4()
    cache.put(tenant, completed_row("old", expires_in=timedelta(seconds=-1)))
    assert cache.get(tenant, "old") is None


def test_entries_are_not_tracked_by_the_garbage_collector() -> None:
    cache = ReplayCache(max_bytes=1 << 20, ttl_seconds=60)
    tenant = uuid.uuid4()
    for i in range(100):
        cache.put(tenant, completed_row(f"k{i}"))
    # A collection stops tracking a tuple whose items are all untracked: the row's values on
    # one pass, the entry holding them on the same pass or the next.
    gc.collect()
    gc.collect()
    tracked = [
        part
        for cache_key, entry in cache._entries.items()
        for part in (cache_key, entry, entry[0])
        if gc.is_tracked(part)
    ]
    assert tracked == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_past_their_time_are_dropped_whether_looked_up_or_not() -> None:
    clock = Clock()
    cache = ReplayCache(max_bytes=1 << 30, ttl_seconds=60, clock=clock)
    tenant = uuid.uuid4()
    for i in range(50):
        cache.put(tenant, completed_row(f"old{i}", body=b"x" * 100_000))
    clock.now += 30
    cache.put(tenant, completed_row("young"))
    assert cache.get(tenant, "old0") is not None  # a lookup does not extend an entry's time
    clock.now += 31
    cache.put(tenant, completed_row("new"))
    assert len(cache) == 2
    assert cache.bytes < 10_000
    assert cache.get(tenant, "young") is not None
    clock.now += 30
    assert cache.get(tenant, "new") is not None
    assert len(cache) == 1


def test_the_cache_counts_at_least_what_its_entries_hold() -> None:
    """Headers count, not just bodies: 1,200 answers with 256 KiB of headers held 314 MB while
    the cache believed it held about 1 KiB each."""
    headers = json.dumps([[f"x-big-{i}", "v" * 8000] for i in range(32)])
    tenant = uuid.uuid4()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        cache = ReplayCache(max_bytes=1 << 30, ttl_seconds=60)
        for i in range(200):
            # Each row's own copy of its headers, as each row read from the database has.
            cache.put(tenant, completed_row(f"key-{i}", headers=headers[:-1] + "]"))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) == 200
    assert held - before <= cache.bytes
    assert cache.bytes <= 1.2 * (held - before)


def test_the_cache_stays_within_its_bytes_counting_headers() -> None:
    headers = json.dumps([[f"x-big-{i}", "v" * 8000] for i in range(32)])
    cache = ReplayCache(max_bytes=8 << 20, ttl_seconds=60)
    tenant = uuid.uuid4()
    for i in range(1200):
        cache.put(tenant, completed_row(f"key-{i}", headers=headers))
    assert cache.bytes <= 8 << 20
    assert len(cache) <= (8 << 20) // len(headers)
