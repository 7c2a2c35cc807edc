"""Test fixtures: a real, migrated Postgres, a fake n8n on loopback, and the real app over HTTP.

The database is DATABASE_URL's server when that is set (a fresh database per run is created
on it and dropped afterwards); otherwise a private embedded server from the pip wheel.
Tests are isolated by tenant: each one gets a new tenant and API key, so they never see each
other's executions even though every request really commits.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app import migrations
from app.config import Settings, load_settings
from app.deps import Services
from app.embedded import EmbeddedPostgres, start_embedded
from app.main import create_app
from app.tenants.service import create_key
from tests.support.fake_n8n import FakeN8n
from tests.support.real_n8n import RealN8n
from tests.support.real_n8n import install as real_n8n_install
from tests.support.servers import refusing_port, serve_in_thread


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedPostgres | None]:
    """The private server the suite runs on when DATABASE_URL is not set; else None."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="n8n-gate-test-") as data_dir:
        server = start_embedded(Path(data_dir), database="n8n_gate_test")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def database_url(embedded_server: EmbeddedPostgres | None) -> Iterator[str]:
    if embedded_server is None:
        yield from _fresh_server_database(os.environ["DATABASE_URL"])
    else:
        migrations.upgrade(embedded_server.url)
        yield embedded_server.url


def _fresh_server_database(server_url: str) -> Iterator[str]:
    with empty_database(server_url) as test_url:
        migrations.upgrade(test_url)
        yield test_url


@contextmanager
def empty_database(url: str) -> Iterator[str]:
    """A new, empty database on the same server as `url`; dropped afterwards."""
    name = f"n8n_gate_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(run_as_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        asyncio.run(run_as_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def run_as_admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def fake_n8n() -> Iterator[tuple[FakeN8n, str]]:
    fake = FakeN8n()
    with serve_in_thread(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture
def n8n(fake_n8n: tuple[FakeN8n, str]) -> Iterator[FakeN8n]:
    fake, _ = fake_n8n
    yield fake
    fake.release_slow()  # let any call a test left waiting finish
    fake.hold_slow()


@pytest.fixture
def settings(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> Settings:
    return gate_settings(database_url, fake_n8n[1])


def gate_settings(database_url: str, n8n_base_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "N8N_BASE_URL": n8n_base_url,
        "db_pool_min_size": 1,
        # Fail at once when n8n is not there; the start-up tests set their own wait.
        "n8n_startup_wait_seconds": 0,
        **overrides,
    }
    return load_settings(_env_file=None, **values)


async def new_api_key(database_url: str, tenant_name: str | None = None) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        key = await create_key(conn, tenant_name=tenant_name or f"t-{uuid.uuid4().hex[:16]}")
    finally:
        await conn.close()
    return key.secret


@pytest.fixture
async def api_key(database_url: str) -> str:
    return await new_api_key(database_url)


class GatewayClient(httpx.AsyncClient):
    """An HTTP client for one in-process gateway; `services` lets tests observe its state."""

    services: Services


@asynccontextmanager
async def gateway_client(
    settings: Settings, api_key: str | None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[GatewayClient]:
    """The real app with its lifespan (pool, n8n client), driven over HTTP in-process. With
    `raise_app_exceptions=False` the client gets the 500 a server would send for a bug."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        transport = httpx.ASGITransport(
            app=with_lifespan_state(app, state), raise_app_exceptions=raise_app_exceptions
        )
        async with GatewayClient(
            transport=transport, base_url="http://gate.test", headers=headers
        ) as client:
            client.services = state["services"]
            yield client


def with_lifespan_state(app: ASGIApp, state: Mapping[str, Any] | None) -> ASGIApp:
    """Servers copy the lifespan's state into each request scope; ASGITransport does not."""

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state or {})}, receive, send)

    return with_state


@pytest.fixture
async def client(settings: Settings, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(settings, api_key) as client:
        yield client


class ClientFactory(Protocol):
    def __call__(
        self, *, n8n_base_url: str | None = None, api_key: str | None = ..., **overrides: object
    ) -> AbstractAsyncContextManager[GatewayClient]: ...


@pytest.fixture
def make_client(database_url: str, fake_n8n: tuple[FakeN8n, str], api_key: str) -> ClientFactory:
    """Another gateway (own settings, own pool) for the same tenant, e.g. to change n8n's URL."""
    default_key = api_key

    def factory(
        *, n8n_base_url: str | None = None, api_key: str | None = default_key, **overrides: object
    ) -> AbstractAsyncContextManager[GatewayClient]:
        settings = gate_settings(database_url, n8n_base_url or fake_n8n[1], **overrides)
        return gateway_client(settings, api_key)

    return factory


@pytest.fixture
def unreachable_n8n_url() -> Iterator[str]:
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def real_n8n(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealN8n]:
    """A real n8n (scripts/install-n8n), started once for the session; tests that restart it
    leave it running. Its install failing fails the tests that need it: nothing is skipped."""
    n8n = RealN8n(real_n8n_install(), tmp_path_factory.mktemp("n8n-home"))
    n8n.import_workflows()
    n8n.start()
    try:
        yield n8n
    finally:
        n8n.stop()
