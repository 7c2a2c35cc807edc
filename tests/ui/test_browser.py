"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright) against the
real app in a real server on loopback, with the fake n8n: sign in, filter, open an execution,
retry a dead letter and see it re-queued, a forged form refused, a read-only key that cannot
retry, and pages that fit a phone."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.main import create_app
from app.tenants.service import create_key
from tests.conftest import gate_settings
from tests.support.fake_n8n import FakeN8n
from tests.support.servers import serve_in_thread
from tests.ui.browser import PHONE, browser, require_chromium
from tests.ui.support import ASYNC, RETRY_FAST

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Gateway:
    url: str  # as the browser reaches it: http://localhost:<port>
    writer: str  # API keys of one tenant
    reader: str
    tenant: str


@pytest.fixture(scope="module")
def gateway(database_url: str, fake_n8n: tuple[FakeN8n, str]) -> Iterator[Gateway]:
    require_chromium()
    tenant = f"browser-{uuid.uuid4().hex[:8]}"
    writer, reader = asyncio.run(_keys(database_url, tenant))
    settings = gate_settings(database_url, fake_n8n[1], **RETRY_FAST)
    with serve_in_thread(create_app(settings)) as url:
        yield Gateway(url.replace("127.0.0.1", "localhost"), writer, reader, tenant)


async def _keys(database_url: str, tenant: str) -> tuple[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        writer = await create_key(conn, tenant_name=tenant)
        reader = await create_key(conn, tenant_name=tenant, read_only=True)
    finally:
        await conn.close()
    return writer.secret, reader.secret


def api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.writer}"}, timeout=10
    )


def status_of(gateway: Gateway, key: str) -> dict[str, object]:
    with api(gateway) as client:
        body: dict[str, object] = client.get(f"/v1/executions/{key}").json()
    return body


def dead_letter(gateway: Gateway, key: str, path: str = "fail") -> None:
    with api(gateway) as client:
        accepted = client.post(
            f"/webhook/{path}", json={"key": key}, headers={**ASYNC, "Idempotency-Key": key}
        )
        assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 10
    while status_of(gateway, key).get("status") != "failed":
        assert time.monotonic() < deadline, f"{key} never became a dead letter"
        time.sleep(0.05)


def sign_in(page: Page, gateway: Gateway, api_key: str) -> None:
    page.goto(f"{gateway.url}/ui")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    expect(page.locator(".who .tenant")).to_have_text(gateway.tenant)


def test_sign_in_filter_open_an_execution_and_retry_a_dead_letter(
    gateway: Gateway, n8n: FakeN8n
) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"{run}-order/7"  # a '/' in the key: its page's path is URL-encoded
    n8n.failures_left[key] = 1  # n8n fails it once (a dead letter), then takes it
    dead_letter(gateway, key, path="flaky")
    with api(gateway) as client:
        client.post("/webhook/echo", json={}, headers={"Idempotency-Key": f"{run}-done"})

    with browser() as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.writer)

        page.get_by_label("Key starts with").fill(run)
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("table.list tbody tr")
        expect(rows).to_have_count(2)
        page.get_by_role("link", name=re.compile(r"^Failed")).click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(key)
        expect(page.locator('[data-count="completed"]')).to_have_text("1")

        page.get_by_role("link", name=key).click()
        assert f"/ui/executions/{run}-order%2F7" in page.url
        expect(page.locator("h1")).to_have_text(key)
        expect(page.locator(".timeline .step")).to_have_count(1)
        expect(page.locator(".alert-error")).to_contain_text("n8n-error")

        page.get_by_role("button", name="Retry…").click()
        expect(page.get_by_role("heading", name="Retry 1 execution?")).to_be_visible()
        assert status_of(gateway, key)["status"] == "failed"  # nothing happens before confirming
        page.get_by_role("button", name="Retry", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(
            "1 execution is back in the delivery queue"
        )
        expect(page.locator("table.list")).to_contain_text("re-queued")

        page.get_by_role("link", name=key).click()
        deadline = time.monotonic() + 10
        while page.locator(".timeline .step").count() < 2:
            assert time.monotonic() < deadline, "the retry never ran"
            page.wait_for_timeout(100)
            page.reload()
        expect(page.locator(".timeline .step").nth(1)).to_contain_text("Attempt 2")
    assert status_of(gateway, key)["attempts"] == 2


def test_dead_letters_selected_on_their_page_are_retried_after_a_confirmation(
    gateway: Gateway,
) -> None:
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}-{n}" for n in range(2)]
    for key in keys:
        dead_letter(gateway, key)
    with browser() as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.writer)
        page.get_by_role("link", name="Dead letters").click()
        for key in keys:
            page.get_by_label(f"Select {key}").check()
        page.get_by_role("button", name="Retry selected…").click()
        expect(page.get_by_role("heading", name="Retry 2 executions?")).to_be_visible()
        page.get_by_role("button", name="Retry", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("2 executions are back")
    for key in keys:
        deadline = time.monotonic() + 10
        while status_of(gateway, key)["attempts"] != 2:  # delivered again: "fail" fails again
            assert time.monotonic() < deadline, f"{key} was not retried"
            time.sleep(0.05)


def test_a_form_posted_from_another_site_is_refused(gateway: Gateway) -> None:
    key = f"csrf-{uuid.uuid4().hex[:8]}"
    dead_letter(gateway, key)
    forged = Starlette(routes=[Route("/", lambda _: HTMLResponse(_forged_form(gateway, key)))])
    with serve_in_thread(forged) as evil_url, browser() as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.writer)
        page.goto(evil_url)  # 127.0.0.1: another site than localhost
        page.get_by_role("button", name="Win a prize").click()
        expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
        assert page.url.startswith(f"{gateway.url}/ui/dead-letters/retry")

        # A form of an earlier session is refused as well: its token was that session's.
        page.goto(f"{gateway.url}/ui/dead-letters")
        stale = page.locator("input[name=form_token]").first.get_attribute("value")
        page.get_by_role("button", name="Sign out").click()
        sign_in(page, gateway, gateway.writer)
        page.evaluate(_SUBMIT, {"action": "/ui/dead-letters/retry", "token": stale, "key": key})
        expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    assert status_of(gateway, key)["status"] == "failed"


