"""Crashes in the middle of deliveries and of sync forwards (issue 14, items 1-3).

- `take_due_deliveries_v2`: a running delivery whose lease ran out (its process died) no
  longer counts toward its webhook's cap, so a crash at the cap cannot stop that webhook for
  good; and under GATE_UNKNOWN_OUTCOME=refuse such a delivery ends as a dead letter with
  `outcome_unknown` instead of being sent again. `take_due_deliveries` stays for processes of
  the previous build during a rolling deploy.
- `end_abandoned_executions`: the reaper ends sync executions whose process died (lease run
  out, nobody sent the key again): `failed`, `outcome_unknown`, and an expiry like any failed
  execution's, so they no longer pile up as `running` forever.
- `end_abandoned_attempt`: what both do to one execution.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_END_ABANDONED_ATTEMPT = """
CREATE FUNCTION end_abandoned_attempt(p_execution executions, p_keep_seconds double precision)
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

CREATE_TAKE_V2 = """
CREATE FUNCTION take_due_deliveries_v2(
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

# Runs as the owner (SECURITY DEFINER), across tenants, abandoned sync executions only: the
# policies below show the owner nothing else, and let it write only the abandoned end state.
CREATE_END_ABANDONED_EXECUTIONS = """
CREATE FUNCTION end_abandoned_executions(p_batch_size integer, p_keep_seconds double precision)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    abandoned public.executions;
    ended integer := 0;
BEGIN
    FOR abandoned IN
        SELECT * FROM public.executions
        WHERE status = 'running' AND NOT deliver_async AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT p_batch_size
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM public.end_abandoned_attempt(abandoned, p_keep_seconds);
        ended := ended + 1;
    END LOOP;
    RETURN ended;
END
$$
"""

CREATE_OWNER_POLICIES = """
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY executions_owner_ends_abandoned ON executions FOR ALL TO %I '
        'USING (status = ''running'' AND NOT deliver_async AND lease_expires_at < now()) '
        'WITH CHECK (status = ''failed'' AND last_error_type = ''abandoned'')',
        current_user
    );
    EXECUTE format(
        'CREATE POLICY execution_attempts_owner_ends_abandoned ON execution_attempts '
        'FOR ALL TO %I USING (ended_at IS NULL) WITH CHECK (outcome = ''abandoned'')',
        current_user
    );
END
$$;
"""

CREATE_RUNNING_INDEX = (
    "CREATE INDEX executions_sync_running_lease ON executions (lease_expires_at) "
    "WHERE status = 'running' AND NOT deliver_async"
)

TAKE_V2 = (
    "take_due_deliveries_v2(double precision, uuid, integer, integer, boolean, double precision)"
)
END_ATTEMPT = "end_abandoned_attempt(executions, double precision)"
END_EXECUTIONS = "end_abandoned_executions(integer, double precision)"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_RUNNING_INDEX)
    op.execute(CREATE_END_ABANDONED_ATTEMPT)
    op.execute(CREATE_TAKE_V2)
    op.execute(CREATE_END_ABANDONED_EXECUTIONS)
    op.execute(CREATE_OWNER_POLICIES)
    for signature in (END_ATTEMPT, TAKE_V2, END_EXECUTIONS):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO n8n_gate_app")


def downgrade() -> None:
    op.execute("DROP POLICY execution_attempts_owner_ends_abandoned ON execution_attempts")
    op.execute("DROP POLICY executions_owner_ends_abandoned ON executions")
    op.execute(f"DROP FUNCTION {END_EXECUTIONS}")
    op.execute(f"DROP FUNCTION {TAKE_V2}")
    op.execute(f"DROP FUNCTION {END_ATTEMPT}")
    op.execute("DROP INDEX executions_sync_running_lease")
