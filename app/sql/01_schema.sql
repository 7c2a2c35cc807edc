-- n8n-gate's schema as it is now, readable top to bottom: roles, tables, indexes, Row Level
-- Security, grants (this file), then every function in its current version (02_functions.sql).
--
-- The migrations in alembic/versions/ are the deltas that bring a database here; they only
-- move forward and are never edited once landed. tests/test_sql_source.py builds one database
-- from these files (in the order of their names) and one with `alembic upgrade head`, and fails
-- when their tables, indexes, policies, functions or grants differ. To change the schema, edit
-- it here AND add a forward migration that makes the same change.
--
-- Nothing in the service runs these files: databases are only ever migrated.

-- The service connects with the URL it is given and then `SET ROLE n8n_gate_app`: a role that
-- is neither superuser nor BYPASSRLS, so the policies below hold even when the login user is a
-- superuser. Roles are cluster-wide: several databases (or concurrent test runs) may create it
-- at once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'n8n_gate_app') THEN
        BEGIN
            CREATE ROLE n8n_gate_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'n8n_gate_app', 'MEMBER') THEN
        EXECUTE format('GRANT n8n_gate_app TO %I', current_user);
    END IF;
END
$$;

-- Tenants and API keys are administered by the login user (the CLI). The service role has no
-- grants on them: it authenticates through api_key_lookup (02_functions.sql).
CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL UNIQUE,
    key_hash    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- Status and list only: no triggers, no retries.
    read_only   boolean NOT NULL DEFAULT false,
    -- A key rotated out (`n8n-gate keys rotate`) works until then.
    expires_at  timestamptz,
    -- Noted by api_key_used once a key verified, at most once a minute: not once per request.
    last_used_at timestamptz
);

-- One row per (tenant, idempotency key): whoever inserts it runs the workflow. Its status goes
-- pending (async, waiting for a delivery worker) → running (an attempt holds the lease) →
-- completed or failed; a failed execution, or a running one whose lease ran out, is taken
-- over by a new attempt. The columns' order is the `executions` row type that the functions
-- return and the service decodes.
CREATE TABLE executions (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id               uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    idempotency_key         text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint             bytea NOT NULL,
    method                  text NOT NULL,
    mode                    text NOT NULL CHECK (mode IN ('webhook', 'webhook-test')),
    workflow_path           text NOT NULL,
    status                  text NOT NULL
                            CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    attempts                integer NOT NULL DEFAULT 0,
    lease_expires_at        timestamptz,
    response_status         integer,
    response_content_type   text,
    response_headers        jsonb,
    response_body           bytea,
    response_body_bytes     bigint,
    outcome_unknown         boolean NOT NULL DEFAULT false,
    lease_owner             uuid,
    expires_at              timestamptz,
    deliver_async           boolean NOT NULL DEFAULT false,
    has_waiters             boolean NOT NULL DEFAULT false,
    next_attempt_at         timestamptz,
    request_raw_path        text,
    request_query           text,
    request_headers         jsonb,
    request_body            bytea,
    last_error_type         text,
    last_error_detail       text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    finished_at             timestamptz,
    CONSTRAINT executions_tenant_key UNIQUE (tenant_id, idempotency_key)
);

-- The history of an execution's attempts; an attempt's outcome is the one it recorded, or
-- 'abandoned' when its process died first.
CREATE TABLE execution_attempts (
    execution_id    bigint NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    tenant_id       uuid NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    outcome         text CHECK (outcome IN ('completed', 'failed', 'abandoned')),
    n8n_status      integer,
    error_type      text,
    error_detail    text,
    PRIMARY KEY (execution_id, attempt)
);

-- Each tenant's secrets for signing the gateway's calls to n8n (Standard Webhooks), so a
-- workflow can tell a call came through the gateway. A rotated-out secret lives on until
-- `expires_at`, signing beside the new one. The service role reads them through
-- signing_secrets_of (02_functions.sql) only.
CREATE TABLE signing_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret      text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX signing_secrets_tenant ON signing_secrets (tenant_id);

