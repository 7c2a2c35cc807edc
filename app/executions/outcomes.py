"""What n8n's answer (or its absence) means for an attempt, as pure functions: the outcome to
record, and whether and when an async delivery runs again."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from app.delivery.backoff import Backoff, parse_retry_after
from app.errors import PROBLEM_CONTENT_TYPE, ForwardFailed
from app.executions.decisions import UnknownOutcomePolicy
from app.executions.repo import Outcome
from app.forwarding.answers import OUTCOME_UNKNOWN, AnswerKind
from app.forwarding.client import N8nResponse

_ERROR_TYPES = {
    AnswerKind.NOT_REGISTERED: "n8n-not-registered",
    AnswerKind.WRONG_METHOD: "n8n-method-not-registered",
    AnswerKind.COULD_NOT_EXECUTE: "n8n-could-not-execute",
    AnswerKind.REFUSED: "n8n-refused",
}
# n8n refused the request itself (nothing ran), and would refuse it again as it is: an async
# delivery ends at once; a sync caller's fixed retry with the same key runs.
PERMANENT = frozenset({AnswerKind.WRONG_METHOD, AnswerKind.REFUSED})


def answered(
    response: N8nResponse, *, max_stored_body_bytes: int, rate_limit_retryable: bool
) -> Outcome:
    """The outcome of an attempt n8n answered: completed with the workflow's answer, or failed
    when the answer is n8n's own (not registered, starting, refused...)."""
    rate_limited = rate_limit_retryable and response.status == 429
    failed = response.kind is not AnswerKind.WORKFLOW or rate_limited
    return Outcome(
        status="failed" if failed else "completed",
        response_status=response.status,
        response_content_type=response.content_type,
        response_headers=response.headers,
        response_body=response.body.prefix(max_stored_body_bytes),
        response_body_bytes=response.body.size,
        error_type=_error_type(response) if failed else None,
        error_detail=_error_detail(response) if failed else None,
        outcome_unknown=response.kind in OUTCOME_UNKNOWN,
    )


def unanswered(error: ForwardFailed) -> Outcome:
    """The outcome of an attempt n8n did not answer (unreachable, timed out, cut off)."""
    return Outcome(
        status="failed",
        error_type=error.cause,
        error_detail=error.detail,
        outcome_unknown=error.maybe_ran,
    )


def answered_unusably(error: ForwardFailed, *, body: bytes) -> Outcome:
    """n8n ran the workflow and answered, but unusably (too large, malformed): the gateway's
    problem `body` is the answer, recorded and replayed like any other."""
    return Outcome(
        status="completed",
        response_status=error.status_code,
        response_content_type=PROBLEM_CONTENT_TYPE,
        response_headers=[("Content-Type", PROBLEM_CONTENT_TYPE)],
        response_body=body,
        response_body_bytes=len(body),
        error_type=error.cause,
        error_detail=error.detail,
    )


def next_attempt_at(
    *,
    attempt: int,
    outcome: Outcome,
    response: N8nResponse | None,
    backoff: Backoff,
    unknown_outcome: UnknownOutcomePolicy,
    now: datetime,
) -> datetime | None:
    """When an async delivery runs again after `outcome`, or None when it is final."""
    if outcome.status != "failed" or backoff.exhausted(attempt):
        return None
    if response is not None and response.kind in PERMANENT:
        return None  # the same request would be refused again: a dead letter at once
    if outcome.outcome_unknown and unknown_outcome == "refuse":
        return None
    retry_after = parse_retry_after(response.header("retry-after") if response else None)
    return now + timedelta(seconds=backoff.delay(attempt, retry_after=retry_after))


def _error_type(response: N8nResponse) -> str:
    if response.kind is AnswerKind.WORKFLOW:  # only a 429 of an async delivery gets here
        return "n8n-rate-limited"
    return _ERROR_TYPES.get(response.kind, "n8n-error")


def _error_detail(response: N8nResponse) -> str:
    if response.kind is AnswerKind.PROXY_TIMEOUT:
        return f"n8n answered {response.status}, a proxy's timeout: the workflow may have run"
    if response.kind is AnswerKind.COULD_NOT_EXECUTE:
        return (
            f"n8n answered {response.status} 'There was a problem executing the workflow', as it "
            "does for a trigger that arrives while it stops: it may run the workflow when it "
            "starts again, or never"
        )
    if response.kind is AnswerKind.REFUSED:
        return (
            f"n8n refused the request ({response.status}: its Webhook node's authentication or "
            "IP allow-list, or a request head too large); nothing ran, and it is not delivered "
            "again as it is"
        )
    if response.kind is AnswerKind.WRONG_METHOD:
        return (
            f"n8n answered {response.status}: this path is registered for another method, "
            "so it is not delivered again (retry it once the workflow takes this method)"
        )
    return f"n8n answered {response.status}{_n8n_message(response)}"


def _n8n_message(response: N8nResponse) -> str:
    """`: <message>` of a JSON error body such as n8n's own, for the log and the status."""
    try:
        payload = json.loads(response.body.prefix(4096))
    except ValueError:
        return ""
    message = payload.get("message") if isinstance(payload, dict) else None
    return f": {message[:200]}" if isinstance(message, str) and message else ""
