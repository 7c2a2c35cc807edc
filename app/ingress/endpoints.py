"""The provider routes, /in/<route>: an ASGI middleware like the trigger endpoints
(app/executions/trigger_endpoints.py, docs/adr/0004-triggers-outside-routing.md), since a
delivery is a trigger once it is verified and keyed. No API key: the signature authenticates."""

from __future__ import annotations

from typing import NoReturn, get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app import db
from app.deps import Services, get_services
from app.errors import (
    DatabaseUnavailable,
    ExecutionInFlight,
    GateError,
    GatewayBusy,
    IdempotencyKeyReused,
    InvalidRequest,
    MethodNotAllowed,
    MissingDeliveryKey,
    N8nAnswerTooLarge,
    N8nStarting,
    N8nTimeout,
    N8nUnreachable,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    RouteNotFound,
    SignatureInvalid,
)
from app.executions.repo import Accepted
from app.executions.trigger import TriggerRequest
from app.executions.trigger_http import (
    TRIGGER_METHODS,
    about_key,
    accepted_response,
    answer_response,
    count_answer,
    count_failure,
    read_body,
    via_of,
)
from app.forwarding.headers import to_forward
from app.ingress.routes_file import Provider
from app.ingress.service import Delivery, Ingress, ServedRoute
from app.logs import bind
from app.metrics import TriggerMode
from app.problems import as_problem, documented, problem_response
from app.request_ids import forwarded_with_id

PREFIX = "/in/"
# A provider's credentials and key header are not forwarded: the execution's key is sent instead.
_NEVER_FORWARDED = frozenset({"authorization", "n8n-gate-key", "cookie", "idempotency-key"})


class IngressEndpoints:
    """Serves /in/<route> ahead of FastAPI's routing; everything else goes on to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        mode: list[TriggerMode] = ["sync"]  # the route's, once known
        error: GateError | None = None
        try:
            response = await _deliver(request, mode=mode)
        except GateError as exc:
            error = exc
        except db.DatabaseUnreachable as exc:
            error = as_problem(exc)
        except Exception:
            count_failure(mode=mode[0])  # the outer handler answers 500
            raise
        if error is not None:
            response = problem_response(error, instance=request.url.path)
        count_answer(response, error=error, mode=mode[0])
        await response(scope, receive, send)


async def _deliver(request: Request, *, mode: list[TriggerMode]) -> Response:
    if request.method not in TRIGGER_METHODS:
        raise MethodNotAllowed(
            "Provider routes take GET, HEAD, POST, PUT, PATCH or DELETE, as n8n's webhooks do.",
            headers={"Allow": ", ".join(TRIGGER_METHODS)},
        )
    services = await get_services(request)
    served = _served_route(request, services.ingress)
    mode[0] = "async" if served.route.respond == "async" else "sync"
    bind(route=served.route.name, tenant=served.tenant.name)
    assert services.ingress is not None  # _served_route found the route
    # Before the body is read: a sender without a plausible signature holds no memory.
    services.ingress.check_headers(served, request.headers.items())
    holding = services.budget.holding()  # the body's bytes, until the gateway is done with it
    key: str | None = None
    try:
        delivery = Delivery(
            method=request.method,
            query=request.scope["query_string"].decode("latin-1"),
            headers=request.headers.items(),
            body=await read_body(
                request,
                holding=holding,
                limit=services.settings.max_body_bytes,
                within=services.settings.body_timeout_seconds,
            ),
        )
        services.ingress.verify(served, delivery)
        # After the signature: a forger cannot use up the tenant's rate.
        await services.rate_limiter.take(served.tenant.id)
        challenge = services.ingress.handshake(served, delivery)
        if challenge is not None:
            return JSONResponse({"challenge": challenge})
        key = services.ingress.key(served, delivery)
        bind(idempotency_key=key, workflow=f"{served.route.mode}/{served.route.workflow_path}")
        trigger = _trigger_request(request, services, served, delivery, key=key)
        outcome = await services.ingress.deliver(served, trigger)
    except GateError as exc:
        raise exc if key is None else about_key(exc, key=key, applied={}) from None
    except db.DatabaseUnreachable as exc:
        problem = as_problem(exc)
        raise problem if key is None else about_key(problem, key=key, applied={}) from exc
    finally:
        holding.release()
    try:
        if isinstance(outcome, Accepted):
            return accepted_response(outcome, key=key)
        head = request.method == "HEAD"
        return answer_response(outcome, key=key, head=head, services=services)
    except GateError as exc:  # a replay the budget has no room for
        raise about_key(exc, key=key, applied={}) from None


def _served_route(request: Request, ingress: Ingress | None) -> ServedRoute:
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    name = raw_path[len(PREFIX) :].decode("latin-1")
    if ingress is None:
        raise RouteNotFound("This gateway serves no provider routes (GATE_ROUTES_FILE is unset).")
    return ingress.route(name)


def _trigger_request(
    request: Request, services: Services, served: ServedRoute, delivery: Delivery, *, key: str
) -> TriggerRequest:
    route = served.route
    # The signature is the provider's proof to the gateway, and a credential it sends is not
    # the gateway's to keep: neither is stored, logged or forwarded.
    unsigned = [
        (name, value)
        for name, value in delivery.headers
        if (lowered := name.lower()) not in served.signature_headers
        and lowered not in _NEVER_FORWARDED
    ]
    return TriggerRequest(
        key=key,
        method=delivery.method,
        mode=route.mode,
        workflow_path=route.workflow_path,
        raw_path=route.raw_path,
        query=delivery.query,
        # n8n sees the execution's key, as it does for a trigger that sent its own.
        headers=forwarded_with_id(
            [
                *to_forward(unsigned, via=via_of(request, services.settings)),
                ("Idempotency-Key", key),
            ]
        ),
        body=delivery.body,
    )


# /openapi.json describes /in/<route> through these routes, never reached: IngressEndpoints
# answers the paths first.

_INGRESS_ERRORS = (
    InvalidRequest,
    RateLimited,
    MissingDeliveryKey,
    SignatureInvalid,
    RouteNotFound,
    MethodNotAllowed,
    RequestTimeout,
    ExecutionInFlight,
    OutcomeUnknown,
    PayloadTooLarge,
    IdempotencyKeyReused,
    N8nUnreachable,
    N8nAnswerTooLarge,
    DatabaseUnavailable,
    GatewayBusy,
    N8nStarting,
    N8nTimeout,
)


async def deliver(route: str) -> NoReturn:
    """Declares the provider routes for OpenAPI only: IngressEndpoints answers them first.
    Reached only where the middleware does not see the path (served under a root path)."""
    raise RouteNotFound(
        "Provider routes are served at /in/<route> from the root of the gateway's address, "
        "not under a path prefix."
    )


def _documentation_router() -> APIRouter:
    router = APIRouter(tags=["provider routes"])
    providers = ", ".join(get_args(Provider))
    for method in TRIGGER_METHODS:
        router.add_api_route(
            f"{PREFIX}{{route}}",
            deliver,
            methods=[method],
            summary="A provider's signed delivery, run once per delivery id",
            description=(
                f"A route of GATE_ROUTES_FILE ({providers}): the signature is verified on the "
                "raw body, the key taken from the delivery (a header, a JSON Pointer or the "
                "body's SHA-256), then the delivery is accepted (202, respond = async) or "
                "forwarded to the route's n8n webhook (respond = sync); a redelivery gets the "
                "first answer (Idempotent-Replayed: true)."
            ),
            response_model=None,
            response_class=Response,
            responses={
                200: {"description": "n8n's answer, or its replay (respond = sync)."},
                202: {"description": "Stored; the gateway delivers it (respond = async)."},
                **documented(*_INGRESS_ERRORS),
            },
            openapi_extra={"requestBody": {"content": {"*/*": {}}}},
        )
    return router


documentation_router = _documentation_router()
