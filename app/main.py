"""Builds the app. The lifespan owns every long-lived resource: the pool, the n8n client, the
LISTEN connection and the reaper."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from app import db, metrics, tracing
from app.alerts.sender import AlertSender
from app.config import Settings, get_settings
from app.delivery.workers import DeliveryWorkers
from app.deps import Services
from app.executions.background import BackgroundWork
from app.executions.batches import ExecutionWrites
from app.executions.notifications import DatabaseNotifications
from app.executions.replay_cache import ReplayCache
from app.executions.retention import Reaper
from app.executions.routes import router as executions_router
from app.executions.runner import Runner
from app.executions.service import ExecutionService
from app.executions.trigger_endpoints import TriggerEndpoints, documentation_router
from app.forwarding.client import N8nClient
from app.health.routes import router as health_router
from app.ingress.endpoints import IngressEndpoints
from app.ingress.endpoints import documentation_router as ingress_documentation
from app.ingress.routes_file import load_routes
from app.ingress.service import Ingress, ServedRoute, serve_routes
from app.memory import ByteBudget
from app.migrations import schema_state
from app.problems import install_handlers
from app.request_ids import RequestIds
from app.tenants.rate_limit import RateLimiter
from app.tenants.service import Authenticator
from app.tenants.signing import CACHE_SECONDS as signing_cache_seconds
from app.tenants.signing import SigningSecrets
from app.ui.routes import mount_ui

logger = logging.getLogger(__name__)


class State(TypedDict):
    services: Services


class SchemaNotCurrent(RuntimeError):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics.label_workflows(settings.metrics_workflow_paths)
    if tracing.requested():  # OTEL_EXPORTER_OTLP_ENDPOINT; each worker process starts its own
        tracing.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        if settings.database_url is None:
            raise SchemaNotCurrent(
                "DATABASE_URL is not set; start the gateway with 'n8n-gate serve'."
            )
        routes = load_routes(settings.routes_file) if settings.routes_file else None
        pool = await db.create_pool(str(settings.database_url), settings)
        budget = ByteBudget(limit=settings.max_bytes_in_flight)
        delivery_due = asyncio.Event()  # set when this process's workers should look for work
        try:
            await _require_current_schema(pool)
            served_routes = await serve_routes(pool, routes) if routes else None
            async with (
                N8nClient(
                    base_url=str(settings.n8n_base_url),
                    connect_timeout=settings.n8n_connect_timeout_seconds,
                    timeout=settings.n8n_timeout_seconds,
                    max_connections=settings.n8n_max_connections,
                    max_answer_bytes=settings.n8n_max_answer_bytes,
                    startup_wait_seconds=settings.n8n_startup_wait_seconds,
                    budget=budget,
                    reuse_connections=settings.n8n_reuse_connections,
                ) as n8n,
                DatabaseNotifications(
                    str(settings.database_url),
                    connect_timeout=settings.db_connect_timeout_seconds,
                    on_delivery_due=delivery_due.set,
                ) as notifications,
                Reaper(
                    pool,
                    interval_seconds=settings.reaper_interval_seconds,
                    batch_size=settings.reaper_batch_size,
                    failed_keep_seconds=settings.failed_key_retention_seconds,
                ) as reaper,
                AlertSender(
                    pool,
                    signing=SigningSecrets(pool, cache_seconds=signing_cache_seconds),
                    settings=settings,
                ) as alerts,
            ):
                executions = _execution_service(
                    pool, n8n, notifications, settings, on_delivery_due=delivery_due.set
                )
                workers = DeliveryWorkers(
                    executions,
                    due=delivery_due,
                    readiness=n8n.readiness,
                    count=settings.delivery_workers,
                    poll_seconds=settings.delivery_poll_seconds,
                    grace_seconds=settings.n8n_timeout_seconds,
                    alerts=alerts,
                )
                authenticator = Authenticator(pool, cache_seconds=settings.auth_cache_seconds)
                ingress = _ingress(served_routes, executions, settings)
                rate_limiter = RateLimiter(
                    pool,
                    per_second=settings.rate_limit_per_second,
                    burst=settings.rate_limit_burst,
                )
                services = Services(
                    settings, pool, authenticator, executions, reaper, budget, rate_limiter, ingress
                )
                async with workers:
                    _freeze_startup_objects()
                    yield {"services": services}
                await executions.drain(grace_seconds=settings.n8n_timeout_seconds)
        finally:
            await pool.close()
            await tracing.shutdown()  # flushes this process's spans

    app = FastAPI(
        title="n8n-gate",
        summary="Exactly-once triggers for n8n webhooks.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN: off unless asked for.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    # No redirect to a path with a slash added: a trigger's caller would follow it with its
    # method and body lost or resent, and the redirect would echo the request's Host.
    app.router.redirect_slashes = False
    install_handlers(app)
    app.add_middleware(IngressEndpoints)  # serves /in/<route> before any route
    app.add_middleware(TriggerEndpoints)  # serves the trigger paths before any route
    app.add_middleware(RequestIds)  # outermost: every answer, and every log line, has its id
    app.include_router(health_router)
    app.include_router(executions_router)
    if settings.ui:
        mount_ui(app)  # the dashboard at /ui: HTML pages, its own error pages
    # Last, so that every other route is matched first: they only document the paths that
    # the middlewares above serve.
    app.include_router(ingress_documentation)
    app.include_router(documentation_router)
    tracing.instrument(app)  # with traces on, a server span around all of the above
    return app


def _execution_service(
    pool: db.Pool,
    n8n: N8nClient,
    notifications: DatabaseNotifications,
    settings: Settings,
    *,
    on_delivery_due: Callable[[], None],
) -> ExecutionService:
    writes = ExecutionWrites(pool, settings)
    background = BackgroundWork()
    signing = SigningSecrets(pool, cache_seconds=signing_cache_seconds)
    runner = Runner(
        pool=pool,
        n8n=n8n,
        writes=writes,
        background=background,
        signing=signing,
        settings=settings,
    )
    return ExecutionService(
        pool=pool,
        writes=writes,
        runner=runner,
        background=background,
        replay_cache=ReplayCache(
            max_bytes=settings.replay_cache_bytes, ttl_seconds=settings.replay_cache_seconds
        ),
        notifications=notifications,
        signing=signing,
        on_delivery_due=on_delivery_due,
        settings=settings,
    )


def _ingress(
    routes: dict[str, ServedRoute] | None, executions: ExecutionService, settings: Settings
) -> Ingress | None:
    if routes is None:
        return None
    return Ingress(
        routes=routes,
        executions=executions,
        tolerance_seconds=settings.signature_tolerance_seconds,
        max_wait_seconds=settings.max_wait_seconds,
    )


def _freeze_startup_objects() -> None:
    """Moves everything alive after startup (modules, the app, pools) out of the garbage
    collector's reach: a full collection walked all of it and stalled every request of the
    process meanwhile (docs/benchmarks.md has the figures).
    """
    gc.collect()
    gc.freeze()


async def _require_current_schema(pool: db.Pool) -> None:
    async with db.connection(pool) as conn:
        state = await schema_state(conn)
    if not state.is_current:
        raise SchemaNotCurrent(
            f"database schema is at {state.current or 'nothing'}, this build needs {state.head}: "
            "run 'n8n-gate migrate'"
        )
