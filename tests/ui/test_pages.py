"""The dashboard's pages over HTTP against the real app: what they show, what they hide, and
what they let a key do."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import app.ui.routes
from app.config import Settings
from tests.conftest import ClientFactory, GatewayClient, gateway_client, new_api_key
from tests.support.dbproxy import DatabaseProxy
from tests.support.dead_processes import died_mid_delivery
from tests.support.executions_api import until_status
from tests.support.fake_n8n import BINARY_BODY, FakeN8n
from tests.support.problems import assert_problem
from tests.ui.support import ASYNC, RETRY_FAST, dead_letter, field, sign_in, text_of


@pytest.fixture
async def gateway(make_client: ClientFactory) -> AsyncIterator[GatewayClient]:
    """A gateway whose async deliveries fail fast into dead letters; its client sends the API
    key (for triggers) and, once signed in, the dashboard's cookie."""
    async with make_client(**RETRY_FAST) as client:
        yield client


def keys_listed(page: str) -> list[str]:
    """The idempotency keys of a page's list rows, top to bottom."""
    found = re.findall(
        r'<td data-label="Key" class="key"><a class="mono" href="[^"]*">([^<]*)</a>', page
    )
    return [html.unescape(key) for key in found]


async def trigger(
    client: httpx.AsyncClient, key: str, path: str = "echo", *, mode: str = "webhook"
) -> None:
    answer = await client.post(
        f"/{mode}/{path}", json={"key": key}, headers={"Idempotency-Key": key}
    )
    assert answer.status_code in (200, 500), answer.text


async def test_the_list_filters_by_status_workflow_mode_time_and_key_prefix(
    gateway: GatewayClient, api_key: str
) -> None:
    run = uuid.uuid4().hex[:8]
    done, failed = f"{run}-done", f"{run}-failed"
    test_mode, literal = f"{run}-test", f"{run}-50%_off"
    await trigger(gateway, done)
    await trigger(gateway, failed, "fail")
    await trigger(gateway, test_mode, mode="webhook-test")
    await trigger(gateway, literal)
    await trigger(gateway, f"{run}-50Xyoff")  # what LIKE's wildcards would match unescaped
    await sign_in(gateway, api_key)
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")

    async def listed(**params: str) -> list[str]:
        page = await gateway.get("/ui/", params=params)
        assert page.status_code == 200, page.text
        return keys_listed(page.text)

    assert set(await listed()) == {done, failed, test_mode, literal, f"{run}-50Xyoff"}
    assert await listed(status="failed") == [failed]
    assert await listed(workflow="fail") == [failed]
    assert await listed(mode="webhook-test") == [test_mode]
    assert await listed(key=f"{run}-50%_") == [literal]
    assert await listed(key=f"{run}-d") == [done]
    assert await listed(**{"from": later}) == []
    assert len(await listed(to=later)) == 5
    counts = await gateway.get("/ui/counts", params={"key": run})
    assert counts.json()["counts"] == {
        "pending": "0",
        "running": "0",
        "completed": "4",
        "failed": "1",
    }
    page = await gateway.get("/ui/", params={"key": run, "status": "failed"})
    tab = re.search(r'data-count="completed">([^<]*)<', page.text)
    assert tab is not None
    assert tab.group(1) == "4"  # the tabs count the other statuses under the same filters


async def test_the_api_list_takes_the_same_filters(gateway: GatewayClient) -> None:
    run = uuid.uuid4().hex[:8]
    await trigger(gateway, f"{run}-a_b")
    await trigger(gateway, f"{run}-axb", mode="webhook-test")
    by_prefix = await gateway.get("/v1/executions", params={"key_prefix": f"{run}-a_"})
    by_mode = await gateway.get("/v1/executions", params={"mode": "webhook-test"})
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    after = await gateway.get("/v1/executions", params={"created_after": later})
    naive = await gateway.get("/v1/executions", params={"created_after": "2026-01-01T00:00:00"})
    assert [item["key"] for item in by_prefix.json()["items"]] == [f"{run}-a_b"]
    assert f"{run}-axb" in [item["key"] for item in by_mode.json()["items"]]
    assert after.json()["items"] == []
    assert "time zone" in assert_problem(naive, 400, "invalid-request")["detail"]


