"""Signing in to the dashboard: the sign-in page, the session cookie, its end, and the forms'
protection against other sites (CSRF), over HTTP against the real app."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from datetime import timedelta

import asyncpg
import pytest
from itsdangerous import URLSafeSerializer

from app.config import Settings
from app.tenants import repo as tenants_repo
from app.tenants.service import create_key
from tests.conftest import ClientFactory, gateway_client, new_api_key
from tests.ui.support import field, sign_in, text_of


async def test_the_dashboard_without_a_session_answers_the_sign_in_page(
    settings: Settings, api_key: str
) -> None:
    async with gateway_client(settings, api_key) as client:  # an API key alone signs nothing in
        page = await client.get("/ui")
        slashed = await client.get("/ui/")
        deep = await client.get("/ui/executions/order%2F42?x=1")
    for answer in (page, slashed, deep):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "Sign in" in answer.text
        assert 'name="api_key"' in answer.text
    assert field(deep.text, "next") == "/executions/order/42?x=1"
    form_cookie = page.headers["set-cookie"]
    assert "n8n_gate_form=" in form_cookie
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui"):
        assert attribute.lower() in form_cookie.lower()
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_sign_in_sets_a_signed_http_only_strict_cookie_that_expires(
    settings: Settings, database_url: str
) -> None:
    api_key = await new_api_key(database_url, tenant_name="acme-ui")
    async with gateway_client(settings, None) as client:
        page = await client.get("/ui")
        signed = await client.post(
            "/ui/sign-in",
            data={
                "form_token": field(page.text, "form_token"),
                "api_key": api_key,
                "next": "/queue",
            },
        )
        home = await client.get("/ui/queue")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ui/queue"
    cookie = next(c for c in signed.headers.get_list("set-cookie") if "n8n_gate_session=" in c)
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never come back
    secret_part = api_key.split("_", 2)[2]
    assert secret_part not in cookie
    assert api_key not in cookie
    assert "acme-ui" in home.text
    assert "Delivery queue" in home.text


async def test_over_https_the_cookie_is_secure(settings: Settings, api_key: str) -> None:
    async with gateway_client(settings, None) as client:
        client.base_url = "https://gate.test"
        await sign_in(client, api_key)
        cookies = [c for c in client.cookies.jar if c.name == "n8n_gate_session"]
    assert cookies
    assert all(c.secure for c in cookies)


@pytest.mark.parametrize(("trusted", "secure"), [("127.0.0.1", True), ("", False)])
async def test_behind_a_trusted_proxy_saying_https_the_cookie_is_secure(
    make_client: ClientFactory, api_key: str, trusted: str, secure: bool
) -> None:
    async with make_client(trusted_proxies=trusted, api_key=None) as client:
        client.headers["X-Forwarded-Proto"] = "https"
        page = await client.get("/ui")
        token = field(page.text, "form_token")
        signed = await client.post(  # as a browser on https would, with the Secure form cookie
            "/ui/sign-in",
            data={"form_token": token, "api_key": api_key},
            headers={"Cookie": f"n8n_gate_form={token}"},
        )
    cookie = next(c for c in signed.headers.get_list("set-cookie") if "n8n_gate_session=" in c)
    assert ("; secure" in cookie.lower()) is secure


async def test_a_wrong_key_gets_the_sign_in_page_again_with_401(
    settings: Settings, api_key: str
) -> None:
    async with gateway_client(settings, None) as client:
        page = await client.get("/ui")
        token = field(page.text, "form_token")
        wrong = await client.post(
            "/ui/sign-in", data={"form_token": token, "api_key": api_key[:-3] + "xyz"}
        )
        malformed = await client.post("/ui/sign-in", data={"form_token": token, "api_key": "x"})
    for answer in (wrong, malformed):
        assert answer.status_code == 401
        assert "unknown, revoked or expired" in answer.text
        assert "n8n_gate_session" not in answer.headers.get("set-cookie", "")


async def test_sign_out_ends_the_session(settings: Settings, api_key: str) -> None:
    async with gateway_client(settings, None) as client:
        token = await sign_in(client, api_key)
        out = await client.post("/ui/sign-out", data={"form_token": token})
        after = await client.get("/ui/")
    assert out.status_code == 303
    assert 'n8n_gate_session=""' in out.headers["set-cookie"]
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert 'name="api_key"' in after.text


async def test_a_session_ends_when_it_expires_or_its_key_is_revoked(
    settings: Settings, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        key = await create_key(conn, tenant_name="expiring-ui")
        async with gateway_client(settings, None) as client:
            await sign_in(client, key.secret)
            ends = await conn.fetchval(
                "SELECT expires_at - created_at FROM ui_sessions WHERE key_prefix = $1",
                key.prefix,
            )
            assert ends == timedelta(seconds=settings.ui_session_seconds)
            assert "expiring-ui" in (await client.get("/ui/")).text
            await conn.execute(
                "UPDATE ui_sessions SET expires_at = now() - interval '1 second' "
                "WHERE key_prefix = $1",
                key.prefix,
            )
            expired = await client.get("/ui/")
            await sign_in(client, key.secret)
            await tenants_repo.revoke_key(conn, prefix=key.prefix)
            revoked = await client.get("/ui/")
    finally:
        await conn.close()
    assert 'name="api_key"' in expired.text
    assert 'name="api_key"' in revoked.text


async def test_a_cookie_copied_before_sign_out_is_no_session_after_it(
    settings: Settings, api_key: str
) -> None:
    async with gateway_client(settings, None) as client:
        token = await sign_in(client, api_key)
        copied = client.cookies["n8n_gate_session"]
        await client.post("/ui/sign-out", data={"form_token": token})
        client.cookies.set("n8n_gate_session", copied, domain="gate.test", path="/ui")
        replayed = await client.get("/ui/")
        form = await client.post("/ui/dead-letters/retry", data={"form_token": token, "key": "k"})
    assert 'name="api_key"' in replayed.text
    assert form.status_code == 401


async def test_what_the_database_holds_makes_no_session(
    settings: Settings, database_url: str
) -> None:
    """Neither the key's stored hash (what sessions were signed with once) nor the session's
    stored hash lets a reader of the database make a cookie."""
    conn = await asyncpg.connect(database_url)
    try:
        key = await create_key(conn, tenant_name=f"db-reader-{uuid.uuid4().hex[:6]}")
        key_hash = await conn.fetchval(
            "SELECT key_hash FROM api_keys WHERE prefix = $1", key.prefix
        )
        async with gateway_client(settings, None) as client:
            await sign_in(client, key.secret)
            cookie = client.cookies["n8n_gate_session"]
            token_hash = await conn.fetchval(
                "SELECT token_hash FROM ui_sessions WHERE key_prefix = $1", key.prefix
            )
            assert token_hash == hashlib.sha256(cookie.encode()).digest()
            signer = URLSafeSerializer(
                key_hash,
                salt=b"n8n-gate dashboard session",
                signer_kwargs={"digest_method": hashlib.sha256},
            )
            far = int(time.time()) + 10 * 365 * 86400
            forged = {
                "signed with the key's hash": key.prefix
                + "."
                + signer.dumps({"p": key.prefix, "e": far, "n": "x"}),
                "the stored hash": base64.urlsafe_b64encode(token_hash).decode().rstrip("="),
                "flipped": cookie[:-1] + ("A" if cookie[-1] != "A" else "B"),
                "garbage": "not-a-session",
            }
            for what, value in forged.items():
                client.cookies.clear()
                client.cookies.set("n8n_gate_session", value, domain="gate.test", path="/ui")
                page = await client.get("/ui/")
                assert 'name="api_key"' in page.text, what
    finally:
        await conn.close()


async def test_ended_sessions_do_not_pile_up(settings: Settings, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        key = await create_key(conn, tenant_name=f"pile-{uuid.uuid4().hex[:6]}")
        tenant = await conn.fetchval("SELECT tenant_id FROM api_keys WHERE prefix = $1", key.prefix)
        await conn.execute(
            "INSERT INTO ui_sessions (token_hash, tenant_id, key_prefix, expires_at) "
            "SELECT sha256(g::text::bytea), $1, $2, now() - interval '1 hour' "
            "FROM generate_series(1, 25) g",
            tenant,
            key.prefix,
        )
        async with gateway_client(settings, None) as client:
            for _ in range(3):
                client.cookies.clear()
                await sign_in(client, key.secret)
        left = await conn.fetchval(
            "SELECT count(*) FROM ui_sessions WHERE expires_at < now() AND key_prefix = $1",
            key.prefix,
        )
        live = await conn.fetchval(
            "SELECT count(*) FROM ui_sessions WHERE expires_at > now() AND key_prefix = $1",
            key.prefix,
        )
    finally:
        await conn.close()
    assert left == 0  # each start deletes up to ten ended sessions
    assert live == 3


async def test_forms_without_the_session_token_or_from_another_site_are_refused(
    settings: Settings, api_key: str
) -> None:
    async with gateway_client(settings, None) as client:
        token = await sign_in(client, api_key)
        missing = await client.post("/ui/dead-letters/retry", data={"key": "k"})
        wrong = await client.post(
            "/ui/dead-letters/retry", data={"key": "k", "form_token": "0" * 64}
        )
        cross_site = await client.post(
            "/ui/dead-letters/retry",
            data={"key": "k", "form_token": token},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        foreign_origin = await client.post(
            "/ui/dead-letters/retry",
            data={"key": "k", "form_token": token},
            headers={"Origin": "https://evil.example"},
        )
        sign_out = await client.post("/ui/sign-out", data={})
        accepted = await client.post(
            "/ui/dead-letters/retry",
            data={"key": "k", "form_token": token},
            headers={"Origin": "http://gate.test", "Sec-Fetch-Site": "same-origin"},
        )
    for refused in (missing, wrong, cross_site, foreign_origin, sign_out):
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html")
        assert "Form refused" in refused.text
    assert accepted.status_code == 200  # the form went through: "k" is just not a dead letter
    assert "Not retried" in accepted.text


async def test_the_sign_in_form_is_protected_too(settings: Settings, api_key: str) -> None:
    async with gateway_client(settings, None) as client:
        no_cookie = await client.post(
            "/ui/sign-in", data={"form_token": "t" * 43, "api_key": api_key}
        )
        page = await client.get("/ui")
        token = field(page.text, "form_token")
        cross_site = await client.post(
            "/ui/sign-in",
            data={"form_token": token, "api_key": api_key},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
    for refused in (no_cookie, cross_site):
        assert refused.status_code == 403
        assert "n8n_gate_session" not in refused.headers.get("set-cookie", "")


@pytest.mark.parametrize("next_path", ["//evil.example/x", "https://evil.example", "/\\evil"])
async def test_sign_in_never_sends_the_browser_elsewhere(
    settings: Settings, api_key: str, next_path: str
) -> None:
    async with gateway_client(settings, None) as client:
        page = await client.get("/ui")
        signed = await client.post(
            "/ui/sign-in",
            data={
                "form_token": field(page.text, "form_token"),
                "api_key": api_key,
                "next": next_path,
            },
        )
    assert signed.headers["location"] == "/ui/"


async def test_nothing_secret_reaches_the_pages(settings: Settings, api_key: str) -> None:
    async with gateway_client(settings, None) as client:
        await sign_in(client, api_key)
        pages = [await client.get(path) for path in ("/ui/", "/ui/dead-letters", "/ui/queue")]
    for page in pages:
        assert api_key not in page.text
        assert api_key.split("_", 2)[2] not in text_of(page.text)
