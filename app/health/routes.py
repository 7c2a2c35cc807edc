"""Liveness, readiness and metrics: the only endpoints without an API key (/metrics has a
token of its own, GATE_METRICS_TOKEN)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import db, metrics
from app.delivery.queue import scrape_facts
from app.deps import ServicesDep
from app.errors import DatabaseUnavailable, NotFound, Unauthorized
from app.migrations import schema_state
from app.problems import documented

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


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        **documented(Unauthorized, NotFound),
    },
)
async def metrics_exposition(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Every metric of every worker, for a scraper with `Authorization: Bearer
    <GATE_METRICS_TOKEN>`. The queue's depth and age are read from the database, on a
    connection of the scrape's own."""
    token = services.settings.metrics_token
    if token is None:
        raise NotFound("Metrics are off: set GATE_METRICS_TOKEN to serve /metrics.")
    if not _is_bearer(authorization, token):
        raise Unauthorized(
            "/metrics needs 'Authorization: Bearer <GATE_METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    facts = await scrape_facts(str(services.settings.database_url))
    # Reading every worker's files takes milliseconds to seconds: not on the event loop that
    # serves this worker's triggers.
    body, content_type = await asyncio.to_thread(metrics.exposition, facts, accept=accept)
    return Response(body, headers={"Content-Type": content_type})


def _is_bearer(authorization: str | None, token: str) -> bool:
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )
