"""Alerts (issue 17): a table of alerts an operator gets at GATE_ALERT_URL, queued by a trigger
on executions in the transaction that ends one as a dead letter or with its outcome unknown,
and the functions the delivery workers take, record, drop and reap them with.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_ALERTS = """
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    execution_id    bigint NOT NULL,
    attempt         integer NOT NULL,
    type            text NOT NULL
                    CHECK (type IN ('execution.dead_letter', 'execution.outcome_unknown')),
    idempotency_key text NOT NULL,
    workflow        text NOT NULL,                  -- n8n mode and path: "webhook/orders"
    error_type      text,
    error_detail    text,
    n8n_status      integer,
    outcome_unknown boolean NOT NULL,
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    sends           integer NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- One alert per end: an execution ends once per attempt.
    CONSTRAINT alerts_one_per_end UNIQUE (execution_id, attempt)
)
"""

CREATE_INDEXES = [
    "CREATE INDEX alerts_due ON alerts (due_at) WHERE status IN ('pending', 'sending')",
    "CREATE INDEX alerts_created ON alerts (created_at)",
]

CREATE_QUEUE_ALERT = """
CREATE OR REPLACE FUNCTION queue_execution_alert()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO public.alerts (
        tenant_id, execution_id, attempt, type, idempotency_key, workflow, error_type,
        error_detail, n8n_status, outcome_unknown, occurred_at
    )
    VALUES (
        NEW.tenant_id, NEW.id, NEW.attempts,
        CASE WHEN NEW.deliver_async THEN 'execution.dead_letter'
             ELSE 'execution.outcome_unknown' END,
        NEW.idempotency_key, NEW.mode || '/' || NEW.workflow_path, NEW.last_error_type,
        NEW.last_error_detail, NEW.response_status, NEW.outcome_unknown,
        coalesce(NEW.finished_at, now())
    )
    ON CONFLICT (execution_id, attempt) DO NOTHING;
    RETURN NULL;
END
$$
"""

CREATE_TRIGGER = """
CREATE TRIGGER executions_alert
    AFTER UPDATE OF status ON executions
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status = 'failed'
          AND (NEW.deliver_async OR NEW.outcome_unknown))
    EXECUTE FUNCTION queue_execution_alert()
"""

CREATE_TAKE = """
CREATE OR REPLACE FUNCTION take_due_alerts(p_lease_seconds double precision, p_limit integer)
RETURNS TABLE (
    id bigint, tenant_id uuid, tenant_name text, type text, execution_id bigint,
    attempt integer, idempotency_key text, workflow text, error_type text, error_detail text,
    n8n_status integer, outcome_unknown boolean, occurred_at timestamptz, sends integer
)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH due AS (
        SELECT d.id FROM public.alerts d
        WHERE d.status IN ('pending', 'sending') AND d.due_at <= now()
        ORDER BY d.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE public.alerts a
    SET status = 'sending', sends = a.sends + 1,
        due_at = now() + make_interval(secs => p_lease_seconds)
    FROM due
    WHERE a.id = due.id
    RETURNING a.id, a.tenant_id,
        (SELECT t.name FROM public.tenants t WHERE t.id = a.tenant_id),
        a.type, a.execution_id, a.attempt, a.idempotency_key, a.workflow, a.error_type,
        a.error_detail, a.n8n_status, a.outcome_unknown, a.occurred_at, a.sends
$$
"""

CREATE_RECORD = """
CREATE OR REPLACE FUNCTION record_alert_send(
    p_id bigint, p_send integer, p_delivered boolean, p_retry_at timestamptz, p_error text
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE public.alerts
    SET status = CASE WHEN p_delivered THEN 'delivered'
                      WHEN p_retry_at IS NULL THEN 'failed'
                      ELSE 'pending' END,
        due_at = coalesce(p_retry_at, due_at),
        last_error = CASE WHEN p_delivered THEN last_error ELSE p_error END,
        finished_at = CASE WHEN p_delivered OR p_retry_at IS NULL THEN now() END
    WHERE id = p_id AND sends = p_send AND status = 'sending';
    RETURN FOUND;
END
$$
"""

CREATE_DROP = """
CREATE OR REPLACE FUNCTION drop_due_alerts(p_limit integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH doomed AS (
        SELECT d.id FROM public.alerts d
        WHERE d.status IN ('pending', 'sending') AND d.due_at <= now()
        ORDER BY d.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.alerts a USING doomed d WHERE a.id = d.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$
"""

CREATE_REAP = """
CREATE OR REPLACE FUNCTION reap_alerts(p_batch_size integer, p_keep_seconds double precision)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH doomed AS (
        SELECT d.id FROM public.alerts d
        WHERE d.created_at < now() - make_interval(secs => p_keep_seconds)
        ORDER BY d.created_at
        LIMIT p_batch_size
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.alerts a USING doomed d WHERE a.id = d.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$
"""

FUNCTIONS = [
    "queue_execution_alert()",
    "take_due_alerts(double precision, integer)",
    "record_alert_send(bigint, integer, boolean, timestamptz, text)",
    "drop_due_alerts(integer)",
    "reap_alerts(integer, double precision)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_ALERTS)
    for statement in CREATE_INDEXES:
        op.execute(statement)
    op.execute("ALTER TABLE alerts ENABLE ROW LEVEL SECURITY")
    for statement in (CREATE_QUEUE_ALERT, CREATE_TAKE, CREATE_RECORD, CREATE_DROP, CREATE_REAP):
        op.execute(statement)
    op.execute(CREATE_TRIGGER)
    for function in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO n8n_gate_app")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS executions_alert ON executions")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP TABLE IF EXISTS alerts")
