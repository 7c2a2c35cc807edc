"""Provider routes name their tenant: `tenant_lookup(name)` resolves it for the service role,
which cannot read `tenants` (issue 16).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_TENANT_LOOKUP = """
CREATE OR REPLACE FUNCTION tenant_lookup(tenant_name text)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT t.id FROM public.tenants t WHERE t.name = tenant_name
$$
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(CREATE_TENANT_LOOKUP)
    op.execute("REVOKE ALL ON FUNCTION tenant_lookup(text) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION tenant_lookup(text) TO n8n_gate_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS tenant_lookup(text)")
