"""Screenshots of the dashboard for docs/screenshots/ (run by scripts/screenshots).

A real gateway in front of a stand-in n8n makes the demo data (orders that went through,
payments whose workflow errors and became dead letters, a CRM sync retrying later, deliveries
waiting in the queue); its times are then spread over the last hours, as a day's traffic
would be. Debian's chromium takes each screen at 1280 px and the main ones at 390 px.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from app import migrations
from app.embedded import start_embedded
from app.main import create_app
from app.tenants.service import create_key
from tests.conftest import empty_database, gate_settings
from tests.support.servers import serve_in_thread
from tests.ui.browser import CHROMIUM, DESKTOP, PHONE, browser

ASYNC = {"Prefer": "respond-async"}


async def _n8n_webhook(request: Request) -> JSONResponse:
    path = request.path_params["path"]
    body = await request.body()
    if path.startswith(("payments", "crm")):
        return JSONResponse({"code": 0, "message": "Error in workflow"}, status_code=500)
    return JSONResponse({"ok": True, "workflow": path, "received_bytes": len(body)})


async def _ready(_: Request) -> PlainTextResponse:
    return PlainTextResponse('{"status":"ok"}')


DEMO_N8N = Starlette(
    routes=[
        Route("/webhook/{path:path}", _n8n_webhook, methods=["POST"]),
        Route("/webhook-test/{path:path}", _n8n_webhook, methods=["POST"]),
        Route("/healthz/readiness", _ready),
        Route("/healthz", _ready),
    ]
)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/screenshots")
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is missing: run scripts/install-chromium", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    with _database() as url, serve_in_thread(DEMO_N8N) as n8n_url:
        key = asyncio.run(_api_key(url))
        _seed(url, n8n_url, key)
        asyncio.run(_spread_times(url))
        settings = gate_settings(url, n8n_url, delivery_workers=0)
        with serve_in_thread(create_app(settings)) as gate_url:
            _shoot(gate_url, key, out)
    for png in sorted(out.glob("*.png")):
        print(png)
    return 0


@contextmanager
def _database() -> Iterator[str]:
    server_url = os.environ.get("DATABASE_URL")
    if server_url:
        with empty_database(server_url) as url:
            migrations.upgrade(url)
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="n8n-gate-shots-") as data_dir:
        server = start_embedded(Path(data_dir), database="n8n_gate_shots")
        try:
            migrations.upgrade(server.url)
            yield server.url
        finally:
            server.stop()


async def _api_key(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return (await create_key(conn, tenant_name="acme-shop")).secret
    finally:
        await conn.close()


def _seed(url: str, n8n_url: str, api_key: str) -> None:
    fast = {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.1, "retry_max_attempts": 3}
    with _gateway(url, n8n_url, api_key, delivery_poll_seconds=0.05, **fast) as gate:
        for n in range(18):
            path = ("orders/created", "invoices/paid", "slack/notify")[n % 3]
            gate.post(f"/webhook/{path}", json=_order(n), headers=_key(f"ord_{4711 + n}"))
        gate.post("/webhook/payments/capture", json=_order(99), headers=_key("pay_sync_0193"))
        gate.post("/webhook-test/orders/created", json=_order(7), headers=_key("test-run-12"))
        for n in range(4):
            headers = {
                **ASYNC,
                **_key(f"pay_3QK{n}x8ZfV2"),
                "Authorization": "Bearer sk_live_51Hx7demo",
                "X-Shop-Domain": "acme.example",
            }
            gate.post("/webhook/payments/capture", json=_payment(n), headers=headers)
        _until(lambda: all(_status(gate, f"pay_3QK{n}x8ZfV2") == "failed" for n in range(4)))
    slow = {"retry_base_seconds": 300, "retry_cap_seconds": 600, "retry_max_attempts": 10}
    with _gateway(url, n8n_url, api_key, delivery_poll_seconds=0.05, **slow) as gate:
        for n in range(3):
            headers = {**ASYNC, **_key(f"crm-{n}")}
            gate.post("/webhook/crm/contact-sync", json={"contact": n}, headers=headers)
        _until(lambda: all(_attempts(gate, f"crm-{n}") == 1 for n in range(3)))
    with _gateway(url, n8n_url, api_key, delivery_workers=0) as gate:
        for n in range(6):
            path = ("orders/created", "invoices/paid")[n % 2]
            gate.post(f"/webhook/{path}", json=_order(50 + n), headers={**ASYNC, **_key(f"q-{n}")})


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def _order(n: int) -> dict[str, object]:
    return {
        "id": 1042 + n,
        "customer": {"email": f"customer{n}@example.com"},
        "total": {"amount": 4200 + 17 * n, "currency": "EUR"},
        "items": [{"sku": "MUG-BLUE", "quantity": 1 + n % 3}],
    }


def _payment(n: int) -> dict[str, object]:
    return {"payment_intent": f"pi_3QK{n}x8ZfV2", "amount": 12900 + n, "currency": "eur"}


@contextmanager
def _gateway(url: str, n8n_url: str, api_key: str, **settings: object) -> Iterator[httpx.Client]:
    app = create_app(gate_settings(url, n8n_url, **settings))
    with serve_in_thread(app) as gate_url:
        auth = {"N8n-Gate-Key": api_key}
        with httpx.Client(base_url=gate_url, headers=auth, timeout=10) as client:
            yield client


def _status(gate: httpx.Client, key: str) -> object:
    return gate.get(f"/v1/executions/{key}").json().get("status")


def _attempts(gate: httpx.Client, key: str) -> object:
    return gate.get(f"/v1/executions/{key}").json().get("attempts")


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError("the demo data did not settle")
        time.sleep(0.05)


async def _spread_times(url: str) -> None:
    """Older executions further back, as if they came over the last hours (the login user
    is the owner; superuser here, so Row Level Security lets it through)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(_SPREAD)
    finally:
        await conn.close()


