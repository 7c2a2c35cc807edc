"""The trigger endpoints, /webhook/<path> and /webhook-test/<path>: an ASGI middleware that
serves them ahead of FastAPI's routing.

A trigger is the gateway's hot path, and FastAPI's route machinery (dependency solving, exit
stacks, response wrapping) was a visible share of the CPU a trigger costs, so
`TriggerEndpoints` takes these two paths before FastAPI routes anything: it reads the headers
and the body itself, renders errors with the same `problem_response` as the app's handlers, and
hands every other request on to FastAPI (docs/adr/0004-triggers-outside-routing.md). The routes
this module declares only describe the trigger paths in /openapi.json; the middleware answers
first, so they are never reached. What a trigger request is (its key, path, preferences) is
parsed in app/executions/trigger.py, which knows no web framework; this is its HTTP edge.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn, get_args

from fastapi import APIRouter, Header, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import db
from app.deps import Services, get_services
from app.errors import (
    DatabaseUnavailable,
    ExecutionInFlight,
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
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
    ReadOnlyKey,
    RequestTimeout,
    Unauthorized,
)
from app.executions.gateway_answer import GatewayAnswer
from app.executions.repo import Accepted
from app.executions.trigger import (
    MAX_KEY_LENGTH,
    Mode,
    TriggerRequest,
    parse_idempotency_key,
    parse_prefer_wait,
    parse_preferences,
    parse_webhook_path,
)
from app.executions.trigger_http import (
    TRIGGER_METHODS,
    about_key,
    accepted_response,
    answer_response,
    asks_async,
    count_answer,
    count_failure,
    preference_applied,
    read_body,
    via_of,
)
from app.forwarding.headers import GATE_KEY_HEADER, to_forward
from app.logs import bind
from app.metrics import TriggerMode
from app.problems import as_problem, documented, problem_response
from app.request_ids import forwarded_with_id
from app.tenants.tenant import Tenant


class TriggerEndpoints:
    """Serves the trigger paths, /webhook/<path> and /webhook-test/<path>, ahead of FastAPI's
    routing (why: this module's docstring); everything else goes on to it. Errors become
    problem+json here, as the app's handlers would render them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = _trigger_mode(scope["path"]) if scope["type"] == "http" else None
        if mode is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        asked_async = asks_async(request.headers.getlist("prefer"))
        counted_as: TriggerMode = "async" if asked_async else "sync"
        error: GateError | None = None
        try:
            response = await _trigger(request, mode=mode)
        except GateError as exc:
            error = exc
        except db.DatabaseUnreachable as exc:
            error = as_problem(exc)
        except Exception:
            count_failure(mode=counted_as)  # the outer handler answers 500
            raise
        if error is not None:
            response = problem_response(error, instance=request.url.path)
        count_answer(response, error=error, mode=counted_as)
        await response(scope, receive, send)


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
        access="write",
    )
    await services.rate_limiter.take(tenant.id)
    bind(tenant=tenant.name)
    workflow_path, forwarded_path = parse_webhook_path(_path_after(request, mode=mode))
    key = parse_idempotency_key(request.headers.getlist("idempotency-key"))
    bind(idempotency_key=key, workflow=f"{mode}/{workflow_path}")
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
            headers=forwarded_with_id(
                to_forward(request.headers.items(), via=via_of(request, services.settings))
            ),
            body=await read_body(
                request,
                holding=holding,
                limit=services.settings.max_body_bytes,
                within=services.settings.body_timeout_seconds,
            ),
        )
        outcome = await _run_trigger(services, tenant, trigger, applied=applied)
    except GateError as exc:
        raise about_key(exc, key=key, applied=applied) from None
    except db.DatabaseUnreachable as exc:
        raise about_key(as_problem(exc), key=key, applied=applied) from exc
    finally:
        holding.release()
    try:
        if isinstance(outcome, Accepted):
            response = accepted_response(outcome, key=key)
        else:
            head = request.method == "HEAD"
            response = answer_response(outcome, key=key, head=head, services=services)
    except GateError as exc:  # a replay the budget has no room for
        raise about_key(exc, key=key, applied=applied) from None
    if applied:
        response.headers["Preference-Applied"] = preference_applied(applied)
    return response


async def _run_trigger(
    services: Services, tenant: Tenant, trigger: TriggerRequest, *, applied: dict[str, str]
) -> Accepted | GatewayAnswer:
    if "respond-async" in applied:
        return await services.executions.accept(tenant=tenant, request=trigger)
    wait = int(applied.get("wait", "0"))
    return await services.executions.trigger(tenant=tenant, request=trigger, wait_seconds=wait)


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


# What /openapi.json says about the trigger paths comes from these routes, declared like any
# other but never reached: TriggerEndpoints answers the paths first. The app includes them last,
# so every other route is matched before them.

_TRIGGER_ERRORS = (
    ReadOnlyKey,
    RateLimited,
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

_TRIGGER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "n8n's answer, or its replay (any status n8n gave)."},
    202: {"description": "Stored; the gateway delivers it (Prefer: respond-async)."},
    **documented(*_TRIGGER_ERRORS),
}


async def trigger(
    path: str,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_KEY_LENGTH + 2,  # or that many quoted ("...")
            pattern=r"^[\x20-\x7e]+$",
            description=(
                f"1-{MAX_KEY_LENGTH} printable ASCII characters, bare or as an RFC 8941 string "
                '("abc" and abc are the same key).'
            ),
        ),
    ],
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer", description="respond-async (202, delivered by the gateway) or wait=<s>."
        ),
    ] = None,
    gate_key: Annotated[
        str | None,
        Header(
            alias=GATE_KEY_HEADER,
            description="The API key, when Authorization is for n8n's webhook (then forwarded).",
        ),
    ] = None,
) -> NoReturn:
    """Declares the trigger paths for OpenAPI only: TriggerEndpoints answers them first. Reached
    only where the middleware does not see the path as a trigger (served under a root path)."""
    raise NotFound(
        "Triggers are served at /webhook/<path> and /webhook-test/<path> from the root of the "
        "gateway's address, not under a path prefix."
    )


def _documentation_router() -> APIRouter:
    router = APIRouter(tags=["triggers"])
    for mode in get_args(Mode):
        # One route a method: a route's methods share its operationId, which OpenAPI forbids.
        for method in TRIGGER_METHODS:
            router.add_api_route(
                f"/{mode}/{{path:path}}",
                trigger,
                methods=[method],
                summary=f"Run n8n's {mode} <path> once per Idempotency-Key",
                description=(
                    f"Forwarded to n8n's /{mode}/<path> with its method, query, headers and "
                    "body; a retry with the same key gets the recorded answer "
                    "(Idempotent-Replayed: true)."
                ),
                response_model=None,
                response_class=Response,  # no media type: n8n's answer is whatever n8n gives
                responses=_TRIGGER_RESPONSES,
                openapi_extra={"requestBody": {"content": {"*/*": {}}}},
            )
    return router


documentation_router = _documentation_router()
