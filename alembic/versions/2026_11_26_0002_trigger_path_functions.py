"""The trigger path's statements as functions that name their tenant themselves.

Each function sets `app.tenant_id` for its own (implicit) transaction and then runs its
statement, under Row Level Security, as the calling role (SECURITY INVOKER). A trigger then
costs one round trip per step instead of four (BEGIN, set_config, statement, COMMIT): on the
2-core reference machine that was about half the gateway's CPU per request (README, Benchmark).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The INSERT ... ON CONFLICT DO NOTHING decides who runs. When it inserts nothing, the second
# statement (a new snapshot: plpgsql takes one per statement) returns the row that won.
CREATE_CLAIM = """
CREATE FUNCTION claim_execution(
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

# Takes over a failed execution, or a running one whose lease ran out. Under READ COMMITTED a
# second taker waits for the first, re-checks the WHERE on the new row and matches nothing.
CREATE_RETAKE = """
CREATE FUNCTION retake_execution(p_tenant uuid, p_key text, p_lease_seconds double precision)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    WITH taken AS (
        UPDATE executions AS e
        SET status = 'running', attempts = e.attempts + 1,
            lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            started_at = now(), finished_at = NULL, updated_at = now(),
            response_status = NULL, response_content_type = NULL, response_headers = NULL,
            response_body = NULL
        WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key
          AND (e.status = 'failed' OR (e.status = 'running' AND e.lease_expires_at < now()))
        RETURNING e
    )
    SELECT true, false, (t.e)::executions FROM taken t;
END
$$
"""

# Fenced by the attempt number: an attempt whose lease was taken over cannot overwrite the
# attempt that took it.
CREATE_RECORD = """
CREATE FUNCTION record_execution_outcome(
    p_tenant uuid, p_id bigint, p_attempt integer, p_status text, p_response_status integer,
    p_response_content_type text, p_response_headers jsonb, p_response_body bytea,
    p_error_type text, p_error_detail text
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET status = p_status, response_status = p_response_status,
        response_content_type = p_response_content_type,
        response_headers = p_response_headers, response_body = p_response_body,
        last_error_type = p_error_type, last_error_detail = p_error_detail,
        lease_expires_at = NULL, finished_at = now(), updated_at = now()
    WHERE tenant_id = p_tenant AND id = p_id AND attempts = p_attempt AND status = 'running';
    RETURN FOUND;
END
$$
"""

SIGNATURES = [
    "claim_execution(uuid, text, bytea, text, text, text, double precision)",
    "retake_execution(uuid, text, double precision)",
    "record_execution_outcome(uuid, bigint, integer, text, integer, text, jsonb, bytea, text, "
    "text)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for statement in (CREATE_CLAIM, CREATE_RETAKE, CREATE_RECORD):
        op.execute(statement)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
