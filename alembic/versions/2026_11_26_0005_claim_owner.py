"""Claims carry their owner, so a claim whose answer was lost can be released.

When the connection drops while `claim_execution` runs, the process cannot tell whether the
claim committed. It now passes a fresh owner token with every claim, and once the database is
back it calls `release_unforwarded_claim` with that token: if the claim did commit, the
execution is marked failed ("claim-interrupted", nothing was sent to n8n) instead of staying
`running` until its lease runs out.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_OWNER = "ALTER TABLE executions ADD COLUMN lease_owner uuid"

DROP_OLD = [
    "DROP FUNCTION claim_execution(uuid, text, bytea, text, text, text, double precision)",
    "DROP FUNCTION retake_execution(uuid, text, double precision)",
]

CREATE_CLAIM = """
CREATE FUNCTION claim_execution(
    p_tenant uuid, p_key text, p_fingerprint bytea, p_method text, p_mode text,
    p_workflow_path text, p_lease_seconds double precision, p_owner uuid
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
            status, attempts, lease_expires_at, lease_owner, started_at
        )
        VALUES (
            p_tenant, p_key, p_fingerprint, p_method, p_mode, p_workflow_path,
            'running', 1, now() + make_interval(secs => p_lease_seconds), p_owner, now()
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

CREATE_RETAKE = """
CREATE FUNCTION retake_execution(
    p_tenant uuid, p_key text, p_lease_seconds double precision, p_owner uuid
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
        lease_expires_at = now() + make_interval(secs => p_lease_seconds), lease_owner = p_owner,
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

CREATE_RELEASE = """
CREATE FUNCTION release_unforwarded_claim(p_tenant uuid, p_key text, p_owner uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    released executions;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET status = 'failed', lease_expires_at = NULL, lease_owner = NULL,
        finished_at = now(), updated_at = now(), outcome_unknown = false,
        last_error_type = 'claim-interrupted',
        last_error_detail = 'the database connection was lost while claiming; '
                            'nothing was sent to n8n'
    WHERE tenant_id = p_tenant AND idempotency_key = p_key AND status = 'running'
      AND lease_owner = p_owner
    RETURNING * INTO released;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE execution_attempts
    SET ended_at = now(), outcome = 'failed', error_type = 'claim-interrupted',
        error_detail = 'the database connection was lost while claiming; nothing was sent to n8n'
    WHERE execution_id = released.id AND attempt = released.attempts;
    PERFORM pg_notify('n8n_gate_execution_finished', p_tenant::text || ' ' || released.id::text);
    RETURN true;
END
$$
"""

SIGNATURES = [
    "claim_execution(uuid, text, bytea, text, text, text, double precision, uuid)",
    "retake_execution(uuid, text, double precision, uuid)",
    "release_unforwarded_claim(uuid, text, uuid)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(ADD_OWNER)
    for statement in DROP_OLD:
        op.execute(statement)
    for statement in (CREATE_CLAIM, CREATE_RETAKE, CREATE_RELEASE):
        op.execute(statement)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")


def downgrade() -> None:
    raise NotImplementedError("0005 changes the claim functions; restore from a backup.")
