"""SQL for executions. Every statement names its tenant; RLS enforces it again underneath."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from app.db import AnyConnection

Call = TypeVar("Call")
T = TypeVar("T")

_COLUMNS = """
    id, idempotency_key, fingerprint, method, mode, workflow_path, status, attempts,
    lease_expires_at, lease_expires_at < now() AS lease_expired,
    response_status, response_content_type, response_headers, response_body,
    response_body_bytes, outcome_unknown, last_error_type, last_error_detail,
    created_at, updated_at, started_at, finished_at, expires_at, deliver_async, next_attempt_at
"""

# What a list shows of each execution (ListedExecution): never the bodies, headers or
# fingerprint, which may be megabytes a row (GATE_MAX_STORED_BODY_BYTES) that a page of 50
# would pull into the process for nothing. One execution's page reads the whole row.
_LIST_COLUMNS = """
    id, idempotency_key, method, mode, workflow_path, status, attempts, response_status,
    outcome_unknown, last_error_type, created_at, updated_at, started_at, finished_at,
    deliver_async, next_attempt_at
"""

# The trigger path calls functions (app/sql/02_functions.sql) that set the tenant for their own
# transaction. Claims, accepts and outcomes come in batches (app/batching.py): one statement
# calls the function once per element of its array arguments, in order, in one transaction.
# A claim or accept returns (claimed, lease_expired, execution row), NULLs when the key's row
# vanished between the function's two statements. A claim that took the key needs only the
# attempt it took: the row comes back (and is decoded) only to decide about a taken key.
_CLAIM_RESULT = """
    CASE WHEN r.claimed THEN NULL ELSE r.execution END AS execution,
    (r.execution).id, (r.execution).attempts
"""
CLAIM_MANY = f"""
SELECT r.claimed, r.lease_expired, {_CLAIM_RESULT}
FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::uuid[])
    WITH ORDINALITY AS c(tenant_id, key, fingerprint, method, mode, workflow_path, owner, n)
LEFT JOIN LATERAL claim_execution(
    c.tenant_id, c.key, c.fingerprint, c.method, c.mode, c.workflow_path, $8, c.owner
) AS r ON true
ORDER BY c.n
"""
# An accept needs only whether it stored the trigger, and what holds the key: not the row
# with the request it just sent, which would come back and be decoded for nothing.
ACCEPT_MANY = """
SELECT r.claimed, (r.execution).status, (r.execution).fingerprint
FROM unnest(
    $1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::jsonb[], $10::bytea[]
) WITH ORDINALITY AS a(
    tenant_id, key, fingerprint, method, mode, workflow_path, raw_path, query, headers, body, n
)
LEFT JOIN LATERAL accept_execution(
    a.tenant_id, a.key, a.fingerprint, a.method, a.mode, a.workflow_path, a.raw_path, a.query,
    a.headers, a.body, $11
) AS r ON true
ORDER BY a.n
"""
RECORD_OUTCOMES = """
SELECT record_execution_outcome(
    o.tenant_id, o.id, o.attempt, o.status, o.response_status, o.response_content_type,
    o.response_headers, o.response_body, o.response_body_bytes, o.error_type, o.error_detail,
    o.outcome_unknown, o.keep_seconds, o.retry_at
) AS recorded
FROM unnest(
    $1::uuid[], $2::bigint[], $3::integer[], $4::text[], $5::integer[], $6::text[],
    $7::jsonb[], $8::bytea[], $9::bigint[], $10::text[], $11::text[], $12::boolean[],
    $13::double precision[], $14::timestamptz[]
) WITH ORDINALITY AS o(
    tenant_id, id, attempt, status, response_status, response_content_type, response_headers,
    response_body, response_body_bytes, error_type, error_detail, outcome_unknown,
    keep_seconds, retry_at, n
)
ORDER BY o.n
"""
# A lone call (no concurrent caller to batch with) takes the plain function call instead, with
# the same parameter numbers: quicker than the batch statement with one element, and it runs
# twice per new key at low load (docs/adr/0003-group-commit.md).
CLAIM_ONE = (
    f"SELECT r.claimed, r.lease_expired, {_CLAIM_RESULT} "
    "FROM claim_execution($1, $2, $3, $4, $5, $6, $8, $7) AS r"
)
ACCEPT_ONE = (
    "SELECT claimed, (execution).status, (execution).fingerprint "
    "FROM accept_execution($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
RECORD_ONE = (
    "SELECT record_execution_outcome("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) AS recorded"
)
RETAKE = "SELECT (execution).id, (execution).attempts FROM retake_execution($1, $2, $3, $4)"
MARK_WAITED = "SELECT mark_execution_waited($1, $2)"
TAKE_DUE = "SELECT tenant_id, execution, ended FROM take_due_deliveries_v3($1, $2, $3, $4, $5, $6)"
REQUEUE_FAILED = (
    "SELECT execution_id, idempotency_key FROM requeue_failed_executions_v2($1, $2, $3, $4, $5, $6)"
)
RELEASE_UNFORWARDED = "SELECT release_unforwarded_claim($1, $2, $3, $4)"
# Runs as the owner (SECURITY DEFINER), across tenants, expired rows only.
REAP_EXPIRED = "SELECT reap_expired_executions($1)"
# Also as the owner: sync executions whose process died end failed (migration 0004).
END_ABANDONED = "SELECT end_abandoned_executions($1, $2)"
RENEW_LEASE = "SELECT renew_execution_lease($1, $2, $3, $4)"

LIST_ATTEMPTS = """
SELECT attempt, started_at, ended_at, outcome, n8n_status, error_type, error_detail
FROM execution_attempts
WHERE tenant_id = $1 AND execution_id = $2
ORDER BY attempt
"""

FIND_BY_KEY = f"""
SELECT {_COLUMNS}
FROM executions WHERE tenant_id = $1 AND idempotency_key = $2
"""

# The list and its counts name only the filters given (ExecutionFilter): each combination is a
# statement of its own, planned for the indexes it can use, rather than one statement of
# `$n IS NULL OR ...` whose generic plan could use none. The fragments are constants; every
# value goes through a parameter.
#
# The page's ids come first, from an index alone where the filters allow (tenant, status,
# workflow; the visibility map lets it, as autovacuum keeps it), then the rows by primary key:
# asked for whole rows in id order, the planner would rather walk the primary key, through
# every newer row of the other tenants.
LIST_RECENT = f"""
SELECT {_LIST_COLUMNS}
FROM executions
WHERE tenant_id = $1 AND id = ANY(ARRAY(
    SELECT id FROM executions WHERE {{where}} ORDER BY id {{order}} LIMIT {{limit}}
))
ORDER BY id {{order}}
"""
# Counts per status under the other filters, each capped: the list's tabs say "10,000+" rather
# than count a large tenant's rows on every page view. Each status's count walks its index
# (tenant, status, id) under the cheap filters; any other filter needs the rows themselves,
# read once for all statuses (COUNT_MATCHING), at most the cap of them.
#
# One branch per status, each with its status as a constant: planned for how common that
# status is (a correlated subquery gets one plan for all, and scanned the whole table for a
# status that has no rows).
_COUNT_STATUS = """
SELECT '{status}' AS status, count(*) AS n
FROM (SELECT 1 FROM executions WHERE {{where}} AND status = '{status}' LIMIT {{cap}}) AS capped
"""
STATUSES = ("pending", "running", "completed", "failed")
COUNT_BY_STATUS = "UNION ALL".join(_COUNT_STATUS.format(status=status) for status in STATUSES)
COUNT_MATCHING = """
SELECT status, count(*) AS n
FROM (SELECT status FROM executions WHERE {where} LIMIT {cap}) AS capped
GROUP BY status
"""
# Filters counted per status: an index serves the workflow beside the status.
_PER_STATUS_FILTERS = frozenset({"status", "workflow"})
COUNT = "SELECT count(*) FROM (SELECT 1 FROM executions WHERE {where} LIMIT {cap}) AS capped"
_FILTER_CLAUSES = {
    "status": "status = {}",
    "workflow": "workflow_path = {}",
    "mode": "mode = {}",
    "deliver_async": "deliver_async = {}",
    "created_from": "created_at >= {}",
    "created_to": "created_at < {}",
    "finished_from": "finished_at >= {}",
    "finished_before": "finished_at < {}",
    "key_prefix": "idempotency_key LIKE {} ESCAPE '\\'",
    "before_id": "id < {}",
    "after_id": "id > {}",
}

FIND_REQUEST = """
SELECT request_raw_path, request_query, request_headers, request_body
FROM executions WHERE tenant_id = $1 AND id = $2
"""

# The tenant's part of the delivery queue, per webhook: how many wait, run and are due, the
# oldest due item and its key. The queue holds no tenant data, so it has no RLS: the tenant
# filter here is what scopes it (the key comes from `executions`, under RLS).
QUEUE_SUMMARY = """
SELECT q.target, q.depth, q.due, q.running, q.oldest_due_at, q.next_due_at, q.now,
       e.idempotency_key AS oldest_key
