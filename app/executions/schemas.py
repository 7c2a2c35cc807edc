"""What the status and list endpoints show."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.errors import InvalidRequest
from app.executions.repo import AttemptRow, ExecutionRow, ListedExecution
from app.numbers import ascii_int

CURSOR_VERSION = "v1"


class RecordedResponse(BaseModel):
    status_code: int = Field(description="The status n8n answered with; replays return it.")
    content_type: str | None
    body: str
    body_encoding: Literal["utf-8", "base64"] = Field(
        description="utf-8 for text bodies, base64 for anything that is not valid UTF-8 text."
    )
    body_bytes: int = Field(description="Size of n8n's answer; more than stored when truncated.")
    truncated: bool = Field(description="Only the first GATE_MAX_STORED_BODY_BYTES were kept.")


class ExecutionError(BaseModel):
    type: str = Field(
        description="n8n-connection-refused, n8n-connection-closed, n8n-dns-failure, "
        "n8n-connect-timeout, n8n-starting, n8n-read-timeout, n8n-connection-lost, "
        "n8n-could-not-execute, n8n-answer-too-large, n8n-error (5xx), n8n-not-registered, "
        "n8n-method-not-registered, n8n-refused, n8n-rate-limited, abandoned, "
        "claim-interrupted, signing-secret-unavailable (docs/api.md says what each means)"
    )
    detail: str | None


class ExecutionAttempt(BaseModel):
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: Literal["completed", "failed", "abandoned"] | None = Field(
        description="null while the attempt runs"
    )
    n8n_status: int | None
    error: ExecutionError | None
    duration_ms: float | None


class ExecutionSummary(BaseModel):
    key: str
    workflow: str
    mode: Literal["webhook", "webhook-test"]
    method: str
    status: Literal["pending", "running", "completed", "failed"]
    attempts: int
    response_status: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None = Field(description="From the last attempt's start to its end.")


class Execution(ExecutionSummary):
    delivery: Literal["sync", "async"] = Field(
        description="async: accepted with Prefer: respond-async and delivered by the gateway"
    )
    next_attempt_at: datetime | None = Field(
        description="When a pending async execution is delivered next."
    )
    lease_expires_at: datetime | None
    expires_at: datetime | None = Field(
        description="When the key is forgotten and becomes new again; null while it runs."
    )
    outcome_unknown: bool = Field(
        description="The last attempt reached n8n but no answer came back: it may have run."
    )
    response: RecordedResponse | None
    last_error: ExecutionError | None
    attempt_history: list[ExecutionAttempt]


class RetryFilter(BaseModel):
    """Which failed async executions to put back in the queue."""

    workflow: str | None = Field(default=None, max_length=2048)
    failed_since: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")


class RetryResult(BaseModel):
    queued: int
    keys: list[str]


class ExecutionPage(BaseModel):
    items: list[ExecutionSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


def summary_of(row: ExecutionRow | ListedExecution) -> ExecutionSummary:
    return ExecutionSummary(**_summary_fields(row))


def execution_of(row: ExecutionRow, attempts: list[AttemptRow]) -> Execution:
    return Execution(
        **_summary_fields(row),
        delivery="async" if row.deliver_async else "sync",
        next_attempt_at=row.next_attempt_at,
        lease_expires_at=row.lease_expires_at,
        expires_at=row.expires_at,
        outcome_unknown=row.outcome_unknown,
        response=_recorded_response(row),
        last_error=ExecutionError(type=row.last_error_type, detail=row.last_error_detail)
        if row.last_error_type
        else None,
        attempt_history=[_attempt(attempt) for attempt in attempts],
    )


def _attempt(row: AttemptRow) -> ExecutionAttempt:
    return ExecutionAttempt(
        attempt=row.attempt,
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=row.outcome,
        n8n_status=row.n8n_status,
        error=ExecutionError(type=row.error_type, detail=row.error_detail)
        if row.error_type
        else None,
        duration_ms=_milliseconds(row.started_at, row.ended_at),
    )


def _milliseconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() * 1000 if start and end else None


def encode_cursor(before_id: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_VERSION}:{before_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        before_id = ascii_int(value, max_digits=18)  # ids are bigints
        if version != CURSOR_VERSION or before_id is None:
            raise ValueError(raw)
        return before_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "The cursor is not one this service issued. Pass next_cursor from a previous page "
            "unchanged, or leave it out for the newest executions."
        ) from None


def _summary_fields(row: ExecutionRow | ListedExecution) -> dict[str, object]:
    duration = _milliseconds(row.started_at, row.finished_at)
    return {
        "key": row.idempotency_key,
        "workflow": row.workflow_path,
        "mode": row.mode,
        "method": row.method,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_ms": duration,
    }


def _recorded_response(row: ExecutionRow) -> RecordedResponse | None:
    if row.response_status is None:
        return None
    body = row.response_body or b""
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    return RecordedResponse(
        status_code=row.response_status,
        content_type=row.response_content_type,
        body=text,
        body_encoding=encoding,
        body_bytes=row.response_body_bytes if row.response_body_bytes is not None else len(body),
        truncated=row.response_body_bytes is not None and row.response_body_bytes > len(body),
    )
