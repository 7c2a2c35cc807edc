"""The gateway signs its calls to n8n (issue 16): each tenant's signing secrets, and
`signing_secrets_of`, through which the service role reads them (creating the first).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_SIGNING_SECRETS = """
CREATE TABLE signing_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret      text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
)
"""

CREATE_INDEX = "CREATE INDEX signing_secrets_tenant ON signing_secrets (tenant_id)"

CREATE_SIGNING_SECRETS_OF = """
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
$$
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_SIGNING_SECRETS)
    op.execute(CREATE_INDEX)
    op.execute("ALTER TABLE signing_secrets ENABLE ROW LEVEL SECURITY")
    op.execute(CREATE_SIGNING_SECRETS_OF)
    op.execute("REVOKE ALL ON FUNCTION signing_secrets_of(uuid, text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION signing_secrets_of(uuid, text) TO n8n_gate_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS signing_secrets_of(uuid, text)")
    op.execute("DROP TABLE IF EXISTS signing_secrets")
