"""Provider deliveries on /in/<route>, through the real app, a real Postgres and the fake n8n.

Signatures are computed here with `hmac`, independently of app/ingress/signatures.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import ClientFactory, GatewayClient, new_api_key
from tests.support.executions_api import status_of, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem

STRIPE_SECRETS = ["whsec_test_old", "whsec_test_new"]
GITHUB_SECRET = "gh-secret"
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHOPIFY_SECRET = "shpss_0123456789abcdef"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
HMAC_SECRET = "generic-secret"
ALL_SECRETS = [
    *STRIPE_SECRETS,
    GITHUB_SECRET,
    STD_SECRET,
    SHOPIFY_SECRET,
    SLACK_SECRET,
    HMAC_SECRET,
]


def routes_toml(tenant: str) -> str:
    """The issue's fixed-point routes, on the fake n8n's echo workflow, and one of each other
    provider."""
    return f"""
[routes.stripe-orders]
tenant   = "{tenant}"
provider = "stripe"
secrets  = ["whsec_test_old", "whsec_test_new"]
webhook  = "echo"
respond  = "async"

[routes.gh]
tenant   = "{tenant}"
provider = "github"
secrets  = ["{GITHUB_SECRET}"]
webhook  = "echo"
respond  = "sync"

[routes.std]
tenant   = "{tenant}"
provider = "standard-webhooks"
secrets  = ["{STD_SECRET}"]
webhook  = "echo"

[routes.shop]
tenant   = "{tenant}"
provider = "shopify"
secrets  = ["{SHOPIFY_SECRET}"]
webhook  = "echo"
respond  = "sync"

[routes.slack]
tenant   = "{tenant}"
provider = "slack"
secrets  = ["{SLACK_SECRET}"]
webhook  = "echo"
respond  = "sync"

