"""The HTTP pieces every trigger edge shares (/webhook, /webhook-test and the provider routes'
/in): the body read under the memory budget, and the answers: n8n's (fresh or replayed), a 202
for an accepted async trigger, and errors that say where the key's execution is."""

from __future__ import annotations

import asyncio

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.config import Settings
from app.deps import Services
from app.errors import (
    ExecutionInFlight,
    ForwardFailed,
    GateError,
    GatewayBusy,
    IdempotencyKeyReused,
    InvalidRequest,
    OutcomeUnknown,
    PayloadTooLarge,
    RequestTimeout,
    SigningUnavailable,
)
from app.executions.gateway_answer import GatewayAnswer
from app.executions.repo import Accepted
from app.executions.trigger import location_for
from app.forwarding.headers import Via, is_trusted
from app.memory import Body, Holding
from app.numbers import ascii_int
from app.sending import HeldResponse

# Every method n8n's Webhook node takes.
TRIGGER_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
# The gateway's own header on every trigger answer: where the execution can be looked up.
# n8n's own Location (a Respond to Webhook redirect) passes untouched.
EXECUTION_HEADER = "N8n-Gate-Execution"


def about_key(error: GateError, *, key: str, applied: dict[str, str]) -> GateError:
    """A trigger's error once its key is known says where the key's execution is."""
    error.headers.setdefault("Location", location_for(key))
    error.headers[EXECUTION_HEADER] = location_for(key)
    if applied:
        error.headers["Preference-Applied"] = preference_applied(applied)
    return error


def count_answer(response: Response, *, error: GateError | None, mode: metrics.TriggerMode) -> None:
    """Counts a trigger's (or a provider delivery's) answer in n8n_gate_triggers_total."""
    metrics.trigger_answered(
        mode=mode, outcome=_outcome(response, error), status=response.status_code
    )


def count_failure(*, mode: metrics.TriggerMode) -> None:
    """Counts a trigger that ended in an unexpected error (a 500 from the outer handler)."""
    metrics.trigger_answered(mode=mode, outcome="error", status=500)


def _outcome(response: Response, error: GateError | None) -> metrics.TriggerOutcome:
    if error is None:
        if response.headers.get("idempotent-replayed") == "true":
            return "replayed"
        return "accepted" if response.status_code == 202 else "forwarded"
    if isinstance(error, ExecutionInFlight):
        return "in_flight"
    if isinstance(error, IdempotencyKeyReused):
        return "key_reused"
    if isinstance(error, OutcomeUnknown):
        return "outcome_unknown"
    if isinstance(error, ForwardFailed) and not isinstance(error, SigningUnavailable):
        return "forwarded"  # n8n was called, and failed
    return "rejected"


def asks_async(prefer: list[str]) -> bool:
    """Whether Prefer asks for respond-async: the trigger's mode in its metrics, before (or
    without) the header being parsed whole."""
    return any("respond-async" in value.lower() for value in prefer)


def via_of(request: Request, settings: Settings) -> Via:
    peer = request.client.host if request.client else None
    return Via(
        peer=peer,
        scheme=request.scope.get("scheme", "http"),
        host=request.headers.get("host"),
        peer_is_trusted_proxy=is_trusted(peer, settings.trusted_proxy_networks),
    )


def preference_applied(applied: dict[str, str]) -> str:
    return ", ".join(f"{token}={value}" if value else token for token, value in applied.items())


def accepted_response(accepted: Accepted, *, key: str) -> Response:
    location = location_for(key)
    response = JSONResponse(
        {"key": key, "status": accepted.status, "location": location}, status_code=202
    )
    response.headers["Location"] = location
    response.headers[EXECUTION_HEADER] = location
    if not accepted.claimed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def read_body(request: Request, *, holding: Holding, limit: int, within: float) -> bytes:
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


def answer_response(answer: GatewayAnswer, *, key: str, head: bool, services: Services) -> Response:
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
