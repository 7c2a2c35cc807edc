"""SQL for tenants and API keys. Admin statements run as the login user, outside RLS."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from app.db import AnyConnection

LOOKUP_KEY = "SELECT tenant_id, tenant_name, key_hash, read_only FROM api_key_lookup($1)"
LOOKUP_TENANT = "SELECT tenant_lookup($1)"
NOTE_KEY_USED = "SELECT api_key_used($1)"
SIGNING_SECRETS = "SELECT signing_secrets_of($1, $2) AS secret"
TAKE_FROM_RATE_BUCKET = "SELECT take_rate_token($1, $2, $3)"

# Admin statements for `n8n-gate keys signing-secret`.
LIVE_SIGNING_SECRETS = """
SELECT s.secret, s.created_at, s.expires_at
FROM signing_secrets s JOIN tenants t ON t.id = s.tenant_id
WHERE t.name = $1 AND (s.expires_at IS NULL OR s.expires_at > now())
ORDER BY s.created_at DESC, s.id DESC
"""

LOCK_SIGNING = "SELECT pg_advisory_xact_lock(hashtextextended('signing_secrets ' || $1, 0))"
ROTATE_SIGNING = """
WITH tenant AS (SELECT id FROM tenants WHERE name = $1),
retired AS (
    UPDATE signing_secrets s SET expires_at = now() + make_interval(secs => $3)
    FROM tenant
    WHERE s.tenant_id = tenant.id
      AND (s.expires_at IS NULL OR s.expires_at > now() + make_interval(secs => $3))
)
INSERT INTO signing_secrets (tenant_id, secret) SELECT id, $2 FROM tenant
RETURNING id
"""

UPSERT_TENANT = """
INSERT INTO tenants (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id
"""

INSERT_KEY = """
INSERT INTO api_keys (tenant_id, prefix, key_hash, read_only) VALUES ($1, $2, $3, $4)
"""

# The key to rotate out: it keeps working for the overlap (or less, if it expires sooner).
ROTATE_OUT_KEY = """
UPDATE api_keys SET expires_at = CASE
    WHEN expires_at < now() + make_interval(secs => $2) THEN expires_at
    ELSE now() + make_interval(secs => $2)
END
WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
RETURNING tenant_id, read_only
"""

LIST_KEYS = """
SELECT k.prefix, t.name AS tenant, k.created_at, k.revoked_at, k.read_only, k.expires_at,
       k.last_used_at
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
    read_only: bool


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None
    read_only: bool
    expires_at: datetime | None
    last_used_at: datetime | None


async def find_key(conn: AnyConnection, *, prefix: str) -> StoredKey | None:
    row = await conn.fetchrow(LOOKUP_KEY, prefix)
    if row is None:
        return None
    return StoredKey(**dict(row))


async def note_key_used(conn: AnyConnection, *, prefix: str) -> None:
    await conn.execute(NOTE_KEY_USED, prefix)


async def find_tenant_id(conn: AnyConnection, *, name: str) -> UUID | None:
    tenant_id: UUID | None = await conn.fetchval(LOOKUP_TENANT, name)
    return tenant_id


async def signing_secrets(conn: AnyConnection, *, tenant_id: UUID, new: str) -> list[str]:
    """The tenant's live signing secrets, newest first; `new` becomes the first if none."""
    return [row["secret"] for row in await conn.fetch(SIGNING_SECRETS, tenant_id, new)]


@dataclass(frozen=True)
class SigningSecret:
    secret: str
    created_at: datetime
    expires_at: datetime | None


async def live_signing_secrets(conn: AnyConnection, *, tenant_name: str) -> list[SigningSecret]:
    rows = await conn.fetch(LIVE_SIGNING_SECRETS, tenant_name)
    return [SigningSecret(**dict(row)) for row in rows]


async def rotate_signing_secret(
    conn: AnyConnection, *, tenant_id: UUID, tenant_name: str, new: str, overlap_seconds: float
) -> bool:
    """`new` signs from now on; the others sign beside it for `overlap_seconds` more. False
    when there is no such tenant."""
    async with conn.transaction():
        # The lock signing_secrets_of takes: a first use racing the rotation waits for it.
        await conn.execute(LOCK_SIGNING, str(tenant_id))
        inserted = await conn.fetchval(ROTATE_SIGNING, tenant_name, new, overlap_seconds)
    return inserted is not None


async def take_rate_token(
    conn: AnyConnection, *, tenant_id: UUID, per_second: float, burst: int
) -> float:
    """0 when the tenant's bucket gave a token, else the seconds until it will."""
    wait: float = await conn.fetchval(TAKE_FROM_RATE_BUCKET, tenant_id, per_second, burst)
    return wait


async def upsert_tenant(conn: AnyConnection, *, name: str) -> UUID:
    tenant_id: UUID = await conn.fetchval(UPSERT_TENANT, name)
    return tenant_id


async def insert_key(
    conn: AnyConnection, *, tenant_id: UUID, prefix: str, key_hash: bytes, read_only: bool
) -> None:
    await conn.execute(INSERT_KEY, tenant_id, prefix, key_hash, read_only)


async def rotate_out_key(
    conn: AnyConnection, *, prefix: str, overlap_seconds: float
) -> tuple[UUID, bool] | None:
    """The rotated key's tenant and rights, once it is set to expire; None if not live."""
    row = await conn.fetchrow(ROTATE_OUT_KEY, prefix, overlap_seconds)
    return None if row is None else (row["tenant_id"], row["read_only"])


async def list_keys(conn: AnyConnection) -> list[KeyInfo]:
    rows = await conn.fetch(LIST_KEYS)
    return [KeyInfo(**dict(row)) for row in rows]


async def revoke_key(conn: AnyConnection, *, prefix: str) -> bool:
    return await conn.fetchval(REVOKE_KEY, prefix) is not None


async def count_keys(conn: AnyConnection) -> int:
    count: int = await conn.fetchval(COUNT_KEYS)
    return count
