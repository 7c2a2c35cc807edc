"""The functions that run as the owner, or set a search_path of their own, search `pg_temp` last.

A search_path that does not name `pg_temp` searches it first for tables: a caller could create
a temporary table named like one of ours, and an owner's function (or a helper it calls, which
runs with its search_path) would read or write that table with the owner's rights instead.
Naming `pg_temp` last closes that, as PostgreSQL's documentation on SECURITY DEFINER advises.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFINERS = [
    "api_key_lookup(text)",
    "reap_expired_executions(integer)",
    "end_abandoned_executions(integer, double precision)",
    # Runs as its caller, the owner inside end_abandoned_executions, with a path of its own.
    "end_abandoned_attempt(executions, double precision)",
]


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for function in DEFINERS:
        op.execute(f"ALTER FUNCTION {function} SET search_path = pg_catalog, public, pg_temp")


def downgrade() -> None:
    for function in DEFINERS:
        op.execute(f"ALTER FUNCTION {function} SET search_path = pg_catalog, public")
