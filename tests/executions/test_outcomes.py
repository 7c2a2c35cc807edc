"""What n8n's answer means for an attempt, without a database or an n8n."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.delivery.backoff import Backoff
from app.errors import N8nAnswerTooLarge, N8nUnreachable
from app.executions import outcomes
from app.executions.decisions import UnknownOutcomePolicy
from app.executions.repo import Outcome
from app.forwarding.answers import AnswerKind
from app.forwarding.client import N8nResponse
from app.memory import Body

NOW = datetime(2026, 12, 6, tzinfo=UTC)
BACKOFF = Backoff(base_seconds=1, cap_seconds=60, max_attempts=5)
REFUSED = N8nUnreachable("refused", cause="n8n-unreachable", maybe_ran=False)
CUT_OFF = N8nUnreachable("reset", cause="n8n-connection-lost", maybe_ran=True)


def response(
    status: int, kind: AnswerKind, *, body: bytes = b"", retry_after: str | None = None
) -> N8nResponse:
    headers = [("Retry-After", retry_after)] if retry_after else []
    return N8nResponse(
        status=status,
        content_type="application/json",
        headers=headers,
        body=Body.of(body, refusable=False),
        kind=kind,
    )


def next_attempt_at(
    outcome: Outcome,
    answer: N8nResponse | None,
    *,
    attempt: int = 1,
    unknown_outcome: UnknownOutcomePolicy = "retry",
) -> datetime | None:
    return outcomes.next_attempt_at(
        attempt=attempt,
        outcome=outcome,
        response=answer,
        backoff=BACKOFF,
        unknown_outcome=unknown_outcome,
        now=NOW,
    )


def test_the_workflows_own_answer_completes_whatever_its_status() -> None:
    answer = response(500, AnswerKind.WORKFLOW, body=b'{"error":"card declined"}')
    outcome = outcomes.answered(answer, max_stored_body_bytes=1024, rate_limit_retryable=False)
    assert outcome.status == "completed"
    assert outcome.response_status == 500
    assert outcome.error_type is None


def test_n8ns_own_not_registered_answer_fails_with_its_message() -> None:
    body = b'{"code":404,"message":"The requested webhook \\"POST orders\\" is not registered."}'
    answer = response(404, AnswerKind.NOT_REGISTERED, body=body)
    outcome = outcomes.answered(answer, max_stored_body_bytes=1024, rate_limit_retryable=False)
    assert outcome.status == "failed"
    assert outcome.error_type == "n8n-not-registered"
    assert outcome.error_detail == (
        'n8n answered 404: The requested webhook "POST orders" is not registered.'
    )


def test_the_stored_body_is_cut_at_the_limit_and_its_whole_size_kept() -> None:
    answer = response(200, AnswerKind.WORKFLOW, body=b"x" * 100)
    outcome = outcomes.answered(answer, max_stored_body_bytes=10, rate_limit_retryable=False)
    assert outcome.response_body == b"x" * 10
    assert outcome.response_body_bytes == 100


def test_a_workflows_429_is_final_for_a_caller_but_retried_for_a_delivery() -> None:
    answer = response(429, AnswerKind.WORKFLOW)
    sync = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=False)
    delivery = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=True)
    assert sync.status == "completed"
    assert (delivery.status, delivery.error_type) == ("failed", "n8n-rate-limited")


def test_a_proxys_timeout_may_have_run_the_workflow() -> None:
    answer = response(504, AnswerKind.PROXY_TIMEOUT)
    outcome = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=False)
    assert outcome.outcome_unknown


def test_an_unanswered_attempt_says_whether_it_may_have_run() -> None:
    refused = outcomes.unanswered(REFUSED)
    cut_off = outcomes.unanswered(CUT_OFF)
    assert (refused.status, refused.outcome_unknown) == ("failed", False)
    assert (cut_off.status, cut_off.outcome_unknown) == ("failed", True)


def test_a_failed_delivery_runs_again_no_sooner_than_retry_after() -> None:
    answer = response(503, AnswerKind.SERVER_ERROR, retry_after="3600")
    outcome = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=True)
    assert next_attempt_at(outcome, answer) == NOW + timedelta(seconds=3600)


def test_a_failed_delivery_backs_off_within_the_ceiling() -> None:
    outcome = outcomes.unanswered(REFUSED)
    at = next_attempt_at(outcome, None, attempt=3)
    assert at is not None
    assert NOW <= at <= NOW + timedelta(seconds=4)


def test_a_completed_outcome_and_the_last_attempt_are_final() -> None:
    done = outcomes.answered(
        response(200, AnswerKind.WORKFLOW), max_stored_body_bytes=0, rate_limit_retryable=True
    )
    failed = outcomes.unanswered(REFUSED)
    assert next_attempt_at(done, None) is None
    assert next_attempt_at(failed, None, attempt=BACKOFF.max_attempts) is None


@pytest.mark.parametrize("kind", [AnswerKind.WRONG_METHOD, AnswerKind.REFUSED])
def test_a_request_n8n_would_refuse_again_is_a_dead_letter_at_once(kind: AnswerKind) -> None:
    answer = response(404 if kind is AnswerKind.WRONG_METHOD else 403, kind)
    outcome = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=True)
    assert outcome.status == "failed"
    assert next_attempt_at(outcome, answer) is None


def test_an_unknown_outcome_runs_again_only_when_the_policy_retries() -> None:
    answer = response(504, AnswerKind.PROXY_TIMEOUT)
    outcome = outcomes.answered(answer, max_stored_body_bytes=0, rate_limit_retryable=True)
    assert next_attempt_at(outcome, answer, unknown_outcome="refuse") is None
    assert next_attempt_at(outcome, answer, unknown_outcome="retry") is not None


def test_an_unusable_answer_completes_with_the_gateways_problem() -> None:
    error = N8nAnswerTooLarge("over 1 MiB", cause="n8n-answer-too-large", maybe_ran=True)
    body = error.problem_json(instance="/webhook/orders")
    outcome = outcomes.answered_unusably(error, body=body)
    assert (outcome.status, outcome.response_status) == ("completed", 502)
    assert outcome.response_content_type == "application/problem+json"
    assert outcome.response_body == body
    assert outcome.error_type == "n8n-answer-too-large"
