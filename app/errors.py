"""Problem types (RFC 9457): what a caller is told, and with which status. Services raise these;
only the edge (app/problems.py) turns them into HTTP answers. Nothing here knows the web
framework, so every layer may raise them.

GateError                       every error a client may see
├── MissingIdempotencyKey       400
├── InvalidIdempotencyKey       400
├── InvalidWebhookPath          400
├── InvalidRequest              400
├── Unauthorized                401
├── NotFound                    404
├── ExecutionNotFound           404
├── MethodNotAllowed            405
├── RequestTimeout              408
├── ExecutionInFlight           409
├── PayloadTooLarge             413
├── IdempotencyKeyReused        422
├── InternalError               500
├── N8nUnreachable              502
├── N8nAnswerTooLarge           502
├── DatabaseUnavailable         503
├── GatewayBusy                 503
├── N8nStarting                 503
└── N8nTimeout                  504
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:n8n-gate:problem:"


class GateError(Exception):
    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug

    def to_problem(self, *, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body

    def problem_json(self, *, instance: str | None = None) -> bytes:
        """The problem as its answer's body carries it (and an execution records it)."""
        return json.dumps(
            self.to_problem(instance=instance),
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        ).encode()


class MissingIdempotencyKey(GateError):
    status_code = 400
    slug = "idempotency-key-missing"
    title = "Idempotency-Key header required"


class InvalidIdempotencyKey(GateError):
    status_code = 400
    slug = "idempotency-key-invalid"
    title = "Malformed Idempotency-Key header"


class InvalidWebhookPath(GateError):
    status_code = 400
    slug = "webhook-path-invalid"
    title = "Invalid webhook path"


class InvalidRequest(GateError):
    status_code = 400
    slug = "invalid-request"
    title = "Invalid request"


class Unauthorized(GateError):
    status_code = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class MissingDeliveryKey(GateError):
    status_code = 400
    slug = "delivery-key-missing"
    title = "The delivery does not carry its key where its route says"


class SignatureInvalid(GateError):
    status_code = 401
    slug = "signature-invalid"
    title = "The delivery's signature does not verify"


class ReadOnlyKey(GateError):
    status_code = 403
    slug = "read-only-key"
    title = "This API key may only read"


class NotFound(GateError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class ExecutionNotFound(GateError):
    status_code = 404
    slug = "execution-not-found"
    title = "No execution for this idempotency key"


class RouteNotFound(GateError):
    status_code = 404
    slug = "route-not-found"
    title = "No provider route by this name"


class MethodNotAllowed(GateError):
    status_code = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class RequestTimeout(GateError):
    status_code = 408
    slug = "request-timeout"
    title = "The request body did not arrive in time"


class ExecutionInFlight(GateError):
    status_code = 409
    slug = "execution-in-flight"
    title = "A request with this idempotency key is still running"


class InFlightWithId(ExecutionInFlight):
    """ExecutionInFlight that knows which execution is running, so a caller can wait on it."""

    def __init__(self, detail: str, *, execution_id: int, headers: Mapping[str, str]) -> None:
        super().__init__(detail, headers=headers)
        self.execution_id = execution_id


class NotRetryable(GateError):
    status_code = 409
    slug = "execution-not-retryable"
    title = "This execution cannot be put back in the queue"


class OutcomeUnknown(GateError):
    status_code = 409
    slug = "execution-outcome-unknown"
    title = "The first request may have run; it is not run again"


class PayloadTooLarge(GateError):
    status_code = 413
    slug = "payload-too-large"
    title = "Request body too large"


class IdempotencyKeyReused(GateError):
    status_code = 422
    slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


class RateLimited(GateError):
    status_code = 429
    slug = "rate-limited"
    title = "Too many requests for this tenant"


class InternalError(GateError):
    status_code = 500
    slug = "internal-error"
    title = "Internal error"


class ForwardFailed(GateError):
    """n8n gave no usable answer. `cause` is what the attempt records; `maybe_ran` is true when
    the request may have reached n8n (so the workflow may have run)."""

    # True when n8n ran the workflow and answered, only not usably: the problem the caller gets
    # is then recorded as the execution's answer and replayed, and the workflow never runs again.
    final: ClassVar[bool] = False

    def __init__(self, detail: str, *, cause: str, maybe_ran: bool) -> None:
        super().__init__(detail)
        self.cause = cause
        self.maybe_ran = maybe_ran


class N8nUnreachable(ForwardFailed):
    status_code = 502
    slug = "n8n-unreachable"
    title = "n8n could not be reached"


class SigningUnavailable(ForwardFailed):
    """The call could not be signed (the tenant's secrets were out of reach): nothing was sent."""

    status_code = 503
    slug = "signing-secret-unavailable"
    title = "The call to n8n could not be signed"


class N8nAnswerTooLarge(ForwardFailed):
    """n8n's answer is over the gateway's limit: the workflow ran, and would give the same
    answer again."""

    status_code = 502
    slug = "n8n-answer-too-large"
    title = "n8n's answer is too large"
    final = True


class DatabaseUnavailable(GateError):
    status_code = 503
    slug = "database-unavailable"
    title = "Database unavailable"


class QueryTooBroad(GateError):
    """A dashboard query ran past its statement timeout: its filters match too much."""

    status_code = 503
    slug = "query-too-broad"
    title = "Too much to read"


class GatewayBusy(GateError):
    """The process holds as many bytes for requests in flight as it may: nothing was taken."""

    status_code = 503
    slug = "gateway-busy"
    title = "Gateway busy"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class N8nStarting(ForwardFailed):
    """n8n answered with its own start-up pages until the wait ran out: nothing ran."""

    status_code = 503
    slug = "n8n-starting"
    title = "n8n is starting"

    def __init__(self, detail: str, *, cause: str, maybe_ran: bool) -> None:
        super().__init__(detail, cause=cause, maybe_ran=maybe_ran)
        self.headers.setdefault("Retry-After", "5")


class N8nTimeout(ForwardFailed):
    status_code = 504
    slug = "n8n-timeout"
    title = "n8n did not answer in time"
