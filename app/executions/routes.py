"""The /v1/executions API: execution status, listing and retries.

The trigger paths (/webhook, /webhook-test) are not routed here: app/executions/trigger_endpoints.py
serves them ahead of FastAPI's routing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.deps import CurrentTenant, ServicesDep, WritingTenant
from app.errors import (
    DatabaseUnavailable,
    ExecutionNotFound,
    InvalidRequest,
    NotRetryable,
    ReadOnlyKey,
    Unauthorized,
)
from app.executions.repo import ExecutionFilter
from app.executions.schemas import (
    Execution,
    ExecutionPage,
    RetryFilter,
    RetryResult,
    decode_cursor,
    encode_cursor,
    execution_of,
    summary_of,
)
from app.executions.trigger import location_for
from app.problems import documented

router = APIRouter()


# Every API route needs an API key and may find the database away.
_API_ERRORS = (InvalidRequest, Unauthorized, DatabaseUnavailable)


@router.post(
    "/v1/executions/retry",
    response_model=RetryResult,
    tags=["executions"],
    responses=documented(*_API_ERRORS, ReadOnlyKey),
)
async def retry_failed_executions(
    selection: RetryFilter, services: ServicesDep, tenant: WritingTenant
) -> RetryResult:
    """Put failed async executions that match back in the delivery queue (a bounded batch)."""
    keys = await services.executions.retry_failed(
        tenant=tenant,
        workflow=selection.workflow,
        failed_since=selection.failed_since,
        limit=selection.limit,
    )
    return RetryResult(queued=len(keys), keys=keys)


@router.post(
    "/v1/executions/{key:path}/retry",
    response_model=Execution,
    status_code=202,
    tags=["executions"],
    responses=documented(*_API_ERRORS, ReadOnlyKey, ExecutionNotFound, NotRetryable),
)
async def retry_execution(
    key: str, response: Response, services: ServicesDep, tenant: WritingTenant
) -> Execution:
    """Put one failed async execution back in the delivery queue."""
    detail = await services.executions.retry(tenant=tenant, key=key)
    response.headers["Location"] = location_for(key)
    return execution_of(detail.row, detail.attempts)


@router.get(
    "/v1/executions/{key:path}",
    response_model=Execution,
    tags=["executions"],
    responses=documented(*_API_ERRORS, ExecutionNotFound),
)
async def get_execution(key: str, services: ServicesDep, tenant: CurrentTenant) -> Execution:
    detail = await services.executions.get(tenant=tenant, key=key)
    return execution_of(detail.row, detail.attempts)


@router.get(
    "/v1/executions",
    response_model=ExecutionPage,
    tags=["executions"],
    responses=documented(*_API_ERRORS),
)
async def list_executions(
    services: ServicesDep,
    tenant: CurrentTenant,
    status: Literal["pending", "running", "completed", "failed"] | None = None,
    workflow: Annotated[str | None, Query(max_length=2048)] = None,
    mode: Literal["webhook", "webhook-test"] | None = None,
    key_prefix: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Keys that start so.")
    ] = None,
    created_after: Annotated[datetime | None, Query(description="Created at or after.")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before.")] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ExecutionPage:
    """Newest first; each filter given narrows the list. Pass `next_cursor` for older ones."""
    if limit > services.settings.list_max_limit:
        raise InvalidRequest(f"limit may be at most {services.settings.list_max_limit}.")
    filters = ExecutionFilter(
        status=status,
        workflow=_printable(workflow, "workflow"),
        mode=mode,
        key_prefix=_printable(key_prefix, "key_prefix"),
        created_from=_aware(created_after, "created_after"),
        created_to=_aware(created_before, "created_before"),
    )
    page = await services.executions.list_recent(
        tenant=tenant,
        filters=filters,
        before_id=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(page.next_before_id) if page.next_before_id else None
    return ExecutionPage(items=[summary_of(row) for row in page.items], next_cursor=next_cursor)


def _aware(moment: datetime | None, name: str) -> datetime | None:
    """The time in UTC; refused without a time zone, or when UTC has no such time (years 1
    to 9999 only: 0001-01-01T00:00:00+14:00 is in the year 0)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidRequest(
            f"{name} needs a time zone: add Z or an offset (2026-12-06T14:00:00Z)."
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            f"{name} is out of range: in UTC it must fall in the years 1 to 9999."
        ) from None


def _printable(value: str | None, name: str) -> str | None:
    if value is not None and not value.isprintable():
        raise InvalidRequest(f"{name} may hold printable characters only.")
    return value
