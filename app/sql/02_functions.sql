-- Every function of the schema in its current version (01_schema.sql says how these files
-- relate to the migrations), each with the transition it makes. An execution's status goes
-- pending → running → completed | failed; a failed execution, or a running one whose lease ran
-- out (its process died), is taken over by a new attempt or ended as abandoned.
--
-- The trigger path's functions set `app.tenant_id` for their own (implicit) transaction and
-- then run their statements under Row Level Security as the calling role (SECURITY INVOKER):
-- a step costs one round trip instead of four (BEGIN, set_config, statement, COMMIT), which on
-- the 2-core reference machine was about half the gateway's CPU per request. Only the key
-- lookup and the reaper's functions run as the owner (SECURITY DEFINER, with a fixed
-- search_path), and the owner's policies (01_schema.sql) show them only what they may touch.
-- PUBLIC may execute none of them; the service role may execute all of them.

-- ==============================================================================================
-- Keys
-- ==============================================================================================

-- The service role has no grants on tenants and api_keys: it authenticates through this one
-- function, which runs as the owner and returns a live key's hash, tenant and rights by its
-- public prefix.
CREATE OR REPLACE FUNCTION api_key_lookup(key_prefix text)
RETURNS TABLE (tenant_id uuid, tenant_name text, key_hash bytea, read_only boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT k.tenant_id, t.name, k.key_hash, k.read_only
    FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id
    WHERE k.prefix = key_prefix AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
$$;

-- Notes that a key was used, once it verified, at most once a minute; a row locked by someone
-- else is skipped rather than waited for: a trigger never waits on this.
CREATE OR REPLACE FUNCTION api_key_used(key_prefix text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    UPDATE public.api_keys SET last_used_at = now()
    WHERE id = (
        SELECT k.id FROM public.api_keys k
        WHERE k.prefix = key_prefix
          AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
        FOR UPDATE SKIP LOCKED
    )
$$;

-- Dashboard sessions (ui_sessions). A start records a session for a live key (nothing when the
-- key was revoked or expired meanwhile) and deletes up to ten ended sessions, so the table holds
-- about the live ones; it returns the session's end.
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
$$;

-- The session of a token's hash, while it lasts and its key is live (revoked or expired, the key
-- ends its sessions); the key's rights as they are now.
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
$$;

-- Sign-out: the session ends at once, whoever holds a copy of its cookie.
CREATE OR REPLACE FUNCTION ui_session_end(p_token_hash bytea)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM public.ui_sessions s WHERE s.token_hash = p_token_hash RETURNING 1
    )
    SELECT count(*) > 0 FROM gone
$$;

-- A provider route (GATE_ROUTES_FILE) names its tenant; the gateway resolves the name at start
-- through this function, as the service role cannot read tenants.
CREATE OR REPLACE FUNCTION tenant_lookup(tenant_name text)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT t.id FROM public.tenants t WHERE t.name = tenant_name
$$;

-- The tenant's live signing secrets, newest first; when it has none, `p_new` becomes its
-- first (the lock makes two processes asking at once agree on one).
CREATE OR REPLACE FUNCTION signing_secrets_of(p_tenant uuid, p_new text)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('signing_secrets ' || p_tenant::text, 0));
    IF NOT EXISTS (
        SELECT 1 FROM public.signing_secrets
        WHERE tenant_id = p_tenant AND (expires_at IS NULL OR expires_at > now())
    ) THEN
        INSERT INTO public.signing_secrets (tenant_id, secret) VALUES (p_tenant, p_new);
    END IF;
    RETURN QUERY
        SELECT secret FROM public.signing_secrets
        WHERE tenant_id = p_tenant AND (expires_at IS NULL OR expires_at > now())
        ORDER BY created_at DESC, id DESC;
END
$$;


-- Takes one token from the tenant's bucket (`p_burst` tokens, refilled at `p_rate` a second):
-- 0 when taken, else the seconds until one will be there. Under the row's lock, so processes
-- taking at once each see the others' takes.
CREATE OR REPLACE FUNCTION take_rate_token(p_tenant uuid, p_rate double precision, p_burst integer)
RETURNS double precision
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    available double precision;
BEGIN
    INSERT INTO public.rate_buckets (tenant_id, tokens, updated_at)
    VALUES (p_tenant, p_burst, clock_timestamp())
    ON CONFLICT (tenant_id) DO NOTHING;
    SELECT least(p_burst, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at) * p_rate)
    INTO available
    FROM public.rate_buckets b WHERE b.tenant_id = p_tenant FOR UPDATE;
    IF available >= 1 THEN
        UPDATE public.rate_buckets
        SET tokens = available - 1, updated_at = clock_timestamp()
        WHERE tenant_id = p_tenant;
        RETURN 0;
    END IF;
    RETURN (1 - available) / p_rate;
