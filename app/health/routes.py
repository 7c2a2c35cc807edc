"""Liveness and readiness; the only endpoints without an API key."""

from __future__ import annotations

from fastapi import APIRouter

from app import db
from app.deps import ServicesDep
from app.errors import DatabaseUnavailable
from app.migrations import schema_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> dict[str, str]:
    async with db.connection(services.pool) as conn:
        state = await schema_state(conn)
    if not state.is_current:
        raise DatabaseUnavailable(
            f"The database schema is at {state.current or 'nothing'}, this build needs "
            f"{state.head}. Run 'n8n-gate migrate'.",
            headers={"Retry-After": "30"},
        )
    return {"status": "ready", "schema": state.head}
