"""Request dependencies: the lifespan's typed state, and the caller's tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from app.config import Settings
from app.db import Pool
from app.executions.retention import Reaper
from app.executions.service import ExecutionService
from app.ingress.service import Ingress
from app.memory import ByteBudget
from app.tenants.rate_limit import RateLimiter
from app.tenants.service import Authenticator
from app.tenants.tenant import Tenant


@dataclass(frozen=True)
class Services:
    settings: Settings
    pool: Pool
    authenticator: Authenticator
    executions: ExecutionService
    reaper: Reaper
    budget: ByteBudget
    rate_limiter: RateLimiter
    ingress: Ingress | None = None  # None without GATE_ROUTES_FILE


async def get_services(request: Request) -> Services:  # async: sync deps run in a thread
    services: Services = request.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_tenant(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    n8n_gate_key: Annotated[str | None, Header()] = None,
) -> Tenant:
    """The caller's tenant, for reading."""
    return await services.authenticator.authenticate(
        authorization=authorization, gate_key=n8n_gate_key, access="read"
    )


async def get_writing_tenant(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    n8n_gate_key: Annotated[str | None, Header()] = None,
) -> Tenant:
    """The caller's tenant, for a change (403 for a read-only key)."""
    return await services.authenticator.authenticate(
        authorization=authorization, gate_key=n8n_gate_key, access="write"
    )


CurrentTenant = Annotated[Tenant, Depends(get_tenant)]
WritingTenant = Annotated[Tenant, Depends(get_writing_tenant)]
