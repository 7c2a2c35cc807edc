"""HTTP edge for triggers (/webhook, /webhook-test) and for execution status (/v1/executions)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app import db
from app.config import Settings
from app.deps import CurrentTenant, Services, ServicesDep, get_services
from app.errors import (
    DatabaseUnavailable,
    ExecutionInFlight,
    ExecutionNotFound,
    GateError,
    GatewayBusy,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    InvalidRequest,
    InvalidWebhookPath,
    MethodNotAllowed,
    MissingIdempotencyKey,
    N8nAnswerTooLarge,
    N8nStarting,
    N8nTimeout,
    N8nUnreachable,
    NotRetryable,
    OutcomeUnknown,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from app.executions.repo import Accepted
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
from app.executions.service import GatewayAnswer
from app.executions.trigger import (
    Mode,
    TriggerRequest,
    location_for,
    parse_idempotency_key,
    parse_prefer_wait,
    parse_preferences,
    parse_webhook_path,
)
from app.forwarding.headers import GATE_KEY_HEADER, Via, is_trusted, to_forward
from app.memory import Body, Holding
from app.numbers import ascii_int
from app.problems import as_problem, documented, problem_response
from app.sending import HeldResponse
from app.tenants.tenant import Tenant

# Every method n8n's Webhook node takes.
TRIGGER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# The gateway's own header on every trigger answer: where the execution can be looked up.
# n8n's own Location (a Respond to Webhook redirect) passes untouched.
EXECUTION_HEADER = "N8n-Gate-Execution"

router = APIRouter()


# Every API route needs an API key and may find the database away.
_API_ERRORS = (InvalidRequest, Unauthorized, DatabaseUnavailable)


@router.post(
    "/v1/executions/retry",
    response_model=RetryResult,
    tags=["executions"],
    responses=documented(*_API_ERRORS),
)
async def retry_failed_executions(
    selection: RetryFilter, services: ServicesDep, tenant: CurrentTenant
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
    responses=documented(*_API_ERRORS, ExecutionNotFound, NotRetryable),
)
async def retry_execution(
    key: str, response: Response, services: ServicesDep, tenant: CurrentTenant
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
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ExecutionPage:
    if limit > services.settings.list_max_limit:
        raise InvalidRequest(f"limit may be at most {services.settings.list_max_limit}.")
    page = await services.executions.list_recent(
        tenant=tenant,
        status=status,
        workflow=workflow,
        before_id=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(page.next_before_id) if page.next_before_id else None
    return ExecutionPage(items=[summary_of(row) for row in page.items], next_cursor=next_cursor)


class TriggerEndpoints:
    """Serves the trigger paths, /webhook/<path> and /webhook-test/<path>, ahead of FastAPI's
    routing; everything else goes on to it.

    A trigger is the gateway's hot path, and FastAPI's route machinery (dependency solving,
    exit stacks, response wrapping) was a visible share of its CPU
    (docs/adr/0004-triggers-outside-routing.md). Errors become problem+json here, as the app's
    handlers would render them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = _trigger_mode(scope["path"]) if scope["type"] == "http" else None
        if mode is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await _trigger(request, mode=mode)
        except GateError as exc:
            response = problem_response(exc, instance=request.url.path)
        except db.DatabaseUnreachable as exc:
            response = problem_response(as_problem(exc), instance=request.url.path)
        await response(scope, receive, send)