async def test_pages_of_the_list_go_older_and_back_newer(
    gateway: GatewayClient, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.ui.routes, "PAGE_SIZE", 3)
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}-{n}" for n in range(7)]
    for key in keys:
        await trigger(gateway, key)
    await sign_in(gateway, api_key)
    newest_first = keys[::-1]

    first = await gateway.get("/ui/", params={"key": run})
    second = await gateway.get("/ui/" + _link(first.text, "next"))
    third = await gateway.get("/ui/" + _link(second.text, "next"))
    back = await gateway.get("/ui/" + _link(third.text, "prev"))
    assert keys_listed(first.text) == newest_first[0:3]
    assert keys_listed(second.text) == newest_first[3:6]
    assert keys_listed(third.text) == newest_first[6:]
    assert 'rel="next"' not in third.text
    assert keys_listed(back.text) == newest_first[3:6]
    assert 'rel="prev"' not in first.text
    forged = await gateway.get("/ui/", params={"key": run, "before": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 400
    assert "not one this dashboard made" in forged.text
    assert keys_listed(forged.text) == newest_first[0:3]


def _link(page: str, rel: str) -> str:
    match = re.search(rf'href="/ui/(\?[^"]*)" rel="{rel}"', page)
    assert match, f"no {rel} link"
    return html.unescape(match.group(1))


async def test_an_execution_shows_its_request_with_secrets_redacted_and_its_bodies(
    gateway: GatewayClient, api_key: str, n8n: FakeN8n
) -> None:
    key = f"redact/{uuid.uuid4()}"
    secrets_sent = {
        "Authorization": "Basic s3cr3t-basic",
        "Cookie": "sid=s3cr3t-cookie",
        "X-Api-Key": "s3cr3t-api-key",
        "Stripe-Signature": "t=1,v1=s3cr3t-signature",
        "X-Custom-Token": "s3cr3t-token",
        "X-Forward-Note": "Bearer s3cr3t-bearer",
    }
    accepted = await gateway.post(
        # n8n answers "Workflow was started": its answer echoes nothing of the request.
        "/webhook/started?page=2&access_token=s3cr3t-query",
        json={"order": {"id": 42, "items": ["a", "b"]}},
        headers={
            **ASYNC,
            "Idempotency-Key": key,
            "N8n-Gate-Key": api_key,
            "X-Shop": "visible-value",
            **secrets_sent,
        },
    )
    assert accepted.status_code == 202, accepted.text
    await until_status(gateway, key, "completed")
    await sign_in(gateway, api_key)
    page = await gateway.get(f"/ui/executions/{key.replace('/', '%2F')}")
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "s3cr3t" not in page.text
    assert api_key not in page.text
    assert "visible-value" in shown
    assert "page=2" in shown
    assert shown.count("[redacted]") >= len(secrets_sent) + 1
    assert '"items": [\n' in html.unescape(page.text)  # pretty-printed JSON
    assert "Attempt 1" in shown


async def test_a_binary_answer_is_its_size_and_a_download(
    gateway: GatewayClient, api_key: str
) -> None:
    key = f"binary-{uuid.uuid4()}"
    await trigger(gateway, key, "binary")
    await sign_in(gateway, api_key)
    page = await gateway.get(f"/ui/executions/{key}")
    download = await gateway.get(f"/ui/bodies/response/{key}")
    assert f"{len(BINARY_BODY):,} bytes" in page.text
    assert "binary" in page.text
    assert download.content == BINARY_BODY
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")


async def test_what_a_page_shows_from_outside_is_escaped(
    gateway: GatewayClient, api_key: str
) -> None:
    key = f"<script>alert('{uuid.uuid4().hex[:6]}')</script>"
    answer = await gateway.post(
        "/webhook/echo",
        json={"html": "<img src=x onerror=alert(1)>"},
        headers={**ASYNC, "Idempotency-Key": key},
    )
    assert answer.status_code == 202
    await until_status(gateway, key, "completed")
    await sign_in(gateway, api_key)
    listed = await gateway.get("/ui/", params={"key": "<script>"})
    detail = await gateway.get(f"/ui/executions/{httpx.URL(key).raw_path.decode()}")
    searched = await gateway.get("/ui/", params={"key": '"><svg onload=alert(2)>'})
    missing = await gateway.get("/ui/executions/<b>bold</b>")
    for page in (listed, detail, searched, missing):
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "<svg onload" not in page.text
        assert "<b>bold" not in page.text
    assert key in keys_listed(listed.text)
    assert "&lt;script&gt;" in detail.text
    assert missing.status_code == 404


async def test_another_tenants_session_sees_nothing_of_this_tenant(
    gateway: GatewayClient, api_key: str, database_url: str, settings: Settings
) -> None:
    key = f"mine-{uuid.uuid4()}"
    await dead_letter(gateway, key)
    other_key = await new_api_key(database_url)
    async with gateway_client(settings, None) as other:
        token = await sign_in(other, other_key)
        listed = await other.get("/ui/", params={"key": key})
        dead = await other.get("/ui/dead-letters")
        detail = await other.get(f"/ui/executions/{key}")
        download = await other.get(f"/ui/bodies/request/{key}")
        retried = await other.post("/ui/dead-letters/retry", data={"form_token": token, "key": key})
    assert keys_listed(listed.text) == []
    assert key not in dead.text
    assert detail.status_code == 404
    assert download.status_code == 404
    assert "Not retried" in retried.text
    assert (await gateway.get(f"/v1/executions/{key}")).json()["status"] == "failed"


async def test_a_read_only_key_sees_dead_letters_but_cannot_retry_them(
    gateway: GatewayClient, database_url: str, settings: Settings
) -> None:
    import asyncpg

    from app.tenants.service import create_key

    conn = await asyncpg.connect(database_url)
    try:
        tenant = f"ro-{uuid.uuid4().hex[:8]}"
        writer = await create_key(conn, tenant_name=tenant)
        reader = await create_key(conn, tenant_name=tenant, read_only=True)
    finally:
        await conn.close()
    key = f"dead-{uuid.uuid4()}"
    async with gateway_client(gateway.services.settings, writer.secret) as client:
        await dead_letter(client, key)
    async with gateway_client(settings, None) as client:
        token = await sign_in(client, reader.secret)
        dead = await client.get("/ui/dead-letters")
        detail = await client.get(f"/ui/executions/{key}")
        confirm = await client.post(
            "/ui/dead-letters/confirm", data={"form_token": token, "key": key}
        )
        retried = await client.post(
            "/ui/dead-letters/retry", data={"form_token": token, "key": key}
        )
    assert key in dead.text
    assert "read-only" in dead.text
    assert "Retry" not in text_of(dead.text).replace("Retrying", "")
    assert 'name="key"' not in dead.text
    assert "dead-letters/confirm" not in detail.text
    for refused in (confirm, retried):
        assert refused.status_code == 403
        assert "read-only" in refused.text
    async with gateway_client(settings, writer.secret) as client:
        assert (await client.get(f"/v1/executions/{key}")).json()["status"] == "failed"


async def test_dead_letters_are_retried_one_by_one_or_all_matching_after_a_confirmation(
    gateway: GatewayClient, api_key: str, n8n: FakeN8n
) -> None:
    run = uuid.uuid4().hex[:8]
    chosen = f"{run}-chosen"
    n8n.failures_left[chosen] = 1  # fails once, then n8n takes it
    await dead_letter(gateway, chosen, path="flaky")
    bulk = [f"{run}-bulk-{n}" for n in range(3)]
    for key in bulk:
        await dead_letter(gateway, key, path="fail")
    token = await sign_in(gateway, api_key)
    listed = await gateway.get("/ui/dead-letters", params={"workflow": "fail"})
    assert set(bulk) <= set(keys_listed(listed.text))
    assert chosen not in keys_listed(listed.text)

    confirm = await gateway.post(
        "/ui/dead-letters/confirm", data={"form_token": token, "key": chosen}
    )
    assert "Retry 1 execution?" in confirm.text
    assert (await gateway.get(f"/v1/executions/{chosen}")).json()["status"] == "failed"
    retried = await gateway.post(
        "/ui/dead-letters/retry",
        data={"form_token": field(confirm.text, "form_token"), "key": chosen},
    )
    assert retried.status_code == 200
    assert "back in the delivery queue" in retried.text
    assert "re-queued" in retried.text
    assert (await until_status(gateway, chosen, "completed"))["attempts"] == 2

    confirm_all = await gateway.post(
        "/ui/dead-letters/confirm",
        data={"form_token": token, "workflow": "fail", "since": "", "scope": "matching"},
    )
    assert "Retry all matching dead letters?" in confirm_all.text
    assert re.search(r"<strong>\d+</strong> dead letters? of workflow", confirm_all.text)
    late = f"{run}-late"  # a dead letter that arrives after the confirmation counted them
    await dead_letter(gateway, late, path="fail")
    all_retried = await gateway.post(
        "/ui/dead-letters/retry",
        data={
            "form_token": token,
            "workflow": "fail",
            "since": "",
            "until": field(confirm_all.text, "until"),
        },
    )
    unconfirmed = await gateway.post(
        "/ui/dead-letters/retry", data={"form_token": token, "workflow": "fail", "since": ""}
    )
    assert all_retried.status_code == 200
    for key in bulk:
        assert key in all_retried.text
        status = (await gateway.get(f"/v1/executions/{key}")).json()
        assert status["attempts"] >= 2 or status["status"] in ("pending", "running")
    assert late not in all_retried.text
    late_status = (await gateway.get(f"/v1/executions/{late}")).json()
    assert (late_status["status"], late_status["attempts"]) == ("failed", 1)
    assert unconfirmed.status_code == 400
    assert "confirmation page" in unconfirmed.text


async def test_the_queue_shows_depth_and_the_oldest_due_item_per_webhook(
    make_client: ClientFactory, api_key: str
) -> None:
    run = uuid.uuid4().hex[:8]
    async with make_client(delivery_workers=0) as client:  # nothing delivers: all stay queued
        for n in range(3):
            key = f"{run}-{n}"
            accepted = await client.post(
                "/webhook/echo", json={}, headers={**ASYNC, "Idempotency-Key": key}
            )
            assert accepted.status_code == 202
        await client.post(
            "/webhook/started", json={}, headers={**ASYNC, "Idempotency-Key": f"{run}-other"}
        )
        await sign_in(client, api_key)
        page = await client.get("/ui/queue")
    rows = [text_of(row).split() for row in re.findall(r"<tr>(.*?)</tr>", page.text, re.S)]
    shown = text_of(page.text)
    assert re.search(r"\b4\s+in the queue", shown)
    assert re.search(r"\b4\s+due now", shown)
    echo = next(row for row in rows if row[0] == "echo")
    assert echo[1:4] == ["3", "0", "0"]  # due now, retry later, delivering
    assert echo[-1] == "now"  # next due
    assert f"{run}-0" in shown  # the oldest due item of the echo webhook


async def test_ui_errors_are_pages_with_their_status_and_the_api_keeps_problems(
    gateway: GatewayClient, api_key: str
) -> None:
    await sign_in(gateway, api_key)
    missing_page = await gateway.get("/ui/no-such-page")
    missing_execution = await gateway.get("/ui/executions/never-seen")
    wrong_method = await gateway.delete("/ui/queue")
    not_a_form = await gateway.post(
        "/ui/sign-out", content=b"{}", headers={"Content-Type": "application/json"}
    )
    for page, status in (
        (missing_page, 404),
        (missing_execution, 404),
        (wrong_method, 405),
        (not_a_form, 400),
    ):
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert "<html" in page.text
    assert "never-seen" in text_of(missing_execution.text)
    assert_problem(await gateway.get("/no-such-page"), 404, "not-found")
    static = await gateway.get("/ui/static/ui.css")
    assert static.status_code == 200
    assert static.headers["content-type"].startswith("text/css")


async def test_without_its_database_the_dashboard_answers_a_503_page(
    make_client: ClientFactory, database_url: str, api_key: str
) -> None:
    async with (
        DatabaseProxy(database_url).running() as proxy,
        make_client(DATABASE_URL=proxy.url) as client,
    ):
        await sign_in(client, api_key)
        proxy.cut()
        down = await client.get("/ui/")
        client.cookies.clear()
        signed_out = await client.get("/ui/")
        proxy.restore()
    assert down.status_code == 503
    assert down.headers["content-type"].startswith("text/html")
    assert down.headers["retry-after"] == "5"
    assert "cannot reach its database" in down.text
    assert signed_out.status_code == 200  # the sign-in page needs no database


async def test_the_dashboard_works_under_a_root_path(settings: Settings, api_key: str) -> None:
    async with gateway_client(settings, None) as client:
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        transport.root_path = "/gate"
        page = await client.get("/gate/ui")
        assert 'href="/gate/ui/static/ui.css' in page.text
        assert "Path=/gate/ui" in page.headers["set-cookie"]
        token = await sign_in(client, api_key, base="/gate/ui")
        home = await client.get("/gate/ui/")
        css = await client.get("/gate/ui/static/ui.css")
    assert token
    assert 'href="/gate/ui/dead-letters"' in home.text
    assert css.status_code == 200


async def test_the_dashboard_can_be_turned_off(make_client: ClientFactory) -> None:
    async with make_client(ui=False) as client:
        assert_problem(await client.get("/ui"), 404, "not-found")
        assert_problem(await client.get("/ui/"), 404, "not-found")


async def test_a_bug_behind_a_page_is_a_500_page_and_logged(
    gateway: GatewayClient,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(**_: object) -> None:
        raise RuntimeError("a bug")

    await sign_in(gateway, api_key)
    monkeypatch.setattr(gateway.services.executions, "queue_summary", broken)
    page = await gateway.get("/ui/queue")
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "Internal error" in page.text
    assert "a bug" not in page.text
    assert [r for r in caplog.records if r.name == "app.ui.routes" and r.exc_info]
    assert not [r for r in caplog.records if r.name == "app.problems"]  # logged once


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("key_prefix", "\x00"),
        ("workflow", "\x00"),
        ("created_after", "0001-01-01T00:00:00+14:00"),
        ("created_after", "9999-12-31T23:59:59-14:00"),
        ("created_before", "0001-01-01T00:00:00+14:00"),
    ],
)
async def test_the_api_list_refuses_what_the_database_cannot_hold(
    gateway: GatewayClient, name: str, value: str
) -> None:
    answer = await gateway.get("/v1/executions", params={name: value})
    assert name in assert_problem(answer, 400, "invalid-request")["detail"]


async def test_a_key_no_trigger_could_send_is_not_found_anywhere(
    gateway: GatewayClient, api_key: str
) -> None:
    assert_problem(await gateway.get("/v1/executions/%00"), 404, "execution-not-found")
    assert_problem(await gateway.post("/v1/executions/%00/retry"), 404, "execution-not-found")
    assert_problem(await gateway.get(f"/v1/executions/{'k' * 256}"), 404, "execution-not-found")
    token = await sign_in(gateway, api_key)
    filtered = [
        await gateway.get("/ui/", params={"key": "\x00"}),
        await gateway.get("/ui/", params={"workflow": "a\x00b"}),
        await gateway.get("/ui/dead-letters", params={"workflow": "\x00"}),
        await gateway.get("/ui/counts", params={"key": "\x00"}),
    ]
    for page in filtered[:3]:
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        assert "printable characters" in page.text
    assert filtered[3].status_code == 200
    for path in ("/ui/executions/%00", "/ui/bodies/request/%00", "/ui/bodies/response/%00"):
        missing = await gateway.get(path)
        assert missing.status_code == 404, path
        assert "printable ASCII" in missing.text
    retried = await gateway.post(
        "/ui/dead-letters/retry", data={"form_token": token, "key": "bad\x00key"}
    )
    assert retried.status_code == 200
    assert "Not retried" in retried.text


async def test_a_page_whose_query_runs_too_long_says_to_narrow_the_filters(
    gateway: GatewayClient, api_key: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each statement of a page may run STATEMENT_TIMEOUT_MS: one held up (here by a lock, as
    it would be by reading every row of a large tenant) is stopped, and the page says why."""
    import asyncio

    import asyncpg

    monkeypatch.setattr(app.ui.routes, "STATEMENT_TIMEOUT_MS", 200)
    await trigger(gateway, f"slow-{uuid.uuid4().hex[:8]}")
    await sign_in(gateway, api_key)
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
            pages = [
                await asyncio.wait_for(gateway.get(path), 5)
                for path in ("/ui/", "/ui/dead-letters", "/ui/executions/any", "/ui/queue")
            ]
    finally:
        await blocker.close()
    for page in pages:
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "Narrow the filters" in page.text
    assert (await gateway.get("/ui/")).status_code == 200


async def test_a_dead_letter_that_may_have_run_is_marked_before_a_retry(
    make_client: ClientFactory, database_url: str, n8n: FakeN8n
) -> None:
    """Its process died mid-delivery and GATE_UNKNOWN_OUTCOME=refuse ended it: n8n may have run
    it, so the list says so, where a bulk retry is chosen."""
    tenant = f"unknown-{uuid.uuid4().hex[:8]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    maybe_ran, failed = f"maybe-{uuid.uuid4()}", f"failed-{uuid.uuid4()}"
    async with make_client(api_key=api_key, delivery_workers=0) as accepting:
        headers = {**ASYNC, "Idempotency-Key": maybe_ran}
        await accepting.post("/webhook/echo", json={}, headers=headers)
    await died_mid_delivery(database_url, tenant, maybe_ran)
    settings = {**RETRY_FAST, "unknown_outcome": "refuse"}
    async with make_client(api_key=api_key, **settings) as client:
        await until_status(client, maybe_ran, "failed")
        await dead_letter(client, failed)
        await sign_in(client, api_key)
        page = (await client.get("/ui/dead-letters")).text
    rows = {key: row for key, row in _rows_by_key(page).items() if key in (maybe_ran, failed)}
    assert "outcome unknown" in rows[maybe_ran]
    assert "outcome unknown" not in rows[failed]


def _rows_by_key(page: str) -> dict[str, str]:
    """Each list row's HTML, by the idempotency key it shows."""
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.DOTALL)
    return {keys_listed(row)[0]: row for row in rows if keys_listed(row)}


async def test_a_link_from_another_site_is_reloaded_from_this_one(
    gateway: GatewayClient,
) -> None:
    """A browser sends no SameSite=Strict cookie with a link followed from another site (an
    alert in Slack): the dashboard has the page reloaded from its own, which sends it."""
    crossing = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    bounced = await gateway.get("/ui/executions/some-key", headers=crossing)
    assert bounced.status_code == 200
    assert '<meta http-equiv="refresh" content="0">' in bounced.text
    assert "set-cookie" not in bounced.headers
    # The reload comes from this site: a browser still without a session gets the sign-in.
    again = await gateway.get(
        "/ui/executions/some-key", headers={**crossing, "Sec-Fetch-Site": "same-origin"}
    )
    assert "Sign in" in again.text
    assert 'http-equiv="refresh"' not in again.text
