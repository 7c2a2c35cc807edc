"""Announce finished executions, so requests waiting on them (Prefer: wait) wake at once.

`record_execution_outcome` now sends `NOTIFY n8n_gate_execution_finished, '<tenant> <id>'`,
delivered when its transaction commits, to every gateway process listening on the database.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPLACE_RECORD = """
CREATE OR REPLACE FUNCTION record_execution_outcome(
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
    PERFORM pg_notify('n8n_gate_execution_finished', p_tenant::text || ' ' || p_id::text);
    RETURN true;
END
$$
"""


def upgrade() -> None:
    op.execute(REPLACE_RECORD)


def downgrade() -> None:
    pass  # 0003's function differs only by the notification; leaving it is harmless.