def document_triggers(app: FastAPI) -> None:
    """Adds the trigger paths, which FastAPI does not route, to the app's OpenAPI schema."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()  # built once, then cached by FastAPI
        for mode in ("webhook", "webhook-test"):
            operation = _trigger_operation(mode)
            methods = [method.lower() for method in TRIGGER_METHODS]
            schema["paths"][f"/{mode}/{{path}}"] = dict.fromkeys(methods, operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _trigger_operation(mode: Mode) -> dict[str, Any]:
    def header(name: str, required: bool, description: str) -> dict[str, Any]:
        schema = {"type": "string"}
        return {
            "name": name,
            "in": "header",
            "required": required,
            "schema": schema,
            "description": description,
        }

    return {
        "tags": ["triggers"],
        "summary": f"Run n8n's {mode} <path> once per Idempotency-Key",
        "description": (
            f"Forwarded to n8n's /{mode}/<path> with its method, query, headers and body; "
            "a retry with the same key gets the recorded answer (Idempotent-Replayed: true)."
        ),
        "parameters": [
            {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 257,  # 255 characters, or 255 quoted ("...")
                    "pattern": "^[\\x20-\\x7e]+$",
                },
                "description": (
                    "1-255 printable ASCII characters, bare or as an RFC 8941 string "
                    '("abc" and abc are the same key).'
                ),
            },
            header("Prefer", False, "respond-async (202, delivered by the gateway) or wait=<s>."),
            header(
                "N8n-Gate-Key",
                False,
                "The API key, when Authorization is for n8n's webhook (then forwarded).",
            ),
        ],
        "requestBody": {"content": {"*/*": {}}},
        "responses": {
            "200": {"description": "n8n's answer, or its replay (any status n8n gave)."},
            "202": {"description": "Stored; the gateway delivers it (Prefer: respond-async)."},
            **{str(status): answer for status, answer in documented(*_TRIGGER_ERRORS).items()},
        },
    }


_TRIGGER_ERRORS = (
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
    InvalidWebhookPath,
    InvalidRequest,
    Unauthorized,
    MethodNotAllowed,
    ExecutionInFlight,
    GatewayBusy,
    OutcomeUnknown,
    PayloadTooLarge,
    RequestTimeout,
    IdempotencyKeyReused,
    N8nUnreachable,
    N8nAnswerTooLarge,
    DatabaseUnavailable,
    N8nStarting,
    N8nTimeout,
)


def _trigger_mode(path: str) -> Mode | None:
    if path.startswith("/webhook/"):
        return "webhook"
    if path.startswith("/webhook-test/"):
        return "webhook-test"
    return None


async def _trigger(request: Request, *, mode: Mode) -> Response:
    if request.method not in TRIGGER_METHODS:
        raise MethodNotAllowed(
            "Triggers take GET, HEAD, POST, PUT, PATCH or DELETE, as n8n's webhooks do.",
            headers={"Allow": ", ".join(TRIGGER_METHODS)},
        )
    services = await get_services(request)
    tenant = await services.authenticator.authenticate(
        authorization=request.headers.get("authorization"),
        gate_key=request.headers.get(GATE_KEY_HEADER),
    )
    workflow_path, forwarded_path = parse_webhook_path(_path_after(request, mode=mode))
    key = parse_idempotency_key(request.headers.getlist("idempotency-key"))
    preferences = parse_preferences(request.headers.getlist("prefer"))
    applied = _applied_preferences(preferences, max_wait=services.settings.max_wait_seconds)
    holding = services.budget.holding()  # the body's bytes, until the gateway is done with it
    try:
        trigger = TriggerRequest(
            key=key,
            method=request.method,
            mode=mode,
            workflow_path=workflow_path,
            raw_path=forwarded_path,
            # As received: the server admits only ASCII in the target, and building request.url
            # (a urlsplit of the whole URL) was a visible share of an accept's CPU.
            query=request.scope["query_string"].decode("latin-1"),
            headers=to_forward(request.headers.items(), via=_via(request, services.settings)),
            body=await _read_body(
                request,
                holding=holding,
                limit=services.settings.max_body_bytes,
                within=services.settings.body_timeout_seconds,
            ),
        )
        outcome = await _run_trigger(services, tenant, trigger, applied=applied)
    except GateError as exc:
        raise _about_key(exc, key=key, applied=applied) from None
    except db.DatabaseUnreachable as exc:
        raise _about_key(as_problem(exc), key=key, applied=applied) from exc
    finally:
        holding.release()
    try:
        if isinstance(outcome, Accepted):
            response = _accepted(outcome, key=key)
        else:
            head = request.method == "HEAD"
            response = _response(outcome, key=key, head=head, services=services)
    except GateError as exc:  # a replay the budget has no room for
        raise _about_key(exc, key=key, applied=applied) from None
    if applied:
        response.headers["Preference-Applied"] = _preference_applied(applied)
    return response


def _about_key(error: GateError, *, key: str, applied: dict[str, str]) -> GateError:
    """A trigger's error once its key is known says where the key's execution is."""
    error.headers.setdefault("Location", location_for(key))
    error.headers[EXECUTION_HEADER] = location_for(key)
    if applied:
        error.headers["Preference-Applied"] = _preference_applied(applied)
    return error


async def _run_trigger(
    services: Services, tenant: Tenant, trigger: TriggerRequest, *, applied: dict[str, str]
) -> Accepted | GatewayAnswer:
    if "respond-async" in applied:
        return await services.executions.accept(tenant=tenant, request=trigger)
    wait = int(applied.get("wait", "0"))
    return await services.executions.trigger(tenant=tenant, request=trigger, wait_seconds=wait)


def _via(request: Request, settings: Settings) -> Via:
    peer = request.client.host if request.client else None
    return Via(
        peer=peer,
        scheme=request.scope.get("scheme", "http"),
        host=request.headers.get("host"),
        peer_is_trusted_proxy=is_trusted(peer, settings.trusted_proxy_networks),
    )


def _path_after(request: Request, *, mode: Mode) -> str:
    """The raw path after /<mode>/: an encoded '/' in the prefix itself does not count."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    prefix = f"/{mode}/".encode()
    if not raw_path.startswith(prefix):
        raise InvalidWebhookPath(f"Trigger paths start with /{mode}/ spelled out, not encoded.")
    return raw_path[len(prefix) :].decode("latin-1")


