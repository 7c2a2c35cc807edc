"""Attempt history, renewable leases, unknown outcomes and truncated bodies.

- `execution_attempts`: one row per attempt (start, end, outcome, n8n's status, error), under
  the same forced RLS as `executions`.
- `executions.outcome_unknown`: the last attempt reached n8n but no answer came back, so the
  workflow may have run.
- `executions.response_body_bytes`: the size of n8n's answer; when it is larger than the stored
  body, the stored body was truncated.
- The trigger-path functions now keep the attempt rows, and `renew_execution_lease` lets the
  process running an attempt extend its lease while the forward is in flight.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_ATTEMPTS = """
CREATE TABLE execution_attempts (
    execution_id    bigint NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    tenant_id       uuid NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    outcome         text CHECK (outcome IN ('completed', 'failed', 'abandoned')),
    n8n_status      integer,
    error_type      text,
    error_detail    text,
    PRIMARY KEY (execution_id, attempt)
)
"""

ALTER_EXECUTIONS = """
ALTER TABLE executions
    ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false,
    ADD COLUMN response_body_bytes bigint
"""

ATTEMPTS_RLS = [
    "ALTER TABLE execution_attempts ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE execution_attempts FORCE ROW LEVEL SECURITY",
    """
    CREATE POLICY execution_attempts_tenant_isolation ON execution_attempts
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    """,
    "GRANT SELECT, INSERT, UPDATE, DELETE ON execution_attempts TO n8n_gate_app",
]

REPLACE_CLAIM = """
CREATE OR REPLACE FUNCTION claim_execution(
    p_tenant uuid, p_key text, p_fingerprint bytea, p_method text, p_mode text,
    p_workflow_path text, p_lease_seconds double precision
)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO executions AS e (
            tenant_id, idempotency_key, fingerprint, method, mode, workflow_path,
            status, attempts, lease_expires_at, started_at
        )
        VALUES (
            p_tenant, p_key, p_fingerprint, p_method, p_mode, p_workflow_path,
            'running', 1, now() + make_interval(secs => p_lease_seconds), now()
        )
        ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
        RETURNING e
    ), first_attempt AS (
        INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
        SELECT (i.e).id, 1, p_tenant FROM inserted i
    )
    SELECT true, false, (i.e)::executions FROM inserted i;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT false, e.lease_expires_at < now(), e
        FROM executions e
        WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key;
    END IF;
END
$$
"""

# A running execution whose lease ran out was abandoned by a process that died: its attempt is
# closed as such before the next one starts.
REPLACE_RETAKE = """
CREATE OR REPLACE FUNCTION retake_execution(
    p_tenant uuid, p_key text, p_lease_seconds double precision
)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    taken executions;
    was_abandoned boolean;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    SELECT e.status = 'running' INTO was_abandoned
    FROM executions e
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key
      AND (e.status = 'failed' OR (e.status = 'running' AND e.lease_expires_at < now()))
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE executions AS e
    SET status = 'running', attempts = e.attempts + 1,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
        started_at = now(), finished_at = NULL, updated_at = now(), outcome_unknown = false,
        response_status = NULL, response_content_type = NULL, response_headers = NULL,
        response_body = NULL, response_body_bytes = NULL,
        last_error_type = CASE WHEN was_abandoned THEN 'abandoned' ELSE e.last_error_type END,
        last_error_detail = CASE WHEN was_abandoned
            THEN 'the process running this attempt stopped before recording its outcome'
            ELSE e.last_error_detail END
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key
    RETURNING e.* INTO taken;
    IF was_abandoned THEN
        UPDATE execution_attempts
        SET outcome = 'abandoned', ended_at = now(), error_type = 'abandoned',
            error_detail = 'the process running this attempt stopped before recording its outcome'
        WHERE execution_id = taken.id AND attempt = taken.attempts - 1 AND ended_at IS NULL;
    END IF;
    INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
    VALUES (taken.id, taken.attempts, p_tenant);
    RETURN QUERY SELECT true, false, taken;
END
$$
"""

DROP_OLD_RECORD = (
    "DROP FUNCTION record_execution_outcome(uuid, bigint, integer, text, integer, text, jsonb, "
    "bytea, text, text)"
)

CREATE_RECORD = """
CREATE FUNCTION record_execution_outcome(
    p_tenant uuid, p_id bigint, p_attempt integer, p_status text, p_response_status integer,
    p_response_content_type text, p_response_headers jsonb, p_response_body bytea,
    p_response_body_bytes bigint, p_error_type text, p_error_detail text,
    p_outcome_unknown boolean
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET status = p_status, response_status = p_response_status,
        response_content_type = p_response_content_type,
        response_headers = p_response_headers, response_body = p_response_body,
        response_body_bytes = p_response_body_bytes, outcome_unknown = p_outcome_unknown,
        last_error_type = coalesce(p_error_type, last_error_type),
        last_error_detail = CASE WHEN p_error_type IS NULL THEN last_error_detail
                                 ELSE p_error_detail END,
        lease_expires_at = NULL, finished_at = now(), updated_at = now()
    WHERE tenant_id = p_tenant AND id = p_id AND attempts = p_attempt AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE execution_attempts
    SET ended_at = now(), outcome = p_status, n8n_status = p_response_status,
        error_type = p_error_type, error_detail = p_error_detail
    WHERE execution_id = p_id AND attempt = p_attempt;
    RETURN true;
END
$$
"""

# False when the attempt no longer holds the execution (taken over, or finished).
CREATE_RENEW = """
CREATE FUNCTION renew_execution_lease(
    p_tenant uuid, p_id bigint, p_attempt integer, p_lease_seconds double precision
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    WHERE tenant_id = p_tenant AND id = p_id AND attempts = p_attempt AND status = 'running';
    RETURN FOUND;
END
$$
"""

NEW_SIGNATURES = [
    "record_execution_outcome(uuid, bigint, integer, text, integer, text, jsonb, bytea, bigint, "
    "text, text, boolean)",
    "renew_execution_lease(uuid, bigint, integer, double precision)",
]

# Executions created before this revision get their attempt history from what they recorded.
BACKFILL_ATTEMPTS = """
INSERT INTO execution_attempts (
    execution_id, attempt, tenant_id, started_at, ended_at, outcome, n8n_status,
    error_type, error_detail
)
SELECT id, attempts, tenant_id, coalesce(started_at, created_at), finished_at,
       CASE WHEN status IN ('completed', 'failed') THEN status END,
       response_status,
       CASE WHEN status = 'failed' THEN last_error_type END,
       CASE WHEN status = 'failed' THEN last_error_detail END
FROM executions WHERE attempts > 0
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_ATTEMPTS)
    op.execute(ALTER_EXECUTIONS)
    for statement in ATTEMPTS_RLS:
        op.execute(statement)
    op.execute(BACKFILL_ATTEMPTS)
    op.execute(REPLACE_CLAIM)
    op.execute(REPLACE_RETAKE)
    op.execute(DROP_OLD_RECORD)
    op.execute(CREATE_RECORD)
    op.execute(CREATE_RENEW)
    for signature in NEW_SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")


def downgrade() -> None:
    raise NotImplementedError("0003 adds attempt history; restore from a backup to go back.")
