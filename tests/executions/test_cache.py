"""The in-process cache of completed executions, on its own: what it returns, and that its
entries cost the garbage collector nothing (a full collection stalls every request)."""

from __future__ import annotations

import gc
import uuid
from datetime import UTC, datetime, timedelta

from app.executions.cache import CompletedExecutions
from app.executions.repo import ExecutionRow


def completed_row(key: str, *, expires_in: timedelta = timedelta(hours=1)) -> ExecutionRow:
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
        response_headers='[["x-n8n", "1"]]',
        response_body=b'{"ok": true}',
        response_body_bytes=12,
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
    cache = CompletedExecutions(max_bytes=1 << 20, ttl_seconds=60)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    row = completed_row("k1")
    cache.put(tenant, row)
    assert cache.get(tenant, "k1") == row
    assert cache.get(other, "k1") is None


def test_a_row_past_its_retention_is_not_returned() -> None:
    cache = CompletedExecutions(max_bytes=1 << 20, ttl_seconds=60)
    tenant = uuid.uuid4()
    cache.put(tenant, completed_row("old", expires_in=timedelta(seconds=-1)))
    assert cache.get(tenant, "old") is None


def test_entries_are_not_tracked_by_the_garbage_collector() -> None:
    cache = CompletedExecutions(max_bytes=1 << 20, ttl_seconds=60)
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
