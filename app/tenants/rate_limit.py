"""A per-tenant rate limit shared by every process: a token bucket per tenant, kept in Postgres
(`take_rate_token`), so N processes allow the rate once, not N times."""

from __future__ import annotations

import math
from uuid import UUID

from app import db
from app.errors import RateLimited
from app.tenants import repo


class RateLimiter:
    def __init__(self, pool: db.Pool, *, per_second: float, burst: int) -> None:
        self._pool = pool
        self._per_second = per_second
        self._burst = burst or max(1, math.ceil(per_second))

    @property
    def enabled(self) -> bool:
        return self._per_second > 0

    async def take(self, tenant_id: UUID) -> None:
        """Count one request of the tenant, or raise RateLimited (429) with Retry-After."""
        if not self.enabled:
            return
        async with db.connection(self._pool) as conn:
            wait = await repo.take_rate_token(
                conn, tenant_id=tenant_id, per_second=self._per_second, burst=self._burst
            )
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"This tenant may send {self._per_second:g} requests a second "
                f"(GATE_RATE_LIMIT_PER_SECOND, bursts of {self._burst}); nothing was "
                f"forwarded. Retry after {seconds} s.",
                headers={"Retry-After": str(seconds)},
            )
