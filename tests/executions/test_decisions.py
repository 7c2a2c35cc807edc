"""The state machine's decisions, without a database: what a claim's result means for a request."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.executions import decisions
from app.executions.decisions import UnknownOutcomePolicy
from app.executions.repo import AttemptLease, ExecutionRow

FINGERPRINT = b"\x01" * 32
NOW = datetime(2026, 12, 6, tzinfo=UTC)
ROW = ExecutionRow(
    id=7,
    idempotency_key="order-1",
    fingerprint=FINGERPRINT,
    method="POST",
    mode="webhook",
    workflow_path="orders",
    status="running",
    attempts=1,
    lease_expires_at=NOW,
    lease_expired=False,
    response_status=None,
    response_content_type=None,
    response_headers=None,
    response_body=None,
    response_body_bytes=None,
    outcome_unknown=False,
    last_error_type=None,
    last_error_detail=None,
    created_at=NOW,
    updated_at=NOW,
    started_at=NOW,
    finished_at=None,
    expires_at=None,
    deliver_async=False,
    next_attempt_at=None,
)


def decide(
    claimed: AttemptLease | ExecutionRow,
    *,
    fingerprint: bytes = FINGERPRINT,
    unknown_outcome: UnknownOutcomePolicy = "retry",
) -> decisions.Decision:
    return decisions.decide(claimed, fingerprint=fingerprint, unknown_outcome=unknown_outcome)


def test_a_claim_that_took_the_key_runs() -> None:
    attempt = AttemptLease(execution_id=7, number=1)
    assert decide(attempt) == decisions.Run(attempt)


def test_a_completed_execution_is_replayed() -> None:
    row = replace(ROW, status="completed", response_status=200)
    assert decide(row) == decisions.Replay(row)


def test_a_running_execution_whose_lease_holds_is_in_flight() -> None:
    assert decide(ROW) == decisions.InFlight(execution_id=7)


def test_a_pending_async_execution_is_in_flight() -> None:
    assert decide(replace(ROW, status="pending", deliver_async=True)) == decisions.InFlight(7)


@pytest.mark.parametrize("status", ["completed", "running", "failed", "pending"])
def test_another_request_with_the_key_is_refused_whatever_the_status(status: str) -> None:
    row = replace(ROW, status=status)
    assert decide(row, fingerprint=b"\x02" * 32) == decisions.KeyReused()


def test_a_failed_execution_is_taken_over() -> None:
    row = replace(ROW, status="failed")
    assert decide(row) == decisions.TakeOver(row)


def test_an_abandoned_attempt_is_taken_over_when_unknown_outcomes_are_retried() -> None:
    row = replace(ROW, lease_expired=True)
    assert decide(row, unknown_outcome="retry") == decisions.TakeOver(row)


@pytest.mark.parametrize(
    "row",
    [
        replace(ROW, lease_expired=True),  # its process died mid-forward
        replace(ROW, status="failed", outcome_unknown=True),  # n8n's answer never came back
    ],
    ids=["abandoned", "failed-outcome-unknown"],
)
def test_an_execution_that_may_have_run_is_refused_when_the_policy_says_so(
    row: ExecutionRow,
) -> None:
    assert decide(row, unknown_outcome="refuse") == decisions.OutcomeUnknown()
    assert decide(row, unknown_outcome="retry") == decisions.TakeOver(row)


def test_a_failed_execution_known_not_to_have_run_is_taken_over_under_refuse() -> None:
    row = replace(ROW, status="failed", outcome_unknown=False)
    assert decide(row, unknown_outcome="refuse") == decisions.TakeOver(row)


def test_a_completed_execution_is_replayed_even_if_an_earlier_attempt_was_unknown() -> None:
    row = replace(ROW, status="completed", outcome_unknown=True, lease_expired=True)
    assert decide(row, unknown_outcome="refuse") == decisions.Replay(row)


def test_an_accepted_key_held_by_another_request_is_refused() -> None:
    assert (
        decisions.decide_accepted(stored_fingerprint=FINGERPRINT, fingerprint=b"\x02" * 32)
        == decisions.KeyReused()
    )
    same = decisions.decide_accepted(stored_fingerprint=FINGERPRINT, fingerprint=FINGERPRINT)
    assert same is None
