"""API keys (issue 16): read-only keys, rotation with an overlap (`expires_at`), and when a key
was last used (`api_key_used`, called once a key verified, at most once a minute).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_COLUMNS = """
ALTER TABLE api_keys
    ADD COLUMN read_only boolean NOT NULL DEFAULT false,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz
"""

CREATE_LOOKUP = """
CREATE OR REPLACE FUNCTION api_key_lookup(key_prefix text)
RETURNS TABLE (tenant_id uuid, tenant_name text, key_hash bytea, read_only boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT k.tenant_id, t.name, k.key_hash, k.read_only
    FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id
    WHERE k.prefix = key_prefix AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
$$
"""

CREATE_USED = """
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
$$
"""

OLD_LOOKUP = """
CREATE FUNCTION api_key_lookup(key_prefix text)
RETURNS TABLE (tenant_id uuid, tenant_name text, key_hash bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT k.tenant_id, t.name, k.key_hash
    FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id
    WHERE k.prefix = key_prefix AND k.revoked_at IS NULL
$$
"""

# Before 0009 a key had no rights nor expiry: going back, the keys that may only read or have
# expired are revoked, or they would come back with every right.
REVOKE_NARROWER_KEYS = """
UPDATE api_keys SET revoked_at = now()
WHERE revoked_at IS NULL AND (read_only OR expires_at IS NOT NULL)
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(ADD_COLUMNS)
    # Its result gains a column: replaced, not altered.
    op.execute("DROP FUNCTION api_key_lookup(text)")
    op.execute(CREATE_LOOKUP)
    op.execute(CREATE_USED)
    for function in ("api_key_lookup(text)", "api_key_used(text)"):
        _grant(function)


def downgrade() -> None:
    op.execute(REVOKE_NARROWER_KEYS)
    op.execute("DROP FUNCTION api_key_used(text)")
    op.execute("DROP FUNCTION api_key_lookup(text)")
    op.execute(OLD_LOOKUP)
    _grant("api_key_lookup(text)")
    op.execute(
        "ALTER TABLE api_keys DROP COLUMN read_only, DROP COLUMN expires_at, "
        "DROP COLUMN last_used_at"
    )


def _grant(function: str) -> None:
    op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO n8n_gate_app")