FROM (
    SELECT target, count(*) AS depth,
           count(*) FILTER (WHERE NOT running AND due_at <= now()) AS due,
           count(*) FILTER (WHERE running) AS running,
           min(due_at) FILTER (WHERE NOT running AND due_at <= now()) AS oldest_due_at,
           min(due_at) FILTER (WHERE NOT running) AS next_due_at,
           now() AS now
    FROM delivery_queue WHERE tenant_id = $1
    GROUP BY target
) AS q
LEFT JOIN LATERAL (
    SELECT d.execution_id FROM delivery_queue d
    WHERE d.target = q.target AND d.tenant_id = $1 AND NOT d.running
    ORDER BY d.due_at
    LIMIT 1
) AS oldest ON true
LEFT JOIN executions e ON e.tenant_id = $1 AND e.id = oldest.execution_id
ORDER BY q.target
"""


@dataclass(frozen=True)
class ExecutionRow:
    id: int
    idempotency_key: str
    fingerprint: bytes
    method: str
    mode: str
    workflow_path: str
    status: str
    attempts: int
    lease_expires_at: datetime | None
    lease_expired: bool | None
    response_status: int | None
    response_content_type: str | None
    response_headers: str | None  # JSON: [[name, value], ...]
    response_body: bytes | None
    response_body_bytes: int | None
    outcome_unknown: bool
    last_error_type: str | None
    last_error_detail: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    deliver_async: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class ListedExecution:
    """An execution as a list shows it (_LIST_COLUMNS): no bodies, headers or fingerprint."""

    id: int
    idempotency_key: str
    method: str
    mode: str
    workflow_path: str
    status: str
    attempts: int
    response_status: int | None
    outcome_unknown: bool
    last_error_type: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deliver_async: bool
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions a list shows; None: any. `key_prefix` is matched literally (LIKE's
    wildcards in it are escaped)."""

    status: str | None = None
    workflow: str | None = None
    mode: str | None = None
    deliver_async: bool | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    finished_from: datetime | None = None
    finished_before: datetime | None = None
    key_prefix: str | None = None


@dataclass(frozen=True)
class StoredRequest:
    """The request an async execution stored for its deliveries (sync ones store none)."""

    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class QueueTarget:
    """One webhook's part of a tenant's delivery queue."""

    target: str  # n8n mode and path: "webhook orders"
    depth: int
    due: int
    running: int
    oldest_due_at: datetime | None
    next_due_at: datetime | None
    now: datetime
    oldest_key: str | None


@dataclass(frozen=True)
class Outcome:
    status: str
    response_status: int | None = None
    response_content_type: str | None = None
    response_headers: list[tuple[str, str]] | None = None
    response_body: bytes | None = None
    response_body_bytes: int | None = None
    error_type: str | None = None
    error_detail: str | None = None
    outcome_unknown: bool = False


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    n8n_status: int | None
    error_type: str | None
    error_detail: str | None


def _row(record: asyncpg.Record | None) -> ExecutionRow | None:
    return None if record is None else ExecutionRow(**dict(record))


# Columns of the composite `executions` row that ExecutionRow does not carry.
_NOT_IN_ROW = frozenset(
    {
        "tenant_id",
        "lease_owner",
        "has_waiters",
        "request_raw_path",
        "request_query",
        "request_headers",
        "request_body",
    }
)


def _function_row(record: asyncpg.Record | None) -> ExecutionRow | None:
    if record is None or record["execution"] is None:
        return None
    columns = {k: v for k, v in record["execution"].items() if k not in _NOT_IN_ROW}
    return ExecutionRow(lease_expired=record.get("lease_expired", False), **columns)