END
$$;


-- ==============================================================================================
-- Steps the transitions below share. They run as their caller: its role, tenant and search_path.
-- ==============================================================================================

-- A claim or accept found its key taken. Past its retention the key is new again, reaped yet or
-- not: the row that holds it is deleted, and true says the insert may be tried once more.
CREATE OR REPLACE FUNCTION free_expired_key(p_tenant uuid, p_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    DELETE FROM executions
    WHERE tenant_id = p_tenant AND idempotency_key = p_key AND expires_at < now();
    RETURN FOUND;
END
$$;

-- A claim's or accept's result when the key is held: the row that holds it. Called as a statement
-- of its own after the insert, it reads a new snapshot, in which the row that won the insert's
-- conflict is visible.
CREATE OR REPLACE FUNCTION key_holder(p_tenant uuid, p_key text)
RETURNS TABLE (claimed boolean, lease_expired boolean, execution executions)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT false, e.lease_expires_at < now(), e
    FROM executions e
    WHERE e.tenant_id = p_tenant AND e.idempotency_key = p_key;
END
$$;

-- An open attempt → abandoned: its process died before recording its outcome. p_detail says
-- what is known of it. An attempt that ended already keeps its outcome.
CREATE OR REPLACE FUNCTION mark_attempt_abandoned(
    p_execution_id bigint, p_attempt integer, p_detail text
)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE execution_attempts
    SET outcome = 'abandoned', ended_at = now(), error_type = 'abandoned',
        error_detail = p_detail
    WHERE execution_id = p_execution_id AND attempt = p_attempt AND ended_at IS NULL;
END
$$;


-- ==============================================================================================
-- The trigger path
-- ==============================================================================================

-- (no row) → running, attempt 1: the INSERT ... ON CONFLICT DO NOTHING that decides who runs.
-- When it inserts nothing the key is taken: a holder past its retention is deleted and the
-- insert tried once more; otherwise the holder comes back (claimed false) for the caller to
-- replay, refuse or retake. New keys pay for the INSERT alone.
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
$$;

-- failed → running, or running with its lease run out → running (the dead attempt abandoned): a
-- new attempt takes the execution over. Under READ COMMITTED a second taker waits for the row
-- lock, re-checks the WHERE on the new row version and matches nothing.
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
$$;

-- running → running: the attempt extends its lease while n8n works. False when the attempt no
-- longer holds the execution (taken over, or finished).
CREATE OR REPLACE FUNCTION renew_execution_lease(
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
$$;

-- running → completed | failed, or → pending when a failed async delivery is to be retried at
-- p_retry_at. Fenced by the attempt number, so an attempt that lost its lease cannot overwrite
-- the one that took over; announces the finish with NOTIFY to requests waiting on it
-- (Prefer: wait), in every process.
CREATE OR REPLACE FUNCTION record_execution_outcome(
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
$$;

-- running → failed ('claim-interrupted'): a claim whose answer was lost with the connection, so
-- nothing was forwarded. Matched by the owner token the claiming process chose, since it never
-- learnt the execution's id.
CREATE OR REPLACE FUNCTION release_unforwarded_claim(
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
$$;

-- A request about to wait for the execution (Prefer: wait) asks to be told when it finishes:
-- record_execution_outcome notifies only for executions flagged here.
CREATE OR REPLACE FUNCTION mark_execution_waited(p_tenant uuid, p_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    UPDATE executions SET has_waiters = true
    WHERE tenant_id = p_tenant AND id = p_id AND NOT has_waiters;
END
$$;


-- ==============================================================================================
-- Async delivery (Prefer: respond-async)
-- ==============================================================================================

-- (no row) → pending, queued for the delivery workers; or the row that holds the key, as
-- claim_execution returns it.
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
$$;

-- pending → running, or running with its lease run out (its worker died) → running (the dead
-- attempt abandoned), or → failed when p_refuse_abandoned (GATE_UNKNOWN_OUTCOME=refuse: the dead
-- process may have reached n8n). A dispatcher takes up to p_limit due deliveries in one
-- transaction; SKIP LOCKED keeps takers apart, and a target (n8n mode and path) with
-- p_max_per_target deliveries running under a live lease is passed over.
-- Each row says what happened besides the take: `ended` is 'dead_letter' for an execution ended
-- rather than taken (not to be delivered), 'abandoned' for one taken over from a dead attempt.
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

-- The take of builds before migration 0012, kept for their processes during a rolling deploy:
-- take_due_deliveries_v3 without what it tells of the executions it ended or took over.
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

-- The take of builds before migration 0004, kept for their processes during a rolling deploy:
-- as take_due_deliveries_v2, except that a running delivery whose lease ran out still counts
-- toward its target's cap, and is always sent again.
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
$$;

-- failed → pending: a manual retry puts failed async executions back in the delivery queue, due
-- now.
CREATE OR REPLACE FUNCTION requeue_failed_executions(
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
$$;

-- The same, bounded by when the dead letters failed too (before `p_failed_before`): the
-- dashboard's "retry all matching" retries what its confirmation counted, not what failed since.
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
$$;


-- ==============================================================================================
-- Retention: as the owner, across tenants
-- ==============================================================================================

-- Deletes executions past their retention (expires_at), a batch at a time. The owner's policy
-- shows it expired rows only.
CREATE OR REPLACE FUNCTION reap_expired_executions(batch_size integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH doomed AS (
        SELECT id FROM public.executions
        WHERE expires_at < now()
        ORDER BY expires_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM public.executions e USING doomed d WHERE e.id = d.id RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;

-- running with its lease run out → failed, outcome unknown (n8n may have run it), with an expiry
-- like any failed execution's; its attempt abandoned, and waiters told. What the reaper and a
-- take under GATE_UNKNOWN_OUTCOME=refuse do to one execution.
CREATE OR REPLACE FUNCTION end_abandoned_attempt(
    p_execution executions, p_keep_seconds double precision
)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public, pg_temp AS $$
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
$$;

-- The reaper ends sync executions whose process died (lease run out, nobody sent the key again),
-- so they no longer stay running forever. The owner's policies show it nothing else, and let it
-- write only the abandoned end state.
CREATE OR REPLACE FUNCTION end_abandoned_executions(
    p_batch_size integer, p_keep_seconds double precision
)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
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
$$;


-- ==============================================================================================
-- Alerts (GATE_ALERT_URL): as the owner, across tenants
-- ==============================================================================================

-- running → failed, of an async delivery (a dead letter) or with the outcome unknown: the
-- operator's alert, queued in the transaction that ends the execution, whichever function ends
-- it (record_execution_outcome, a take under GATE_UNKNOWN_OUTCOME=refuse, the reaper).
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
$$;

-- The WHEN runs before any call: every other update of an execution costs nothing more.
CREATE TRIGGER executions_alert
    AFTER UPDATE OF status ON executions
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status = 'failed'
          AND (NEW.deliver_async OR NEW.outcome_unknown))
    EXECUTE FUNCTION queue_execution_alert();

-- pending and due → sending, or sending whose lease ran out (its process died) → sending again,
-- under the same message id: up to p_limit alerts, leased for p_lease_seconds. SKIP LOCKED
-- keeps takers apart. Each comes with its tenant's name and the number of this send.
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
$$;

-- sending → delivered, → pending again at p_retry_at, or → failed (no p_retry_at: given up).
-- Fenced by the send's number: a send whose lease ran out and was taken over records nothing.
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
$$;

-- A process without GATE_ALERT_URL deletes the alerts that are due instead of taking them: no
-- one is to be told, and none waits to flood a URL set later. Returns how many.
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
$$;

-- The reaper deletes alerts older than p_keep_seconds, sent or not, a batch at a time: the
-- table stays bounded where no process sends them (no delivery workers anywhere).
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
$$;


-- ==============================================================================================
-- Privileges
-- ==============================================================================================

-- Every function above is the service role's to call, and nobody else's: the helpers too, as
-- they run as their caller. A function that only the owner may run would be revoked here.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO n8n_gate_app;