-- Per-tenant rate limit (GATE_RATE_LIMIT_PER_SECOND): a token bucket each, shared by every
-- process. UNLOGGED: after a crash the buckets start full, which a limit can afford, and no
-- trigger pays for a durable write of them.
CREATE UNLOGGED TABLE rate_buckets (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Executions waiting for a delivery worker (Prefer: respond-async): due now, due after a retry
-- delay, or running (due again when the lease would run out). It holds ids and times only, no
-- tenant data, so workers can pick across tenants without RLS; everything about the execution
-- itself is read under RLS once the worker has set the tenant.
CREATE TABLE delivery_queue (
    execution_id    bigint PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    due_at          timestamptz NOT NULL,
    target          text NOT NULL,                  -- n8n mode and path: "webhook orders"
    running         boolean NOT NULL DEFAULT false  -- a worker is delivering it
);

-- Alerts (GATE_ALERT_URL): one per execution end that an operator must hear of: an async
-- delivery that ended failed (a dead letter), or an execution that ended with its outcome
-- unknown. A trigger on executions (02_functions.sql) writes it in the transaction that ends
-- the execution, so the end never commits without it; the delivery workers send it. It copies
-- what the alert says (no request headers or bodies) and outlives the execution's row. Only
-- the owner reads it, through the functions (tenant data across tenants, like api_keys).
-- status: pending (due at due_at) → sending (leased until due_at; a process that died leaves it
-- due again) → delivered | failed (sent `sends` times, refused every time), or pending again.
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
);

-- Dashboard sessions (/ui): the sha256 of each session's random token (the browser holds the
-- token, in its cookie), its tenant, its API key's prefix and its end. A session lives while
-- its row does, until expires_at and only while its key is live; signing out deletes it. Only
-- the owner reads it, through the ui_session_* functions (02_functions.sql), like api_keys: a
-- reader of this table learns no token.
CREATE TABLE ui_sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- executions_tenant_key serves the claim and the status lookup; these serve the list.
CREATE INDEX executions_recent ON executions (tenant_id, id DESC);
CREATE INDEX executions_status_recent ON executions (tenant_id, status, id DESC);
CREATE INDEX executions_workflow_recent ON executions (tenant_id, workflow_path, id DESC);
-- The reaper: finished executions by expiry.
CREATE INDEX executions_expiry ON executions (expires_at) WHERE expires_at IS NOT NULL;
-- The reaper: sync executions whose process died, by the end of their lease.
CREATE INDEX executions_sync_running_lease ON executions (lease_expires_at)
    WHERE status = 'running' AND NOT deliver_async;
CREATE INDEX delivery_queue_due ON delivery_queue (due_at);
CREATE INDEX delivery_queue_running ON delivery_queue (target) WHERE running;
-- The batched take walks the targets, and takes each target's earliest due row.
CREATE INDEX delivery_queue_target_due ON delivery_queue (target, due_at);
-- The alert take: due alerts by time; the alert reaper: all of them by age.
CREATE INDEX alerts_due ON alerts (due_at) WHERE status IN ('pending', 'sending');
CREATE INDEX alerts_created ON alerts (created_at);
-- A session start deletes a few ended sessions, oldest first.
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);

-- Tenant tables: a row is visible only when `app.tenant_id` (set per transaction by the
-- service, or by the functions themselves) names its tenant, even to the tables' owner.
ALTER TABLE executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE executions FORCE ROW LEVEL SECURITY;
ALTER TABLE execution_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_attempts FORCE ROW LEVEL SECURITY;
-- Enabled without policies: only the owner (the migrating/admin user) reads these tables.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE ui_sessions ENABLE ROW LEVEL SECURITY;

-- NULLIF: once a transaction-local setting ends, the setting reads as '' rather than NULL.
CREATE POLICY executions_tenant_isolation ON executions
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY execution_attempts_tenant_isolation ON execution_attempts
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- The owner's policies, for the reaper's SECURITY DEFINER functions, which work across
-- tenants: under FORCE RLS the owner sees expired executions (to delete them) and abandoned
-- sync executions (which it may only end as failed-abandoned), and nothing else. The service
-- role never has them. The owner is whoever migrates, hence the format().
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY executions_owner_reaps_expired ON executions FOR ALL TO %I '
        'USING (expires_at < now())',
        current_user
    );
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

GRANT USAGE ON SCHEMA public TO n8n_gate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON executions TO n8n_gate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON execution_attempts TO n8n_gate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON delivery_queue TO n8n_gate_app;
-- Migration 0001 also grants SELECT on alembic_version (Alembic's table, not part of this
-- schema): /readyz and the startup check compare the schema revision with the build.
