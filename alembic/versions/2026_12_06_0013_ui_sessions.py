"""Dashboard sessions kept on the server (issue 17, dashboard): ui_sessions holds the sha256 of
each session's random token, its tenant, its API key's prefix and its end, readable only by
the owner through three functions (start, resume, end), like api_keys. A session lives while
its row does, until its end and only while its API key is live; signing out deletes it, and
each start deletes a few ended ones, so the table holds about the live sessions.

Also requeue_failed_executions_v2: the manual retry bounded by when the dead letters failed
(p_failed_before), so "retry all matching" retries what its confirmation counted and not what
failed since. requeue_failed_executions stays for processes of earlier builds during a rolling
deploy.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_UI_SESSIONS = """
CREATE TABLE ui_sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
)
"""

CREATE_INDEX = "CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at)"

CREATE_START = """
CREATE OR REPLACE FUNCTION ui_session_start(
    p_token_hash bytea, p_key_prefix text, p_seconds double precision
)
RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH ended AS (
        DELETE FROM public.ui_sessions s
        WHERE s.token_hash IN (
            SELECT d.token_hash FROM public.ui_sessions d
            WHERE d.expires_at < now()
            ORDER BY d.expires_at
            LIMIT 10
            FOR UPDATE SKIP LOCKED
        )
    ), started AS (
        INSERT INTO public.ui_sessions (token_hash, tenant_id, key_prefix, expires_at)
        SELECT p_token_hash, k.tenant_id, k.prefix, now() + make_interval(secs => p_seconds)
        FROM public.api_keys k
        WHERE k.prefix = p_key_prefix AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
        RETURNING expires_at
    )
    SELECT s.expires_at FROM started s
$$
"""

CREATE_RESUME = """
CREATE OR REPLACE FUNCTION ui_session_resume(p_token_hash bytea)
RETURNS TABLE (
    tenant_id uuid, tenant_name text, key_prefix text, read_only boolean, expires_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT s.tenant_id, t.name, s.key_prefix, k.read_only, s.expires_at
    FROM public.ui_sessions s
    JOIN public.api_keys k ON k.prefix = s.key_prefix AND k.tenant_id = s.tenant_id
    JOIN public.tenants t ON t.id = s.tenant_id
    WHERE s.token_hash = p_token_hash AND s.expires_at > now()
      AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
$$
"""

CREATE_END = """
CREATE OR REPLACE FUNCTION ui_session_end(p_token_hash bytea)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM public.ui_sessions s WHERE s.token_hash = p_token_hash RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$
"""

CREATE_REQUEUE_V2 = """
CREATE OR REPLACE FUNCTION requeue_failed_executions_v2(
    p_tenant uuid, p_key text, p_workflow text, p_failed_since timestamptz,
    p_failed_before timestamptz, p_limit integer
)
RETURNS TABLE (execution_id bigint, idempotency_key text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    WITH chosen AS (
        SELECT e.id FROM executions e
        WHERE e.tenant_id = p_tenant AND e.status = 'failed' AND e.deliver_async
          AND (p_key IS NULL OR e.idempotency_key = p_key)
          AND (p_workflow IS NULL OR e.workflow_path = p_workflow)
          AND (p_failed_since IS NULL OR e.finished_at >= p_failed_since)
          AND (p_failed_before IS NULL OR e.finished_at < p_failed_before)
        ORDER BY e.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), requeued AS (
        UPDATE executions e
        SET status = 'pending', next_attempt_at = now(), expires_at = NULL, updated_at = now()
        FROM chosen c WHERE e.id = c.id
        RETURNING e.id, e.idempotency_key, e.mode || ' ' || e.workflow_path AS target
    ), queued AS (
        INSERT INTO delivery_queue (execution_id, tenant_id, due_at, target)
        SELECT r.id, p_tenant, now(), r.target FROM requeued r
        ON CONFLICT (execution_id) DO UPDATE SET due_at = now(), running = false
    )
    SELECT r.id, r.idempotency_key FROM requeued r;
    IF FOUND THEN
        PERFORM pg_notify('n8n_gate_delivery_due', '');
    END IF;
END
$$
"""

FUNCTIONS = [
    "ui_session_start(bytea, text, double precision)",
    "ui_session_resume(bytea)",
    "ui_session_end(bytea)",
    "requeue_failed_executions_v2(uuid, text, text, timestamptz, timestamptz, integer)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_UI_SESSIONS)
    op.execute(CREATE_INDEX)
    op.execute("ALTER TABLE ui_sessions ENABLE ROW LEVEL SECURITY")
    for statement in (CREATE_START, CREATE_RESUME, CREATE_END, CREATE_REQUEUE_V2):
        op.execute(statement)
    for function in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO n8n_gate_app")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP TABLE IF EXISTS ui_sessions")
