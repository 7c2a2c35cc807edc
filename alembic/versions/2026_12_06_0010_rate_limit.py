"""A per-tenant rate limit shared by every process (issue 16): a token bucket per tenant in an
UNLOGGED table, taken through `take_rate_token`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_BUCKETS = """
CREATE UNLOGGED TABLE rate_buckets (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL
)
"""

CREATE_TAKE = """
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
$$
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_BUCKETS)
    op.execute("ALTER TABLE rate_buckets ENABLE ROW LEVEL SECURITY")
    op.execute(CREATE_TAKE)
    op.execute(
        "REVOKE ALL ON FUNCTION take_rate_token(uuid, double precision, integer) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION take_rate_token(uuid, double precision, integer) TO n8n_gate_app"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS take_rate_token(uuid, double precision, integer)")
    op.execute("DROP TABLE IF EXISTS rate_buckets")
