"""Delivery workers take due executions in batches: `take_due_deliveries` replaces
`take_due_delivery`.

One dispatcher per process now takes as many due deliveries as it has free slots, in one
transaction, instead of each worker taking one per transaction (README, "Operating it").
The rules are those of `take_due_delivery` (migration 0002): SKIP LOCKED between takers, the
per-target cap counted exactly under an advisory lock per target, and an execution whose
worker died taken over once its lease ran out. Passing over a target at its cap no longer
scans that target's backlog: an index on (target, due_at) lets the take walk the targets.

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

CREATE_TAKE_MANY = """
CREATE FUNCTION take_due_deliveries(
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

TAKE_MANY = "take_due_deliveries(double precision, uuid, integer, integer)"
# Serves the walk over targets and each target's earliest due row.
CREATE_TARGET_INDEX = "CREATE INDEX delivery_queue_target_due ON delivery_queue (target, due_at)"
TAKE_ONE = "take_due_delivery(double precision, uuid, integer)"

# Migration 0002's function as it was, for the downgrade.
CREATE_TAKE_ONE = """
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


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_TARGET_INDEX)
    op.execute(CREATE_TAKE_MANY)
    op.execute(f"REVOKE ALL ON FUNCTION {TAKE_MANY} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {TAKE_MANY} TO n8n_gate_app")
    op.execute(f"DROP FUNCTION {TAKE_ONE}")


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_TAKE_ONE)
    op.execute(f"REVOKE ALL ON FUNCTION {TAKE_ONE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {TAKE_ONE} TO n8n_gate_app")
    op.execute(f"DROP FUNCTION {TAKE_MANY}")
    op.execute("DROP INDEX delivery_queue_target_due")