[routes.plain]
tenant   = "{tenant}"
provider = "hmac-sha256"
secrets  = ["{HMAC_SECRET}"]
signature_header = "X-Signature"
signature_prefix = "sha256="
key      = "body-sha256"
webhook  = "echo"
respond  = "sync"
"""


@pytest.fixture
async def tenant(database_url: str) -> tuple[str, str]:
    """A tenant of its own (its name, and an API key to read its executions with)."""
    name = f"acme-{uuid.uuid4().hex[:12]}"
    return name, await new_api_key(database_url, tenant_name=name)


@pytest.fixture
async def gateway(
    make_client: ClientFactory, tenant: tuple[str, str], tmp_path: Path
) -> AsyncIterator[GatewayClient]:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml(tenant[0]))
    async with make_client(api_key=tenant[1], routes_file=routes) as client:
        yield client


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRETS[1], at: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + body
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={timestamp},v1={signature}", "Content-Type": "application/json"}


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={signature}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def standard_headers(body: bytes, message_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    key = base64.b64decode(STD_SECRET.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
        "Content-Type": "application/json",
    }


def refused(route: str, reason: str) -> float:
    """n8n_gate_deliveries_refused_total for the route and reason, as /metrics will show it."""
    labels = {"route": route, "reason": reason}
    return REGISTRY.get_sample_value("n8n_gate_deliveries_refused_total", labels) or 0.0


def stripe_event(event_id: str, amount: int = 100) -> bytes:
    return json.dumps({"id": event_id, "type": "charge.succeeded", "amount": amount}).encode()


async def test_an_async_provider_delivering_an_event_three_times_runs_the_workflow_once(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    event = f"evt_{uuid.uuid4().hex}"
    body = stripe_event(event)
    answers = []
    for secret in [STRIPE_SECRETS[1], STRIPE_SECRETS[0], STRIPE_SECRETS[1]]:  # either secret
        answers.append(
            await gateway.post(
                "/in/stripe-orders", content=body, headers=stripe_headers(body, secret)
            )
        )
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert "idempotent-replayed" not in answers[0].headers
    assert [answer.headers.get("idempotent-replayed") for answer in answers[1:]] == ["true"] * 2
    key = f"in:stripe-orders:{event}"
    assert answers[0].json()["key"] == key
    await until_status(gateway, key, "completed")
    calls = n8n.calls_for(key)
    assert len(calls) == 1
    assert calls[0].body == body
    assert calls[0].path == "echo"


async def test_a_sync_provider_delivering_an_event_three_times_gets_n8ns_answer_replayed(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    delivery = str(uuid.uuid4())
    body = json.dumps({"ref": "refs/heads/main", "delivery": delivery}).encode()
    answers = [
        await gateway.post("/in/gh", content=body, headers=github_headers(body, delivery))
        for _ in range(3)
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert [answer.headers.get("idempotent-replayed") for answer in answers] == [
        None,
        "true",
        "true",
    ]
    assert answers[1].content == answers[0].content
    calls = n8n.calls_for(f"in:gh:{delivery}")
    assert len(calls) == 1
    assert calls[0].headers["x-github-event"] == "push"


async def test_concurrent_redeliveries_run_the_workflow_once(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    message = f"msg_{uuid.uuid4().hex}"
    body = b'{"type":"invoice.paid"}'
    answers = await asyncio.gather(
        *(
            gateway.post("/in/std", content=body, headers=standard_headers(body, message))
            for _ in range(5)
        )
    )
    assert all(answer.status_code == 202 for answer in answers)
    await until_status(gateway, f"in:std:{message}", "completed")
    assert len(n8n.calls_for(f"in:std:{message}")) == 1


async def test_each_provider_verifies_and_keys_its_deliveries(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    body = b'{"id":"shop-order"}'
    shop_id = str(uuid.uuid4())
    shop_signature = base64.b64encode(
        hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
    ).decode()
    shop = await gateway.post(
        "/in/shop",
        content=body,
        headers={"X-Shopify-Hmac-Sha256": shop_signature, "X-Shopify-Event-Id": shop_id},
    )
    assert shop.status_code == 200, shop.text
    assert len(n8n.calls_for(f"in:shop:{shop_id}")) == 1

    event_id = f"Ev{uuid.uuid4().hex}"
    slack_body = json.dumps({"type": "event_callback", "event_id": event_id}).encode()
    timestamp = str(int(time.time()))
    slack_signature = hmac.new(
        SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + slack_body, hashlib.sha256
    ).hexdigest()
    slack = await gateway.post(
        "/in/slack",
        content=slack_body,
        headers={
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={slack_signature}",
        },
    )
    assert slack.status_code == 200, slack.text
    assert len(n8n.calls_for(f"in:slack:{event_id}")) == 1

    plain_body = f'{{"n": "{uuid.uuid4()}"}}'.encode()
    plain_signature = hmac.new(HMAC_SECRET.encode(), plain_body, hashlib.sha256).hexdigest()
    plain = await gateway.post(
        "/in/plain", content=plain_body, headers={"X-Signature": f"sha256={plain_signature}"}
    )
    assert plain.status_code == 200, plain.text
    key = f"in:plain:sha256:{hashlib.sha256(plain_body).hexdigest()}"
    assert len(n8n.calls_for(key)) == 1


@pytest.mark.parametrize(
    "headers_for",
    [
        lambda body: stripe_headers(body + b" "),  # signed another body
        lambda body: stripe_headers(body, secret="whsec_not_this_one"),
        lambda body: stripe_headers(body, at=int(time.time()) - 301),  # stale
        lambda body: stripe_headers(body, at=int(time.time()) + 301),  # from the future
        lambda body: {"Content-Type": "application/json"},  # unsigned
    ],
    ids=["tampered", "wrong-secret", "stale", "future", "missing"],
)
async def test_a_delivery_that_does_not_verify_is_401_and_nothing_is_stored(
    gateway: GatewayClient,
    n8n: FakeN8n,
    caplog: pytest.LogCaptureFixture,
    headers_for: object,
) -> None:
    event = f"evt_{uuid.uuid4().hex}"
    body = stripe_event(event)
    headers = headers_for(body)  # type: ignore[operator]
    refused_before = refused("stripe-orders", "signature")
    with caplog.at_level(logging.WARNING):
        answer = await gateway.post("/in/stripe-orders", content=body, headers=headers)
    problem = assert_problem(answer, 401, "signature-invalid")
    assert refused("stripe-orders", "signature") == refused_before + 1
    assert "nothing was stored" in problem["detail"]
    assert_problem(
        await gateway.get(f"/v1/executions/in:stripe-orders:{event}"), 404, "execution-not-found"
    )
    assert n8n.calls_for(f"in:stripe-orders:{event}") == []
    assert "delivery refused: route=stripe-orders" in caplog.text
    signature = headers.get("Stripe-Signature", "")
    for secret in [*STRIPE_SECRETS, signature.partition("v1=")[2] or "<none>"]:
        assert secret not in caplog.text
        assert secret not in answer.text


async def test_a_duplicated_signature_header_is_refused(gateway: GatewayClient) -> None:
    body = stripe_event(f"evt_{uuid.uuid4().hex}")
    signed = stripe_headers(body)
    headers = [("Stripe-Signature", signed["Stripe-Signature"])] * 2
    answer = await gateway.post("/in/stripe-orders", content=body, headers=headers)
    assert_problem(answer, 401, "signature-invalid")


async def test_a_delivery_without_its_key_is_400(gateway: GatewayClient) -> None:
    body = b'{"type":"charge.succeeded"}'  # no /id
    refused_before = refused("stripe-orders", "missing-key")
    answer = await gateway.post("/in/stripe-orders", content=body, headers=stripe_headers(body))
    problem = assert_problem(answer, 400, "delivery-key-missing")
    assert refused("stripe-orders", "missing-key") == refused_before + 1
    assert "/id" in problem["detail"]


async def test_the_same_event_id_with_another_body_is_422(
    gateway: GatewayClient, n8n: FakeN8n, caplog: pytest.LogCaptureFixture
) -> None:
    event = f"evt_{uuid.uuid4().hex}"
    first, second = stripe_event(event, amount=100), stripe_event(event, amount=999)
    assert (
        await gateway.post("/in/stripe-orders", content=first, headers=stripe_headers(first))
    ).status_code == 202
    with caplog.at_level(logging.WARNING):
        answer = await gateway.post(
            "/in/stripe-orders", content=second, headers=stripe_headers(second)
        )
    assert_problem(answer, 422, "idempotency-key-reused")
    assert "first delivered with another body" in caplog.text


async def test_two_routes_never_share_a_key(gateway: GatewayClient, n8n: FakeN8n) -> None:
    message = f"msg_{uuid.uuid4().hex}"
    body = b'{"same": "id on two routes"}'
    std = await gateway.post("/in/std", content=body, headers=standard_headers(body, message))
    gh = await gateway.post("/in/gh", content=body, headers=github_headers(body, message))
    assert (std.status_code, gh.status_code) == (202, 200)
    assert gh.headers.get("idempotent-replayed") is None
    assert len(n8n.calls_for(f"in:gh:{message}")) == 1


async def test_an_unknown_route_is_404_and_needs_no_api_key(
    gateway: GatewayClient,
) -> None:
    anonymous = {"Authorization": ""}
    answer = await gateway.post("/in/nope", content=b"{}", headers=anonymous)
    assert_problem(answer, 404, "route-not-found")
    body = stripe_event(f"evt_{uuid.uuid4().hex}")
    known = await gateway.post(
        "/in/stripe-orders", content=body, headers={**stripe_headers(body), **anonymous}
    )
    assert known.status_code == 202


async def test_a_gateway_without_routes_answers_404_on_in(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/in/anything", content=b"{}"), 404, "route-not-found")


async def test_secrets_and_signatures_are_never_stored_forwarded_or_shown(
    gateway: GatewayClient, n8n: FakeN8n, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = str(uuid.uuid4())
    body = json.dumps({"delivery": delivery}).encode()
    headers = github_headers(body, delivery)
    with caplog.at_level(logging.DEBUG):
        assert (await gateway.post("/in/gh", content=body, headers=headers)).status_code == 200
        event = f"evt_{uuid.uuid4().hex}"
        stripe_body = stripe_event(event)
        stripe = stripe_headers(stripe_body)
        await gateway.post("/in/stripe-orders", content=stripe_body, headers=stripe)
        await until_status(gateway, f"in:stripe-orders:{event}", "completed")
    signatures = [headers["X-Hub-Signature-256"], stripe["Stripe-Signature"]]
    forwarded = [
        *n8n.calls_for(f"in:gh:{delivery}"),
        *n8n.calls_for(f"in:stripe-orders:{event}"),
    ]
    assert len(forwarded) == 2
    for call in forwarded:
        assert not {"x-hub-signature-256", "stripe-signature"} & set(call.headers)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT request_headers::text AS headers, response_body FROM executions "
            "WHERE idempotency_key = ANY($1::text[])",
            [f"in:gh:{delivery}", f"in:stripe-orders:{event}"],
        )
    finally:
        await conn.close()
    assert len(rows) == 2
    shown = [
        (await gateway.get(f"/v1/executions/in:gh:{delivery}")).text,
        (await gateway.get(f"/v1/executions/in:stripe-orders:{event}")).text,
        (await gateway.get("/v1/executions")).text,
    ]
    for secret in [*ALL_SECRETS, *signatures]:
        assert secret not in caplog.text
        for row in rows:
            assert secret not in (row["headers"] or "")
            assert secret.encode() not in (row["response_body"] or b"")
        for text in shown:
            assert secret not in text


async def test_status_of_a_delivery_is_read_with_the_routes_tenant_key(
    gateway: GatewayClient,
) -> None:
    event = f"evt_{uuid.uuid4().hex}"
    body = stripe_event(event)
    await gateway.post("/in/stripe-orders", content=body, headers=stripe_headers(body))
    status = await status_of(gateway, f"in:stripe-orders:{event}")
    assert (status["workflow"], status["mode"]) == ("echo", "webhook")


async def test_a_clients_key_cannot_take_a_providers_delivery(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    delivery = str(uuid.uuid4())
    squatted = await gateway.post(
        "/webhook/echo", json={"evil": 1}, headers={"Idempotency-Key": f"in:gh:{delivery}"}
    )
    problem = assert_problem(squatted, 400, "idempotency-key-invalid")
    assert "provider deliveries" in problem["detail"]
    body = json.dumps({"real": 1}).encode()
    real = await gateway.post("/in/gh", content=body, headers=github_headers(body, delivery))
    assert real.status_code == 200
    assert "idempotent-replayed" not in real.headers


async def test_slacks_url_check_is_answered_and_nothing_is_stored(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    challenge = uuid.uuid4().hex
    body = json.dumps({"token": "t", "challenge": challenge, "type": "url_verification"}).encode()
    timestamp = str(int(time.time()))
    signature = hmac.new(
        SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
    ).hexdigest()
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={signature}"}
    answer = await gateway.post("/in/slack", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json() == {"challenge": challenge}
    page = (await gateway.get("/v1/executions")).json()
    assert not [item for item in page["items"] if item["key"].startswith("in:slack:")]
    unsigned = await gateway.post("/in/slack", content=body)
    assert_problem(unsigned, 401, "signature-invalid")


async def test_a_providers_credentials_never_reach_n8n(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    for extra in ({}, {"N8n-Gate-Key": "anything"}):
        delivery = str(uuid.uuid4())
        body = json.dumps({"delivery": delivery}).encode()
        headers = {
            **github_headers(body, delivery),
            "Authorization": "Basic cHJvdmlkZXI6c2VjcmV0",
            **extra,
        }
        assert (await gateway.post("/in/gh", content=body, headers=headers)).status_code == 200
        (call,) = n8n.calls_for(f"in:gh:{delivery}")
        assert "authorization" not in call.headers
        assert "n8n-gate-key" not in call.headers


async def test_a_delivery_without_a_plausible_signature_is_refused_before_its_body(
    gateway: GatewayClient,
) -> None:
    """Its body is never read, so an unsigned sender cannot hold the gateway's memory."""
    never = asyncio.Event()

    async def body_that_stalls() -> AsyncIterator[bytes]:
        yield b'{"id": "evt_stalled", "pad": "'
        await never.wait()  # the rest never comes
        yield b'"}'

    headers = {"Content-Length": str(1 << 20), "Content-Type": "application/json"}
    async with asyncio.timeout(5):
        answer = await gateway.post(
            "/in/stripe-orders", content=body_that_stalls(), headers=headers
        )
    problem = assert_problem(answer, 401, "signature-invalid")
    assert "stripe-signature" in problem["detail"]


