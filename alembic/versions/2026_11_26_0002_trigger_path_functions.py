"""The trigger path's statements as functions that name their tenant themselves.

Each function sets `app.tenant_id` for its own (implicit) transaction and then runs its
statements, under Row Level Security, as the calling role (SECURITY INVOKER). A trigger step
then costs one round trip instead of four (BEGIN, set_config, statement, COMMIT): on the
2-core reference machine that was about half the gateway's CPU per request (README, Benchmark).

- `claim_execution`: the INSERT ... ON CONFLICT DO NOTHING that decides who runs.
- `retake_execution`: takes over a failed execution, or a running one whose lease ran out (its
  attempt is closed as abandoned).
- `renew_execution_lease`: the running attempt extends its lease while n8n works.
- `record_execution_outcome`: the attempt's result, fenced by the attempt number; announces the
  finish with NOTIFY so requests waiting on it (Prefer: wait) wake in every process.
- `release_unforwarded_claim`: a claim whose answer was lost with the connection (so nothing
  was forwarded) is marked failed, by the owner token the claiming process chose.

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

# When the INSERT inserts nothing, the key is taken: an expired row is deleted and the insert
# tried once more; otherwise the last statement (a new snapshot: plpgsql takes one per
# statement) returns the row that won. New keys pay for the INSERT alone.
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
    FOR try_number IN 1..2 LOOP
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
        IF FOUND THEN
            RETURN;
        END IF;
        -- The key is taken. Past its retention it is new again, reaped yet or not.
        DELETE FROM executions
        WHERE tenant_id = p_tenant AND idempotency_key = p_key AND expires_at < now();
        EXIT WHEN NOT FOUND;
    END LOOP;
    RETURN QUERY
    SELECT false, e.lease_expires_at < now(), e
    FROM executions e
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key;
END
$$
"""

# Under READ COMMITTED a second taker waits for the row lock, re-checks the WHERE on the new
# row version and matches nothing.
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
        expires_at = NULL,
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
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE delivery_queue SET due_at = now() + make_interval(secs => p_lease_seconds)
    WHERE execution_id = p_id;
    RETURN true;