def test_a_link_from_another_site_opens_the_page_signed_in(gateway: Gateway) -> None:
    """An alert's link, clicked in another site (Slack, mail): the SameSite=Strict cookie is
    not sent with it, and the dashboard reloads the page from its own site, which sends it."""
    key = f"linked-{uuid.uuid4().hex[:8]}"
    dead_letter(gateway, key)
    link = f'<a href="{gateway.url}/ui/executions/{key}">the dead letter</a>'
    elsewhere = Starlette(routes=[Route("/", lambda _: HTMLResponse(link))])
    with serve_in_thread(elsewhere) as other_site, browser() as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.writer)
        page.goto(other_site)  # 127.0.0.1: another site than localhost
        page.get_by_role("link", name="the dead letter").click()
        expect(page.get_by_role("heading", name=key)).to_be_visible()
        assert page.url == f"{gateway.url}/ui/executions/{key}"


def _forged_form(gateway: Gateway, key: str) -> str:
    return (
        f'<form method="post" action="{gateway.url}/ui/dead-letters/retry">'
        f'<input type="hidden" name="key" value="{key}">'
        '<input type="hidden" name="form_token" value="guessed">'
        "<button>Win a prize</button></form>"
    )


# Builds and sends a form the way a script on the page could.
_SUBMIT = """({action, token, key}) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = action;
    for (const [name, value] of [["form_token", token], ["key", key]]) {
        const input = document.createElement("input");
        input.type = "hidden"; input.name = name; input.value = value;
        form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
}"""


def test_a_read_only_key_sees_dead_letters_but_cannot_retry(gateway: Gateway) -> None:
    key = f"ro-{uuid.uuid4().hex[:8]}"
    dead_letter(gateway, key)
    with browser() as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.reader)
        expect(page.locator(".badge")).to_have_text("read-only")
        page.get_by_role("link", name="Dead letters").click()
        expect(page.locator("table.list")).to_contain_text(key)
        expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
        expect(page.locator('input[name="key"]')).to_have_count(0)
        page.get_by_role("link", name=key).click()
        expect(page.locator("h1")).to_have_text(key)
        expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)

        token = page.locator("input[name=form_token]").first.get_attribute("value")
        page.evaluate(_SUBMIT, {"action": "/ui/dead-letters/retry", "token": token, "key": key})
        expect(page.get_by_role("heading", name="This API key may only read")).to_be_visible()
    assert status_of(gateway, key)["status"] == "failed"


def test_every_page_fits_a_phone(gateway: Gateway) -> None:
    key = f"phone-{uuid.uuid4().hex[:8]}-with-a-rather-long-idempotency-key-that-must-wrap"
    dead_letter(gateway, key)
    with browser(PHONE) as context:
        page = context.new_page()
        sign_in(page, gateway, gateway.writer)
        for path in ("/ui/", "/ui/dead-letters", "/ui/queue", f"/ui/executions/{key}"):
            page.goto(f"{gateway.url}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} is {width}px wide"