_SPREAD = """
CREATE TEMP TABLE shift AS
SELECT id, make_interval(secs => (max(id) OVER () - id) * 437 + 40) AS back FROM executions;
UPDATE executions e SET created_at = created_at - s.back, updated_at = updated_at - s.back,
    started_at = started_at - s.back, finished_at = finished_at - s.back
FROM shift s WHERE s.id = e.id;
UPDATE execution_attempts a SET started_at = started_at - s.back, ended_at = ended_at - s.back
FROM shift s WHERE s.id = a.execution_id;
UPDATE delivery_queue q
SET due_at = now() - make_interval(secs => 20 + (m.top - q.execution_id) * 25)
FROM (SELECT max(execution_id) AS top FROM delivery_queue) m
WHERE NOT q.running AND q.due_at <= now();
"""


def _shoot(gate_url: str, api_key: str, out: Path) -> None:
    with browser(DESKTOP) as context:
        page = context.new_page()
        page.goto(f"{gate_url}/ui")
        _save(page, out / "sign-in.png", full=False)
        _sign_in(page, api_key)
        _save(page, out / "executions.png")
        page.goto(f"{gate_url}/ui/executions/pay_3QK1x8ZfV2")
        _save(page, out / "execution.png")
        page.goto(f"{gate_url}/ui/dead-letters")
        _save(page, out / "dead-letters.png")
        page.get_by_label("Select pay_3QK1x8ZfV2").check()
        page.get_by_label("Select pay_3QK2x8ZfV2").check()
        page.get_by_role("button", name="Retry selected…").click()
        _save(page, out / "confirm-retry.png", full=False)
        page.goto(f"{gate_url}/ui/queue")
        _save(page, out / "queue.png")
    with browser(PHONE, scale=2) as context:
        page = context.new_page()
        page.goto(f"{gate_url}/ui")
        _sign_in(page, api_key)
        _save(page, out / "phone-executions.png", full=False)
        page.goto(f"{gate_url}/ui/executions/pay_3QK1x8ZfV2")
        _save(page, out / "phone-execution.png", full=False)


def _sign_in(page: Page, api_key: str) -> None:
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Executions").wait_for()


def _save(page: Page, path: Path, *, full: bool = True) -> None:
    page.screenshot(path=str(path), full_page=full, animations="disabled")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