END
$$
"""

CREATE_RECORD = """
CREATE FUNCTION record_execution_outcome(
    p_tenant uuid, p_id bigint, p_attempt integer, p_status text, p_response_status integer,
    p_response_content_type text, p_response_headers jsonb, p_response_body bytea,
    p_response_body_bytes bigint, p_error_type text, p_error_detail text,
    p_outcome_unknown boolean, p_keep_seconds double precision, p_retry_at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    retrying boolean := p_status = 'failed' AND p_retry_at IS NOT NULL;
    waited boolean;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET status = CASE WHEN retrying THEN 'pending' ELSE p_status END,
        next_attempt_at = CASE WHEN retrying THEN p_retry_at END,
        response_status = p_response_status,
        response_content_type = p_response_content_type,
        response_headers = p_response_headers, response_body = p_response_body,
        response_body_bytes = p_response_body_bytes, outcome_unknown = p_outcome_unknown,
        last_error_type = coalesce(p_error_type, last_error_type),
        last_error_detail = CASE WHEN p_error_type IS NULL THEN last_error_detail
                                 ELSE p_error_detail END,
        lease_expires_at = NULL, finished_at = now(), updated_at = now(),
        expires_at = CASE WHEN retrying THEN NULL
                          ELSE now() + make_interval(secs => p_keep_seconds) END
    WHERE tenant_id = p_tenant AND id = p_id AND attempts = p_attempt AND status = 'running'
    RETURNING has_waiters INTO waited;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE execution_attempts
    SET ended_at = now(), outcome = p_status, n8n_status = p_response_status,
        error_type = p_error_type, error_detail = p_error_detail
    WHERE execution_id = p_id AND attempt = p_attempt;
    IF retrying THEN
        UPDATE delivery_queue SET due_at = p_retry_at, running = false WHERE execution_id = p_id;
    ELSE
        DELETE FROM delivery_queue WHERE execution_id = p_id;
    END IF;
    -- NOTIFY serialises committing transactions database-wide: only when someone waits.
    IF waited THEN
        PERFORM pg_notify('n8n_gate_execution_finished', p_tenant::text || ' ' || p_id::text);
    END IF;
    RETURN true;
END
$$
"""

CREATE_RELEASE = """
CREATE FUNCTION release_unforwarded_claim(
    p_tenant uuid, p_key text, p_owner uuid, p_keep_seconds double precision
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    released executions;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions
    SET status = 'failed', lease_expires_at = NULL, lease_owner = NULL,
        finished_at = now(), updated_at = now(), outcome_unknown = false,
        expires_at = now() + make_interval(secs => p_keep_seconds),
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
    IF released.has_waiters THEN
        PERFORM pg_notify(
            'n8n_gate_execution_finished', p_tenant::text || ' ' || released.id::text
        );
    END IF;
    RETURN true;
END
$$
"""

# Stores an async trigger (Prefer: respond-async) for the delivery workers, or returns the row
# that holds the key, as claim_execution does.
CREATE_ACCEPT = """
CREATE FUNCTION accept_execution(
    p_tenant uuid, p_key text, p_fingerprint bytea, p_method text, p_mode text,
    p_workflow_path text, p_raw_path text, p_query text, p_headers jsonb, p_body bytea,
    p_notify boolean
)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    FOR try_number IN 1..2 LOOP
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO executions AS e (
                tenant_id, idempotency_key, fingerprint, method, mode, workflow_path,
                status, attempts, deliver_async, next_attempt_at,
                request_raw_path, request_query, request_headers, request_body
            )
            VALUES (
                p_tenant, p_key, p_fingerprint, p_method, p_mode, p_workflow_path,
                'pending', 0, true, now(), p_raw_path, p_query, p_headers, p_body
            )
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING e
        ), queued AS (
            INSERT INTO delivery_queue (execution_id, tenant_id, due_at, target)
            SELECT (i.e).id, p_tenant, now(), p_mode || ' ' || p_workflow_path FROM inserted i
        )
        SELECT true, false, (i.e)::executions FROM inserted i;
        IF FOUND THEN
            -- The accepting process wakes its own workers; others are told only when it has
            -- none (NOTIFY serialises commits database-wide; their poll finds the rest).
            IF p_notify THEN
                PERFORM pg_notify('n8n_gate_delivery_due', '');
            END IF;
            RETURN;
        END IF;
        DELETE FROM executions
        WHERE tenant_id = p_tenant AND idempotency_key = p_key AND expires_at < now();
        EXIT WHEN NOT FOUND;
    END LOOP;
    RETURN QUERY
    SELECT false, e.lease_expires_at < now(), e
    FROM executions e
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key;
END
$$
"""

# A worker takes the next due delivery: a pending execution, or a running one whose worker
# died (its lease, and so its queue entry, ran out). SKIP LOCKED keeps two workers apart; a
# target (n8n mode and path) with p_max_per_target deliveries running is passed over.
CREATE_TAKE = """
CREATE FUNCTION take_due_delivery(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued record;
    existing executions;
    taken executions;
    full_targets text[] := '{}';
BEGIN
    FOR try_number IN 1..20 LOOP
        SELECT q.execution_id, q.tenant_id, q.target INTO queued
        FROM delivery_queue q
        WHERE q.due_at <= now() AND NOT (q.target = ANY (full_targets))
        ORDER BY q.due_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF p_max_per_target > 0 THEN
            -- Takers of one target queue here, so the count below is exact.
            PERFORM pg_advisory_xact_lock(hashtextextended('n8n-gate ' || queued.target, 0));
            IF (SELECT count(*) FROM delivery_queue r
                WHERE r.target = queued.target AND r.running
                  AND r.execution_id <> queued.execution_id) >= p_max_per_target THEN
                full_targets := full_targets || queued.target;
                CONTINUE;
            END IF;
        END IF;
        PERFORM set_config('app.tenant_id', queued.tenant_id::text, true);
        SELECT * INTO existing FROM executions e WHERE e.id = queued.execution_id FOR UPDATE;
        IF NOT FOUND OR existing.status IN ('completed', 'failed') THEN
            DELETE FROM delivery_queue q WHERE q.execution_id = queued.execution_id;
        ELSIF existing.status = 'running' AND existing.lease_expires_at >= now() THEN
            UPDATE delivery_queue q SET due_at = existing.lease_expires_at, running = true
            WHERE q.execution_id = queued.execution_id;
        ELSE
            UPDATE delivery_queue q
            SET due_at = now() + make_interval(secs => p_lease_seconds), running = true
            WHERE q.execution_id = queued.execution_id;
            UPDATE executions AS e
            SET status = 'running', attempts = e.attempts + 1,
                lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                lease_owner = p_owner, started_at = now(), finished_at = NULL,
                next_attempt_at = NULL, updated_at = now(), outcome_unknown = false
            WHERE e.id = queued.execution_id
            RETURNING * INTO taken;
            IF existing.status = 'running' THEN
                UPDATE execution_attempts a
                SET outcome = 'abandoned', ended_at = now(), error_type = 'abandoned',
                    error_detail = 'the process delivering this attempt stopped before '
                                   'recording its outcome'
                WHERE a.execution_id = taken.id AND a.attempt = taken.attempts - 1
                  AND a.ended_at IS NULL;
            END IF;
            INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
            VALUES (taken.id, taken.attempts, queued.tenant_id);
            RETURN QUERY SELECT queued.tenant_id, taken;
            RETURN;
        END IF;
    END LOOP;
END
$$
"""

# Manual retry: a failed async execution goes back in the delivery queue, due now.
CREATE_REQUEUE = """
CREATE FUNCTION requeue_failed_executions(
    p_tenant uuid, p_key text, p_workflow text, p_failed_since timestamptz, p_limit integer
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

# A request about to wait for this execution (Prefer: wait) asks to be told when it finishes.
CREATE_MARK_WAITED = """
CREATE FUNCTION mark_execution_waited(p_tenant uuid, p_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions SET has_waiters = true
    WHERE tenant_id = p_tenant AND id = p_id AND NOT has_waiters;
END
$$
"""

SIGNATURES = [
    "claim_execution(uuid, text, bytea, text, text, text, double precision, uuid)",
    "retake_execution(uuid, text, double precision, uuid)",
    "renew_execution_lease(uuid, bigint, integer, double precision)",
    "record_execution_outcome(uuid, bigint, integer, text, integer, text, jsonb, bytea, bigint, "
    "text, text, boolean, double precision, timestamptz)",
    "accept_execution(uuid, text, bytea, text, text, text, text, text, jsonb, bytea, boolean)",
    "mark_execution_waited(uuid, bigint)",
    "take_due_delivery(double precision, uuid, integer)",
    "requeue_failed_executions(uuid, text, text, timestamptz, integer)",
    "release_unforwarded_claim(uuid, text, uuid, double precision)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for statement in (
        CREATE_CLAIM,
        CREATE_RETAKE,
        CREATE_RENEW,
        CREATE_RECORD,
        CREATE_RELEASE,
        CREATE_ACCEPT,
        CREATE_TAKE,
        CREATE_REQUEUE,
        CREATE_MARK_WAITED,
    ):
        op.execute(statement)
    for signature in SIGNATURES:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