async def test_svix_named_standard_webhooks_are_verified_and_keyed(
    gateway: GatewayClient, n8n: FakeN8n
) -> None:
    message = f"msg_{uuid.uuid4().hex}"
    body = b'{"type":"user.created"}'
    headers = {
        name.replace("webhook-", "svix-"): value
        for name, value in standard_headers(body, message).items()
    }
    answer = await gateway.post("/in/std", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    await until_status(gateway, f"in:std:{message}", "completed")
    (call,) = n8n.calls_for(f"in:std:{message}")
    assert "svix-signature" not in call.headers


async def test_past_the_tenants_rate_a_provider_gets_429_and_forgeries_take_no_tokens(
    make_client: ClientFactory, tenant: tuple[str, str], tmp_path: Path, n8n: FakeN8n
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(routes_toml(tenant[0]))
    limit = {"rate_limit_per_second": 0.01, "rate_limit_burst": 2}
    async with make_client(api_key=tenant[1], routes_file=routes, **limit) as gateway:
        for _ in range(5):  # forged: refused before the limit is counted
            body = stripe_event(f"evt_{uuid.uuid4().hex}")
            forged = stripe_headers(body, secret="whsec_not_this_one")
            answer = await gateway.post("/in/stripe-orders", content=body, headers=forged)
            assert_problem(answer, 401, "signature-invalid")
        answers = []
        for _ in range(3):
            body = stripe_event(f"evt_{uuid.uuid4().hex}")
            answers.append(
                await gateway.post("/in/stripe-orders", content=body, headers=stripe_headers(body))
            )
    assert [answer.status_code for answer in answers[:2]] == [202, 202]
    assert_problem(answers[2], 429, "rate-limited")
    assert int(answers[2].headers["retry-after"]) > 0


async def test_a_route_keyed_on_x_request_id_keeps_the_senders_id(
    make_client: ClientFactory, tenant: tuple[str, str], tmp_path: Path, n8n: FakeN8n
) -> None:
    """The gateway's own request ids never stand in for a delivery's key."""
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[routes.plain]\ntenant = "{tenant[0]}"\nprovider = "hmac-sha256"\n'
        f'secrets = ["{HMAC_SECRET}"]\nsignature_header = "X-Signature"\n'
        'key = "header:X-Request-Id"\nwebhook = "echo"\nrespond = "sync"\n'
    )
    body = b'{"n": 1}'
    signature = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with make_client(api_key=tenant[1], routes_file=routes) as gateway:
        sender_id = f"evt {uuid.uuid4()}"  # a space: not an id the gateway would echo
        answers = [
            await gateway.post(
                "/in/plain",
                content=body,
                headers={"X-Signature": signature, "X-Request-Id": sender_id},
            )
            for _ in range(2)
        ]
        unkeyed = await gateway.post("/in/plain", content=body, headers={"X-Signature": signature})
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(f"in:plain:{sender_id}")) == 1
    assert_problem(unkeyed, 400, "delivery-key-missing")
