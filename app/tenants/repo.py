"""SQL for tenants and API keys. Admin statements run as the login user, outside RLS."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.db import AnyConnection

LOOKUP_KEY = "SELECT tenant_id, tenant_name, key_hash FROM api_key_lookup($1)"
LOOKUP_TENANT = "SELECT tenant_lookup($1)"

UPSERT_TENANT = """
INSERT INTO tenants (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id
"""

INSERT_KEY = "INSERT INTO api_keys (tenant_id, prefix, key_hash) VALUES ($1, $2, $3)"

LIST_KEYS = """
SELECT k.prefix, t.name AS tenant, k.created_at, k.revoked_at
FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
ORDER BY k.created_at, k.id
"""

REVOKE_KEY = """
UPDATE api_keys SET revoked_at = now()
WHERE prefix = $1 AND revoked_at IS NULL
RETURNING prefix
"""

COUNT_KEYS = "SELECT count(*) FROM api_keys"


@dataclass(frozen=True)
class StoredKey:
    tenant_id: UUID
    tenant_name: str
    key_hash: bytes


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None


async def find_key(conn: AnyConnection, *, prefix: str) -> StoredKey | None:
    row = await conn.fetchrow(LOOKUP_KEY, prefix)
    if row is None:
        return None
    return StoredKey(
        tenant_id=row["tenant_id"], tenant_name=row["tenant_name"], key_hash=row["key_hash"]
    )


async def find_tenant_id(conn: AnyConnection, *, name: str) -> UUID | None:
    tenant_id: UUID | None = await conn.fetchval(LOOKUP_TENANT, name)
    return tenant_id


async def upsert_tenant(conn: AnyConnection, *, name: str) -> UUID:
    tenant_id: UUID = await conn.fetchval(UPSERT_TENANT, name)
    return tenant_id


async def insert_key(conn: AnyConnection, *, tenant_id: UUID, prefix: str, key_hash: bytes) -> None:
    await conn.execute(INSERT_KEY, tenant_id, prefix, key_hash)


async def list_keys(conn: AnyConnection) -> list[KeyInfo]:
    rows = await conn.fetch(LIST_KEYS)
    return [KeyInfo(**dict(row)) for row in rows]


async def revoke_key(conn: AnyConnection, *, prefix: str) -> bool:
    return await conn.fetchval(REVOKE_KEY, prefix) is not None


async def count_keys(conn: AnyConnection) -> int:
    count: int = await conn.fetchval(COUNT_KEYS)
    return count