@dataclass(frozen=True, slots=True)
class AttemptLease:
    """An attempt this process took (claim, retake, delivery) and now runs. Its statements
    name the attempt's number, so once another process took the execution over they match
    nothing."""

    execution_id: int
    number: int


def _attempt(record: asyncpg.Record | None) -> AttemptLease | None:
    if record is None or record["id"] is None:
        return None
    return AttemptLease(execution_id=record["id"], number=record["attempts"])


def _claim(record: asyncpg.Record | None) -> AttemptLease | ExecutionRow | None:
    """The attempt a claim took, or the row of the execution that holds the key."""
    if record is not None and record["claimed"]:
        return _attempt(record)
    return _function_row(record)


@dataclass(frozen=True)
class Accepted:
    """What an async trigger's accept found: its own new execution (`claimed`), or the status
    and request fingerprint of the execution that holds the key."""

    claimed: bool
    status: str
    fingerprint: bytes


@dataclass(frozen=True)
class Delivery:
    """An async execution a worker has taken, with the request it stored."""

    tenant_id: UUID
    row: ExecutionRow
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Take:
    """What a take of due deliveries did: the deliveries it took (`abandoned` of them taken over
    from an attempt that died unrecorded), and how many it ended as dead letters instead."""

    deliveries: list[Delivery]
    abandoned: int
    dead_letters: int


@dataclass(frozen=True)
class KeyCall:
    """What every call that may create an execution names: the key and the request's identity."""

    tenant_id: UUID
    key: str
    fingerprint: bytes
    method: str
    mode: str
    workflow_path: str


_KEY_FIELDS = tuple(f.name for f in fields(KeyCall))


@dataclass(frozen=True)
class ClaimCall(KeyCall):
    """A sync trigger's claim on its key (claim_execution)."""

    owner: UUID


@dataclass(frozen=True)
class AcceptCall(KeyCall):
    """An async trigger to store for the delivery workers (accept_execution)."""

    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class OutcomeCall:
    """An attempt's outcome to record (record_execution_outcome)."""

    tenant_id: UUID
    execution_id: int
    attempt: int
    outcome: Outcome
    keep_seconds: float
    retry_at: datetime | None


async def claim_many(
    conn: AnyConnection, calls: list[ClaimCall], *, lease_seconds: float
) -> list[AttemptLease | ExecutionRow | None]:
    """Claim each key, or return the row that holds it; one transaction for all."""
    ordered = _lock_order(calls, key=lambda c: (c.tenant_id, c.key))
    columns = _columns([calls[i] for i in ordered], *_KEY_FIELDS, "owner")
    records = await _call(conn, CLAIM_ONE, CLAIM_MANY, columns, lease_seconds)
    return _unordered([_claim(r) for r in records], ordered)


async def accept_many(
    conn: AnyConnection, calls: list[AcceptCall], *, notify: bool
) -> list[Accepted | None]:
    """Store each async trigger, or say what holds its key; one transaction for all."""
    ordered = _lock_order(calls, key=lambda c: (c.tenant_id, c.key))
    in_order = [calls[i] for i in ordered]
    columns = [
        *_columns(in_order, *_KEY_FIELDS, "raw_path", "query"),
        [json.dumps(c.headers) for c in in_order],
        [c.body for c in in_order],
    ]
    records = await _call(conn, ACCEPT_ONE, ACCEPT_MANY, columns, notify)
    accepted = [None if r is None or r["status"] is None else Accepted(**r) for r in records]
    return _unordered(accepted, ordered)


async def record_outcomes(conn: AnyConnection, calls: list[OutcomeCall]) -> list[bool]:
    """Record each outcome (False: that attempt no longer runs); one transaction for all."""
    ordered = _lock_order(calls, key=lambda c: c.execution_id)
    in_order = [calls[i] for i in ordered]
    outcomes = [c.outcome for c in in_order]
    columns = [
        *_columns(in_order, "tenant_id", "execution_id", "attempt"),
        *_columns(outcomes, "status", "response_status", "response_content_type"),
        [None if o.response_headers is None else json.dumps(o.response_headers) for o in outcomes],
        *_columns(
            outcomes,
            "response_body",
            "response_body_bytes",
            "error_type",
            "error_detail",
            "outcome_unknown",
        ),
        *_columns(in_order, "keep_seconds", "retry_at"),
    ]
    records = await _call(conn, RECORD_ONE, RECORD_OUTCOMES, columns)
    return _unordered([r is not None and bool(r["recorded"]) for r in records], ordered)


