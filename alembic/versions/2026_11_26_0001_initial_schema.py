"""Tenants, API keys, executions and their attempts, with Row Level Security.

The service connects with the URL it is given and then `SET ROLE n8n_gate_app`: a role that is
neither superuser nor BYPASSRLS, so the policies below hold even when the login user is a
superuser. `executions` and `execution_attempts` are tenant tables: RLS is enabled and forced,
and a row is visible only when `app.tenant_id` (set per transaction by the service) names its
tenant. `tenants` and `api_keys` are administered by the login user (CLI); the service role has
no grants on them and authenticates through one SECURITY DEFINER function that returns a key's
hash by its public prefix.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Roles are cluster-wide: several databases (or concurrent test runs) may create it at once.
CREATE_APP_ROLE = """
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
"""

GRANT_APP_ROLE_TO_MIGRATOR = """
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'n8n_gate_app', 'MEMBER') THEN
        EXECUTE format('GRANT n8n_gate_app TO %I', current_user);
    END IF;
END
$$;
"""

CREATE_TENANTS = """
CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""

CREATE_API_KEYS = """
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL UNIQUE,
    key_hash    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
)
"""

CREATE_EXECUTIONS = """
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
)
"""

CREATE_ATTEMPTS = """
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
)
"""

# Executions waiting for a delivery worker (Prefer: respond-async): due now, due after a retry
# delay, or running (due again when the lease would run out). It holds ids and times only, no
# tenant data, so workers can pick across tenants without RLS; everything about the execution
# itself is read under RLS once the worker has set the tenant.
CREATE_DELIVERY_QUEUE = """
CREATE TABLE delivery_queue (
    execution_id    bigint PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    due_at          timestamptz NOT NULL,
    target          text NOT NULL,                  -- n8n mode and path: "webhook orders"
    running         boolean NOT NULL DEFAULT false  -- a worker is delivering it
)
"""

# The unique constraint above serves the claim and the status lookup; these serve the list.
CREATE_LIST_INDEXES = [
    "CREATE INDEX executions_recent ON executions (tenant_id, id DESC)",
    "CREATE INDEX executions_status_recent ON executions (tenant_id, status, id DESC)",
    "CREATE INDEX executions_workflow_recent ON executions (tenant_id, workflow_path, id DESC)",
    "CREATE INDEX delivery_queue_due ON delivery_queue (due_at)",
    "CREATE INDEX delivery_queue_running ON delivery_queue (target) WHERE running",
    # Serves the reaper: finished executions by expiry.
    "CREATE INDEX executions_expiry ON executions (expires_at) WHERE expires_at IS NOT NULL",
]

ENABLE_RLS = [
    "ALTER TABLE executions ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE executions FORCE ROW LEVEL SECURITY",
    "ALTER TABLE execution_attempts ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE execution_attempts FORCE ROW LEVEL SECURITY",
    # Enabled without policies: only the owner (the migrating/admin user) reads these tables.
    "ALTER TABLE tenants ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY",
]

# NULLIF: once a transaction-local setting ends, the setting reads as '' rather than NULL.
CREATE_TENANT_POLICIES = [
    f"""
    CREATE POLICY {table}_tenant_isolation ON {table}
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    """
    for table in ("executions", "execution_attempts")
]

# The reaper deletes expired executions of every tenant. It runs as the owner through a
# SECURITY DEFINER function; under FORCE RLS the owner needs a policy too, and this one shows it
# expired rows only. The service role never has it.
CREATE_OWNER_REAP_POLICY = """
DO $$
BEGIN
    EXECUTE format(
        'CREATE POLICY executions_owner_reaps_expired ON executions FOR ALL TO %I '
        'USING (expires_at < now())',
        current_user
    );
END
$$;
"""

CREATE_REAPER = """
CREATE FUNCTION reap_expired_executions(batch_size integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public
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
$$
"""

CREATE_KEY_LOOKUP = """
CREATE FUNCTION api_key_lookup(key_prefix text)
RETURNS TABLE (tenant_id uuid, tenant_name text, key_hash bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT k.tenant_id, t.name, k.key_hash
    FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id
    WHERE k.prefix = key_prefix AND k.revoked_at IS NULL
$$
"""

GRANTS = [
    "REVOKE ALL ON FUNCTION api_key_lookup(text) FROM PUBLIC",
    "REVOKE ALL ON FUNCTION reap_expired_executions(integer) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION reap_expired_executions(integer) TO n8n_gate_app",
    "GRANT EXECUTE ON FUNCTION api_key_lookup(text) TO n8n_gate_app",
    "GRANT USAGE ON SCHEMA public TO n8n_gate_app",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON executions TO n8n_gate_app",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON execution_attempts TO n8n_gate_app",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON delivery_queue TO n8n_gate_app",
    # /readyz and the startup check compare the schema revision with the build.
    "GRANT SELECT ON alembic_version TO n8n_gate_app",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_APP_ROLE)
    op.execute(GRANT_APP_ROLE_TO_MIGRATOR)
    op.execute(CREATE_TENANTS)
    op.execute(CREATE_API_KEYS)
    op.execute(CREATE_EXECUTIONS)
    op.execute(CREATE_ATTEMPTS)
    op.execute(CREATE_DELIVERY_QUEUE)
    for statement in [*CREATE_LIST_INDEXES, *ENABLE_RLS, *CREATE_TENANT_POLICIES]:
        op.execute(statement)
    op.execute(CREATE_KEY_LOOKUP)
    op.execute(CREATE_OWNER_REAP_POLICY)
    op.execute(CREATE_REAPER)
    for statement in GRANTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS api_key_lookup(text)")
    op.execute("DROP FUNCTION IF EXISTS reap_expired_executions(integer)")
    op.execute("DROP TABLE IF EXISTS delivery_queue")
    op.execute("DROP TABLE IF EXISTS execution_attempts")
    op.execute("DROP TABLE IF EXISTS executions")
    op.execute("DROP TABLE IF EXISTS api_keys")
    op.execute("DROP TABLE IF EXISTS tenants")
    # The role is cluster-wide and may serve other databases: it is left in place.
