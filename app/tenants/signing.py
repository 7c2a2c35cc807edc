"""Each tenant's secrets for signing the gateway's calls to n8n, read through a short cache: a
rotation reaches every process within `cache_seconds`."""

from __future__ import annotations

import base64
import secrets
import time
from uuid import UUID

from app import db
from app.tenants import repo

# How soon a rotated secret reaches every process: a rotation keeps the old secret signing at
# least this long (`n8n-gate keys signing-secret --rotate`).
CACHE_SECONDS = 60.0


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SigningSecrets:
    def __init__(self, pool: db.Pool, *, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[UUID, tuple[tuple[str, ...], float]] = {}

    async def of(self, tenant_id: UUID) -> tuple[str, ...]:
        """The tenant's live secrets, newest first (its first is created on first use)."""
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with db.connection(self._pool) as conn:
            live = tuple(
                await repo.signing_secrets(conn, tenant_id=tenant_id, new=new_signing_secret())
            )
        self._cache[tenant_id] = (live, time.monotonic() + self._cache_seconds)
        return live