def _applied_preferences(preferences: dict[str, str], *, max_wait: int) -> dict[str, str]:
    """The preferences this gateway honours, as it applies them (wait is capped)."""
    if "respond-async" in preferences:
        return {"respond-async": ""}
    wait = parse_prefer_wait([f"wait={preferences['wait']}"]) if "wait" in preferences else None
    return {} if wait is None else {"wait": str(min(wait, max_wait))}


def _preference_applied(applied: dict[str, str]) -> str:
    return ", ".join(f"{token}={value}" if value else token for token, value in applied.items())


def _accepted(accepted: Accepted, *, key: str) -> Response:
    location = location_for(key)
    response = JSONResponse(
        {"key": key, "status": accepted.status, "location": location}, status_code=202
    )
    response.headers["Location"] = location
    response.headers[EXECUTION_HEADER] = location
    if not accepted.claimed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def _read_body(request: Request, *, holding: Holding, limit: int, within: float) -> bytes:
    declared = ascii_int(request.headers.get("content-length", ""), max_digits=19)
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    busy: GatewayBusy | None = None
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                if busy is None:  # as they arrive: a declared length holds nothing yet
                    busy = _admit(holding, size)
                # Refused, the rest is read and dropped: closing on a caller still sending would
                # reset the connection and lose the answer that says why.
                if busy is None:
                    chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"The body did not arrive whole within {within:g} s (GATE_BODY_TIMEOUT_SECONDS); "
            "nothing was forwarded."
        ) from None
    if busy is not None:
        raise busy
    if declared is not None and size != declared:
        # uvicorn hands the app no body for a request that asks to upgrade (curl --http2 on
        # http:// sends Upgrade: h2c): forwarding that would record an empty trigger.
        raise InvalidRequest(
            f"The body arrived with {size} of the {declared} bytes its Content-Length "
            "declares (a request asking to upgrade, such as HTTP/2 over plain http, loses it "
            "here); nothing was forwarded. Send it without Upgrade."
        )
    return b"".join(chunks)


def _admit(holding: Holding, size: int) -> GatewayBusy | None:
    """Takes the body's bytes so far, or says why not."""
    try:
        holding.take(size - holding.size)
    except GatewayBusy as busy:
        return busy
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body is larger than {limit} bytes (GATE_MAX_BODY_BYTES); nothing was forwarded."
    )


def _response(answer: GatewayAnswer, *, key: str, head: bool, services: Services) -> Response:
    body = answer.body
    if head:
        if isinstance(body, Body):
            body.close()
        body = Body()
    elif not isinstance(body, Body):  # refused, a replay is only asked again; a problem is small
        body = Body.of(body, budget=services.budget, refusable=answer.replayed)
    settings = services.settings
    response = HeldResponse(
        body,
        status_code=answer.status,
        timeout_seconds=settings.send_timeout_seconds,
        min_bytes_per_second=settings.send_min_bytes_per_second,
    )
    for name, value in answer.headers:
        response.headers.append(name, value)
    response.headers[EXECUTION_HEADER] = location_for(key)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