async def _call(
    conn: AnyConnection, one: str, many: str, columns: list[list[Any]], *shared: Any
) -> list[asyncpg.Record | None]:
    """Run a batch: `many` with one array per column and then the shared arguments, or for a
    lone call `one` with the same arguments as scalars."""
    if len(columns[0]) == 1:
        return [await conn.fetchrow(one, *(column[0] for column in columns), *shared)]
    return list(await conn.fetch(many, *columns, *shared))


def _lock_order(calls: list[Call], *, key: Callable[[Call], Any]) -> list[int]:
    """Indexes of `calls` in the order their rows are locked. Every batch locks rows in one
    global order, so two batches waiting on each other cannot deadlock."""
    return sorted(range(len(calls)), key=lambda i: key(calls[i]))


def _columns(calls: Sequence[object], *names: str) -> list[list[Any]]:
    """The batch as one array argument per field."""
    return [[getattr(call, name) for call in calls] for name in names]


def _unordered(results: list[T], ordered: list[int]) -> list[T]:
    """Results of the calls in lock order, put back in the order the calls came in."""
    back = list(results)
    for position, index in enumerate(ordered):
        back[index] = results[position]
    return back


async def mark_waited(conn: AnyConnection, *, tenant_id: UUID, execution_id: int) -> None:
    await conn.execute(MARK_WAITED, tenant_id, execution_id)


async def take_due(
    conn: AnyConnection,
    *,
    lease_seconds: float,
    owner: UUID,
    max_per_target: int,
    limit: int,
    refuse_abandoned: bool,
    failed_keep_seconds: float,
) -> Take:
    """Take up to `limit` due deliveries (migration 0012); one transaction for all. With
    `refuse_abandoned`, a delivery whose process died ends failed instead of being taken."""
    records = await conn.fetch(
        TAKE_DUE,
        lease_seconds,
        owner,
        max_per_target,
        limit,
        refuse_abandoned,
        failed_keep_seconds,
    )
    return Take(
        deliveries=[_delivery(record) for record in records if record["ended"] != "dead_letter"],
        abandoned=sum(record["ended"] == "abandoned" for record in records),
        dead_letters=sum(record["ended"] == "dead_letter" for record in records),
    )


def _delivery(record: asyncpg.Record) -> Delivery:
    execution = record["execution"]
    row = _function_row(record)
    assert row is not None
    return Delivery(
        tenant_id=record["tenant_id"],
        row=row,
        raw_path=execution["request_raw_path"],
        query=execution["request_query"] or "",
        headers=[(name, value) for name, value in json.loads(execution["request_headers"])],
        body=execution["request_body"] or b"",
    )


async def requeue_failed(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    key: str | None,
    workflow: str | None,
    failed_since: datetime | None,
    limit: int,
    failed_before: datetime | None = None,
) -> list[str]:
    """Put failed async executions back in the delivery queue; return their keys."""
    records = await conn.fetch(
        REQUEUE_FAILED, tenant_id, key, workflow, failed_since, failed_before, limit
    )
    return [record["idempotency_key"] for record in records]


async def find_by_key(conn: AnyConnection, *, tenant_id: UUID, key: str) -> ExecutionRow | None:
    return _row(await conn.fetchrow(FIND_BY_KEY, tenant_id, key))


async def retake(
    conn: AnyConnection, *, tenant_id: UUID, key: str, lease_seconds: float, owner: UUID
) -> AttemptLease | None:
    return _attempt(await conn.fetchrow(RETAKE, tenant_id, key, lease_seconds, owner))


async def release_unforwarded(
    conn: AnyConnection, *, tenant_id: UUID, key: str, owner: UUID, keep_seconds: float
) -> bool:
    released: bool = await conn.fetchval(RELEASE_UNFORWARDED, tenant_id, key, owner, keep_seconds)
    return released


async def reap_expired(conn: AnyConnection, *, batch_size: int) -> int:
    deleted: int = await conn.fetchval(REAP_EXPIRED, batch_size)
    return deleted


async def end_abandoned(conn: AnyConnection, *, batch_size: int, keep_seconds: float) -> int:
    ended: int = await conn.fetchval(END_ABANDONED, batch_size, keep_seconds)
    return ended


