"""What a trigger does with its key: the state machine's decisions, as pure functions.

    (new key) ──claim──▶ running ──n8n answered, final──▶ completed ──(retries replay)
                            │
                            └──unreachable / timeout / 5xx / not registered──▶ failed
    failed, or running with its lease run out ──take over (attempts + 1)──▶ running

While an attempt runs, its process renews the lease; a process that dies stops renewing, and
the next request after the lease ran out takes the execution over (the attempt is "abandoned").
When n8n may have run the workflow without the gateway learning the outcome (read timeout,
connection lost, abandoned attempt), GATE_UNKNOWN_OUTCOME decides: "retry" runs it again
(at-least-once), "refuse" refuses the key (at-most-once).

Nothing here does I/O: the use cases (service.py) claim, read and act; this module says what
a claim's result means for the request in hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.executions.repo import AttemptLease, ExecutionRow

UnknownOutcomePolicy = Literal["retry", "refuse"]


@dataclass(frozen=True, slots=True)
class Run:
    """The claim took the key: forward the request under this attempt."""

    attempt: AttemptLease


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's execution completed: answer with what it recorded."""

    row: ExecutionRow


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The key's execution failed, or its attempt was abandoned: run it again."""

    row: ExecutionRow


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request with this key is running now."""

    execution_id: int


@dataclass(frozen=True, slots=True)
class KeyReused:
    """The key was first used for another request (method, path, query or body)."""


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """An earlier attempt may have run the workflow, and the policy refuses to run it again."""


Decision = Run | Replay | TakeOver | InFlight | KeyReused | OutcomeUnknown
Refusal = InFlight | KeyReused | OutcomeUnknown


def decide(
    claimed: AttemptLease | ExecutionRow,
    *,
    fingerprint: bytes,
    unknown_outcome: UnknownOutcomePolicy,
) -> Decision:
    """Decide a request from its claim: the attempt it took, or the row that holds the key."""
    if isinstance(claimed, AttemptLease):
        return Run(claimed)
    row = claimed
    if row.fingerprint != fingerprint:
        return KeyReused()
    if row.status == "completed":
        return Replay(row)
    abandoned = row.status == "running" and bool(row.lease_expired)
    if row.status != "failed" and not abandoned:
        return InFlight(row.id)
    if (row.outcome_unknown or abandoned) and unknown_outcome == "refuse":
        return OutcomeUnknown()
    return TakeOver(row)


def decide_accepted(*, stored_fingerprint: bytes, fingerprint: bytes) -> KeyReused | None:
    """An async trigger is stored, or finds its key held; held by another request, refuse."""
    return KeyReused() if stored_fingerprint != fingerprint else None
