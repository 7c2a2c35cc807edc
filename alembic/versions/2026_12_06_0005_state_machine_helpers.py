"""The state machine's repeated steps become functions of their own (issue 15).

`app/sql/` now holds the current schema, readable in one place; this migration makes the
database equal to it. Two blocks were written out in several functions:

- "insert the key, or take over an expired one": `claim_execution` and `accept_execution`
  now call `free_expired_key` (a key held past its retention is freed) and `key_holder` (the
  row that holds it, as their result).
- "mark the attempt abandoned": `retake_execution`, `take_due_deliveries`,
  `take_due_deliveries_v2` and `end_abandoned_attempt` now call `mark_attempt_abandoned`, each
  with the detail it wrote before.

Signatures, results and the rows written are unchanged. The helpers run as their caller (the
service role under RLS, or the owner inside `end_abandoned_executions`), so the service role
may execute them, as it may every function here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_FREE_EXPIRED_KEY = """
CREATE FUNCTION free_expired_key(p_tenant uuid, p_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    DELETE FROM executions
    WHERE tenant_id = p_tenant AND idempotency_key = p_key AND expires_at < now();
    RETURN FOUND;
END
$$
"""

CREATE_KEY_HOLDER = """
CREATE FUNCTION key_holder(p_tenant uuid, p_key text)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT false, e.lease_expires_at < now(), e
    FROM executions e
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key;
END
$$
"""

CREATE_MARK_ATTEMPT_ABANDONED = """
CREATE FUNCTION mark_attempt_abandoned(p_execution_id bigint, p_attempt integer, p_detail text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE execution_attempts
    SET outcome = 'abandoned', ended_at = now(), error_type = 'abandoned',
        error_detail = p_detail
    WHERE execution_id = p_execution_id AND attempt = p_attempt AND ended_at IS NULL;
END
$$
"""

CLAIM = """
CREATE OR REPLACE FUNCTION claim_execution(
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
        EXIT WHEN NOT free_expired_key(p_tenant, p_key);
    END LOOP;
    RETURN QUERY SELECT * FROM key_holder(p_tenant, p_key);
END
$$
"""

ACCEPT = """
CREATE OR REPLACE FUNCTION accept_execution(
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
        EXIT WHEN NOT free_expired_key(p_tenant, p_key);
    END LOOP;
    RETURN QUERY SELECT * FROM key_holder(p_tenant, p_key);
END
$$
"""

RETAKE = """
CREATE OR REPLACE FUNCTION retake_execution(
    p_tenant uuid, p_key text, p_lease_seconds double precision, p_owner uuid
)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    taken executions;
    was_abandoned boolean;
    abandoned_detail constant text :=
        'the process running this attempt stopped before recording its outcome';
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
        last_error_detail = CASE WHEN was_abandoned THEN abandoned_detail
                                 ELSE e.last_error_detail END
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key
    RETURNING e.* INTO taken;
    IF was_abandoned THEN
        PERFORM mark_attempt_abandoned(taken.id, taken.attempts - 1, abandoned_detail);
    END IF;
    INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
    VALUES (taken.id, taken.attempts, p_tenant);
    RETURN QUERY SELECT true, false, taken;
END
$$
"""

TAKE = """
CREATE OR REPLACE FUNCTION take_due_deliveries(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued record;
    existing executions;
    taken executions;
    full_targets text[] := '{}';
    taken_count integer := 0;
BEGIN
    -- Every pass takes a row, or passes over one that needs no delivery (finished, or running
    -- under a live lease), or marks a target full; either way the row leaves the due set.
    FOR pass_number IN 1..p_limit + 20 LOOP
        EXIT WHEN taken_count >= p_limit;
        IF cardinality(full_targets) = 0 THEN
            SELECT q.execution_id, q.tenant_id, q.target INTO queued
            FROM delivery_queue q
            WHERE q.due_at <= now()
            ORDER BY q.due_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        ELSE
            -- Skipping a full target's rows one by one costs its whole backlog, on every look.
            -- Walk the distinct targets instead (one index probe each) and take the earliest
            -- due row among those that are not full.
            WITH RECURSIVE targets (target) AS (
                (SELECT q.target FROM delivery_queue q ORDER BY q.target LIMIT 1)
                UNION ALL
                SELECT (SELECT q.target FROM delivery_queue q
                        WHERE q.target > t.target ORDER BY q.target LIMIT 1)
                FROM targets t WHERE t.target IS NOT NULL
            ), open_targets AS (
                SELECT t.target FROM targets t
                WHERE t.target IS NOT NULL AND NOT (t.target = ANY (full_targets))
            )
            SELECT head.execution_id, head.tenant_id, head.target INTO queued
            FROM open_targets o
            CROSS JOIN LATERAL (
                SELECT q.execution_id, q.tenant_id, q.target, q.due_at
                FROM delivery_queue q
                WHERE q.target = o.target AND q.due_at <= now()
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS head
            ORDER BY head.due_at
            LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND;
        IF p_max_per_target > 0 THEN
            -- Takers of one target queue here, so the count below is exact; it includes the
            -- rows this call has taken already.
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
                PERFORM mark_attempt_abandoned(
                    taken.id, taken.attempts - 1,
                    'the process delivering this attempt stopped before recording its outcome'
                );
            END IF;
            INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
            VALUES (taken.id, taken.attempts, queued.tenant_id);
            taken_count := taken_count + 1;
            RETURN QUERY SELECT queued.tenant_id, taken;
        END IF;
    END LOOP;
END
$$
"""

TAKE_V2 = """
CREATE OR REPLACE FUNCTION take_due_deliveries_v2(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer,
    p_refuse_abandoned boolean, p_failed_keep_seconds double precision
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued record;
    existing executions;
    taken executions;
    full_targets text[] := '{}';
    taken_count integer := 0;
BEGIN
    -- Every pass takes a row, or passes over one that needs no delivery (finished, or running
    -- under a live lease), or marks a target full; either way the row leaves the due set.
    FOR pass_number IN 1..p_limit + 20 LOOP
        EXIT WHEN taken_count >= p_limit;
        IF cardinality(full_targets) = 0 THEN
            SELECT q.execution_id, q.tenant_id, q.target INTO queued
            FROM delivery_queue q
            WHERE q.due_at <= now()
            ORDER BY q.due_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        ELSE
            -- Skipping a full target's rows one by one costs its whole backlog, on every look.
            -- Walk the distinct targets instead (one index probe each) and take the earliest
            -- due row among those that are not full.
            WITH RECURSIVE targets (target) AS (
                (SELECT q.target FROM delivery_queue q ORDER BY q.target LIMIT 1)
                UNION ALL
                SELECT (SELECT q.target FROM delivery_queue q
                        WHERE q.target > t.target ORDER BY q.target LIMIT 1)
                FROM targets t WHERE t.target IS NOT NULL
            ), open_targets AS (
                SELECT t.target FROM targets t
                WHERE t.target IS NOT NULL AND NOT (t.target = ANY (full_targets))
            )
            SELECT head.execution_id, head.tenant_id, head.target INTO queued
            FROM open_targets o
            CROSS JOIN LATERAL (
                SELECT q.execution_id, q.tenant_id, q.target, q.due_at
                FROM delivery_queue q
                WHERE q.target = o.target AND q.due_at <= now()
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS head
            ORDER BY head.due_at
            LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND;
        IF p_max_per_target > 0 THEN
            -- Takers of one target queue here, so the count below is exact; it includes the
            -- rows this call has taken already.
            PERFORM pg_advisory_xact_lock(hashtextextended('n8n-gate ' || queued.target, 0));
            -- A running row's due_at is its lease's end: one past it was abandoned (its
            -- process died) and holds no place; it is due, and taken over below.
            IF (SELECT count(*) FROM delivery_queue r
                WHERE r.target = queued.target AND r.running AND r.due_at > now()
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
        ELSIF existing.status = 'running' AND p_refuse_abandoned THEN
            -- GATE_UNKNOWN_OUTCOME=refuse: the dead process may have reached n8n, so the
            -- delivery ends as a dead letter rather than running again.
            PERFORM end_abandoned_attempt(existing, p_failed_keep_seconds);
            DELETE FROM delivery_queue q WHERE q.execution_id = queued.execution_id;
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
                PERFORM mark_attempt_abandoned(
                    taken.id, taken.attempts - 1,
                    'the process delivering this attempt stopped before recording its outcome'
                );
            END IF;
            INSERT INTO execution_attempts (execution_id, attempt, tenant_id)
            VALUES (taken.id, taken.attempts, queued.tenant_id);
            taken_count := taken_count + 1;
            RETURN QUERY SELECT queued.tenant_id, taken;
        END IF;
    END LOOP;
END
$$
"""

END_ABANDONED_ATTEMPT = """
CREATE OR REPLACE FUNCTION end_abandoned_attempt(
    p_execution executions, p_keep_seconds double precision
)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
DECLARE
    detail constant text := 'the process running this attempt stopped before recording its '
                            'outcome; n8n may have run it';
BEGIN
    UPDATE executions
    SET status = 'failed', outcome_unknown = true, lease_expires_at = NULL, lease_owner = NULL,
        next_attempt_at = NULL, finished_at = now(), updated_at = now(),
        expires_at = now() + make_interval(secs => p_keep_seconds),
        last_error_type = 'abandoned', last_error_detail = detail
    WHERE id = p_execution.id AND attempts = p_execution.attempts AND status = 'running';
    PERFORM mark_attempt_abandoned(p_execution.id, p_execution.attempts, detail);
    IF p_execution.has_waiters THEN
        PERFORM pg_notify(
            'n8n_gate_execution_finished',
            p_execution.tenant_id::text || ' ' || p_execution.id::text
        );
    END IF;
END
$$
"""

# The definitions this migration replaces, as migrations 0002-0004 wrote them, for the downgrade.

PREVIOUS_CLAIM = """
CREATE OR REPLACE FUNCTION claim_execution(
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

PREVIOUS_RETAKE = """
CREATE OR REPLACE FUNCTION retake_execution(
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

PREVIOUS_ACCEPT = """
CREATE OR REPLACE FUNCTION accept_execution(
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

PREVIOUS_TAKE = """
CREATE OR REPLACE FUNCTION take_due_deliveries(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued record;
    existing executions;
    taken executions;
    full_targets text[] := '{}';
    taken_count integer := 0;
BEGIN
    -- Every pass takes a row, or passes over one that needs no delivery (finished, or running
    -- under a live lease), or marks a target full; either way the row leaves the due set.
    FOR pass_number IN 1..p_limit + 20 LOOP
        EXIT WHEN taken_count >= p_limit;
        IF cardinality(full_targets) = 0 THEN
            SELECT q.execution_id, q.tenant_id, q.target INTO queued
            FROM delivery_queue q
            WHERE q.due_at <= now()
            ORDER BY q.due_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        ELSE
            -- Skipping a full target's rows one by one costs its whole backlog, on every look.
            -- Walk the distinct targets instead (one index probe each) and take the earliest
            -- due row among those that are not full.
            WITH RECURSIVE targets (target) AS (
                (SELECT q.target FROM delivery_queue q ORDER BY q.target LIMIT 1)
                UNION ALL
                SELECT (SELECT q.target FROM delivery_queue q
                        WHERE q.target > t.target ORDER BY q.target LIMIT 1)
                FROM targets t WHERE t.target IS NOT NULL
            ), open_targets AS (
                SELECT t.target FROM targets t
                WHERE t.target IS NOT NULL AND NOT (t.target = ANY (full_targets))
            )
            SELECT head.execution_id, head.tenant_id, head.target INTO queued
            FROM open_targets o
            CROSS JOIN LATERAL (
                SELECT q.execution_id, q.tenant_id, q.target, q.due_at
                FROM delivery_queue q
                WHERE q.target = o.target AND q.due_at <= now()
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS head
            ORDER BY head.due_at
            LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND;
        IF p_max_per_target > 0 THEN
            -- Takers of one target queue here, so the count below is exact; it includes the
            -- rows this call has taken already.
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
            taken_count := taken_count + 1;
            RETURN QUERY SELECT queued.tenant_id, taken;
        END IF;
    END LOOP;
END
$$
"""

PREVIOUS_TAKE_V2 = """
CREATE OR REPLACE FUNCTION take_due_deliveries_v2(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer,
    p_refuse_abandoned boolean, p_failed_keep_seconds double precision
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queued record;
    existing executions;
    taken executions;
    full_targets text[] := '{}';
    taken_count integer := 0;
BEGIN
    -- Every pass takes a row, or passes over one that needs no delivery (finished, or running
    -- under a live lease), or marks a target full; either way the row leaves the due set.
    FOR pass_number IN 1..p_limit + 20 LOOP
        EXIT WHEN taken_count >= p_limit;
        IF cardinality(full_targets) = 0 THEN
            SELECT q.execution_id, q.tenant_id, q.target INTO queued
            FROM delivery_queue q
            WHERE q.due_at <= now()
            ORDER BY q.due_at
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        ELSE
            -- Skipping a full target's rows one by one costs its whole backlog, on every look.
            -- Walk the distinct targets instead (one index probe each) and take the earliest
            -- due row among those that are not full.
            WITH RECURSIVE targets (target) AS (
                (SELECT q.target FROM delivery_queue q ORDER BY q.target LIMIT 1)
                UNION ALL
                SELECT (SELECT q.target FROM delivery_queue q
                        WHERE q.target > t.target ORDER BY q.target LIMIT 1)
                FROM targets t WHERE t.target IS NOT NULL
            ), open_targets AS (
                SELECT t.target FROM targets t
                WHERE t.target IS NOT NULL AND NOT (t.target = ANY (full_targets))
            )
            SELECT head.execution_id, head.tenant_id, head.target INTO queued
            FROM open_targets o
            CROSS JOIN LATERAL (
                SELECT q.execution_id, q.tenant_id, q.target, q.due_at
                FROM delivery_queue q
                WHERE q.target = o.target AND q.due_at <= now()
                ORDER BY q.due_at
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS head
            ORDER BY head.due_at
            LIMIT 1;
        END IF;
        EXIT WHEN NOT FOUND;
        IF p_max_per_target > 0 THEN
            -- Takers of one target queue here, so the count below is exact; it includes the
            -- rows this call has taken already.
            PERFORM pg_advisory_xact_lock(hashtextextended('n8n-gate ' || queued.target, 0));
            -- A running row's due_at is its lease's end: one past it was abandoned (its
            -- process died) and holds no place; it is due, and taken over below.
            IF (SELECT count(*) FROM delivery_queue r
                WHERE r.target = queued.target AND r.running AND r.due_at > now()
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
        ELSIF existing.status = 'running' AND p_refuse_abandoned THEN
            -- GATE_UNKNOWN_OUTCOME=refuse: the dead process may have reached n8n, so the
            -- delivery ends as a dead letter rather than running again.
            PERFORM end_abandoned_attempt(existing, p_failed_keep_seconds);
            DELETE FROM delivery_queue q WHERE q.execution_id = queued.execution_id;
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
            taken_count := taken_count + 1;
            RETURN QUERY SELECT queued.tenant_id, taken;
        END IF;
    END LOOP;
END
$$
"""

PREVIOUS_END_ATTEMPT = """
CREATE OR REPLACE FUNCTION end_abandoned_attempt(
    p_execution executions, p_keep_seconds double precision
)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
DECLARE
    detail constant text := 'the process running this attempt stopped before recording its '
                            'outcome; n8n may have run it';
BEGIN
    UPDATE executions
    SET status = 'failed', outcome_unknown = true, lease_expires_at = NULL, lease_owner = NULL,
        next_attempt_at = NULL, finished_at = now(), updated_at = now(),
        expires_at = now() + make_interval(secs => p_keep_seconds),
        last_error_type = 'abandoned', last_error_detail = detail
    WHERE id = p_execution.id AND attempts = p_execution.attempts AND status = 'running';
    UPDATE execution_attempts
    SET outcome = 'abandoned', ended_at = now(), error_type = 'abandoned',
        error_detail = detail
    WHERE execution_id = p_execution.id AND attempt = p_execution.attempts AND ended_at IS NULL;
    IF p_execution.has_waiters THEN
        PERFORM pg_notify(
            'n8n_gate_execution_finished',
            p_execution.tenant_id::text || ' ' || p_execution.id::text
        );
    END IF;
END
$$
"""

HELPERS = {
    "free_expired_key(uuid, text)": CREATE_FREE_EXPIRED_KEY,
    "key_holder(uuid, text)": CREATE_KEY_HOLDER,
    "mark_attempt_abandoned(bigint, integer, text)": CREATE_MARK_ATTEMPT_ABANDONED,
}
CALLERS = [CLAIM, ACCEPT, RETAKE, TAKE, TAKE_V2, END_ABANDONED_ATTEMPT]
PREVIOUS_CALLERS = [
    PREVIOUS_CLAIM,
    PREVIOUS_ACCEPT,
    PREVIOUS_RETAKE,
    PREVIOUS_TAKE,
    PREVIOUS_TAKE_V2,
    PREVIOUS_END_ATTEMPT,
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for signature, statement in HELPERS.items():
        op.execute(statement)
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")
    for statement in CALLERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for statement in PREVIOUS_CALLERS:
        op.execute(statement)
    for signature in HELPERS:
        op.execute(f"DROP FUNCTION {signature}")
