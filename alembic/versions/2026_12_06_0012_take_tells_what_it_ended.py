"""The delivery take says what it did besides taking (issue 17, metrics): take_due_deliveries_v3
returns, with each execution, `ended`: 'dead_letter' for one it ended rather than took (a dead
process's delivery under GATE_UNKNOWN_OUTCOME=refuse), 'abandoned' for one it took over from a
dead attempt, so the gateway counts those dead letters and unknown outcomes too.
`take_due_deliveries_v2` becomes a wrapper of it, for processes of earlier builds during a
rolling deploy.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_TAKE_V3 = """
CREATE OR REPLACE FUNCTION take_due_deliveries_v3(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer,
    p_refuse_abandoned boolean, p_failed_keep_seconds double precision
)
RETURNS TABLE (tenant_id uuid, execution executions, ended text)
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
            -- Told to the taker (not taken): the gateway counts the dead letter it became.
            RETURN QUERY SELECT queued.tenant_id, e, 'dead_letter'::text
                FROM executions e WHERE e.id = queued.execution_id;
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
            -- 'abandoned': the attempt before this one died unrecorded, its outcome unknown.
            RETURN QUERY SELECT queued.tenant_id, taken,
                CASE WHEN existing.status = 'running' THEN 'abandoned' END;
        END IF;
    END LOOP;
END
$$;
"""

WRAP_TAKE_V2 = """
CREATE OR REPLACE FUNCTION take_due_deliveries_v2(
    p_lease_seconds double precision, p_owner uuid, p_max_per_target integer, p_limit integer,
    p_refuse_abandoned boolean, p_failed_keep_seconds double precision
)
RETURNS TABLE (tenant_id uuid, execution executions)
LANGUAGE sql VOLATILE AS $$
    SELECT t.tenant_id, t.execution
    FROM take_due_deliveries_v3(
        p_lease_seconds, p_owner, p_max_per_target, p_limit, p_refuse_abandoned,
        p_failed_keep_seconds
    ) AS t
    WHERE t.ended IS DISTINCT FROM 'dead_letter'
$$;
"""

# Migration 0011's take, restored by the downgrade.
RESTORE_TAKE_V2 = """
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
$$;
"""

TAKE_V3 = (
    "take_due_deliveries_v3(double precision, uuid, integer, integer, boolean, double precision)"
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_TAKE_V3)
    op.execute(f"REVOKE ALL ON FUNCTION {TAKE_V3} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {TAKE_V3} TO n8n_gate_app")
    op.execute(WRAP_TAKE_V2)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(RESTORE_TAKE_V2)
    op.execute(f"DROP FUNCTION IF EXISTS {TAKE_V3}")