async def renew_lease(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int, attempt: int, lease_seconds: float
) -> bool:
    renewed: bool = await conn.fetchval(
        RENEW_LEASE, tenant_id, execution_id, attempt, lease_seconds
    )
    return renewed


async def list_attempts(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int
) -> list[AttemptRow]:
    records = await conn.fetch(LIST_ATTEMPTS, tenant_id, execution_id)
    return [AttemptRow(**dict(record)) for record in records]


async def list_recent(
    conn: AnyConnection,
    *,
    tenant_id: UUID,
    filters: ExecutionFilter,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int,
) -> list[ListedExecution]:
    """Newest first, older than `before_id`; or, with `after_id`, the oldest newer than it,
    oldest first (the page before, for the caller to turn round)."""
    where, args = _where(tenant_id, filters, before_id=before_id, after_id=after_id)
    order = "DESC" if after_id is None else "ASC"
    statement = LIST_RECENT.format(where=where, order=order, limit=f"${len(args) + 1}")
    records = await conn.fetch(statement, *args, limit)
    return [ListedExecution(**dict(record)) for record in records]


@dataclass(frozen=True)
class StatusCounts:
    counts: dict[str, int]  # every status, 0 when none
    at_least: frozenset[str]  # statuses whose count stopped at the cap: there are more


async def count_by_status(
    conn: AnyConnection, *, tenant_id: UUID, filters: ExecutionFilter, cap: int
) -> StatusCounts:
    """How many executions of each status match (`filters.status` aside), up to `cap`."""
    values = {**_filter_values(filters), "status": None}
    where, args = _where(tenant_id, ExecutionFilter(**values))
    indexed = {name for name, value in values.items() if value is not None} <= _PER_STATUS_FILTERS
    template = COUNT_BY_STATUS if indexed else COUNT_MATCHING
    records = await conn.fetch(template.format(where=where, cap=f"${len(args) + 1}"), *args, cap)
    counts = dict.fromkeys(STATUSES, 0) | {r["status"]: r["n"] for r in records}
    if indexed:
        return StatusCounts(counts, frozenset(s for s, n in counts.items() if n >= cap))
    return StatusCounts(counts, frozenset(STATUSES if sum(counts.values()) >= cap else ()))


async def count(conn: AnyConnection, *, tenant_id: UUID, filters: ExecutionFilter, cap: int) -> int:
    """How many executions match `filters`, up to `cap`."""
    where, args = _where(tenant_id, filters)
    counted: int = await conn.fetchval(
        COUNT.format(where=where, cap=f"${len(args) + 1}"), *args, cap
    )
    return counted


def _where(
    tenant_id: UUID,
    filters: ExecutionFilter,
    *,
    before_id: int | None = None,
    after_id: int | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause for `filters`, from constant fragments, and its parameters."""
    values = {**_filter_values(filters), "before_id": before_id, "after_id": after_id}
    if filters.key_prefix is not None:
        values["key_prefix"] = like_prefix(filters.key_prefix)
    clauses, args = ["tenant_id = $1"], [tenant_id]
    for name, clause in _FILTER_CLAUSES.items():
        if values[name] is not None:
            args.append(values[name])
            clauses.append(clause.format(f"${len(args)}"))
    return " AND ".join(clauses), args


def _filter_values(filters: ExecutionFilter) -> dict[str, Any]:
    return {f.name: getattr(filters, f.name) for f in fields(ExecutionFilter)}


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (ESCAPE '\\') that matches what starts with `prefix`, literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


async def find_request(
    conn: AnyConnection, *, tenant_id: UUID, execution_id: int
) -> StoredRequest | None:
    record = await conn.fetchrow(FIND_REQUEST, tenant_id, execution_id)
    if record is None or record["request_raw_path"] is None:
        return None
    headers = json.loads(record["request_headers"]) if record["request_headers"] else []
    return StoredRequest(
        raw_path=record["request_raw_path"],
        query=record["request_query"] or "",
        headers=[(name, value) for name, value in headers],
        body=record["request_body"] or b"",
    )


async def queue_summary(conn: AnyConnection, *, tenant_id: UUID) -> list[QueueTarget]:
    records = await conn.fetch(QUEUE_SUMMARY, tenant_id)
    return [QueueTarget(**dict(record)) for record in records]
