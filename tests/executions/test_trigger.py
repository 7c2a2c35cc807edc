"""Forwarding and replay: what a caller of /webhook/<path> sees, and what n8n receives."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from app.config import Settings
from app.errors import InvalidWebhookPath
from app.executions.trigger import parse_webhook_path
from app.executions.trigger_endpoints import trigger as declared_trigger
from app.executions.trigger_http import TRIGGER_METHODS
from app.main import create_app
from tests.conftest import ClientFactory, with_lifespan_state
from tests.support.executions_api import new_key
from tests.support.fake_n8n import BINARY_BODY, FakeN8n
from tests.support.problems import assert_problem


async def test_forwards_method_path_query_body_and_end_to_end_headers(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    response = await client.post(
        "/webhook/echo?b=2&a=1",
        content=b'{"amount": 42}',
        headers={
            "Idempotency-Key": key,
            "Content-Type": "application/json",
            "X-Signature": "sig-1",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must-not-pass",
            "Keep-Alive": "timeout=5",
            "Expect": "100-continue",  # met by the gateway, which has the whole body
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert response.status_code == 200, response.text
    [call] = n8n.calls_for(key)
    assert (call.method, call.mode, call.path, call.query) == ("POST", "webhook", "echo", "b=2&a=1")
    assert call.body == b'{"amount": 42}'
    assert call.headers["content-type"] == "application/json"
    assert call.headers["x-signature"] == "sig-1"
    assert call.headers["idempotency-key"] == key
    assert call.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c")
    for hidden in ("authorization", "x-hop", "keep-alive", "expect"):
        assert hidden not in call.headers
    assert call.headers["host"] != "gate.test"


async def test_retry_replays_status_body_and_headers_without_calling_n8n(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    first = await client.post("/webhook/respond", headers={"Idempotency-Key": key})
    again = await client.post("/webhook/respond", headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert first.text == again.text == "accepted for processing"
    assert again.headers["content-type"].startswith("text/plain")
    assert again.headers["x-execution-id"] == "4711"
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(n8n.calls_for(key)) == 1


async def test_binary_answers_are_replayed_byte_for_byte(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    first = await client.post("/webhook/binary", headers={"Idempotency-Key": key})
    again = await client.post("/webhook/binary", headers={"Idempotency-Key": key})
    assert first.content == again.content == BINARY_BODY
    assert again.headers["content-type"] == "application/octet-stream"
    status = (await client.get(f"/v1/executions/{key}")).json()
    assert status["response"]["body_encoding"] == "base64"
    assert base64.b64decode(status["response"]["body"]) == BINARY_BODY


async def test_every_trigger_answer_points_at_its_execution(client: httpx.AsyncClient) -> None:
    key = "order 7/π?".encode("ascii", "replace").decode()  # space, slash and '?' need encoding
    fresh = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
    replay = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
    reused = await client.post("/webhook/echo", json={"x": 1}, headers={"Idempotency-Key": key})
    expected = "/v1/executions/order%207%2F%3F%3F"
    assert fresh.headers["n8n-gate-execution"] == expected
    assert replay.headers["n8n-gate-execution"] == expected
    assert reused.headers["n8n-gate-execution"] == expected
    assert (await client.get(expected)).json()["key"] == key


async def test_n8n_s_own_location_reaches_the_caller_on_first_answers_and_replays(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    """A Respond to Webhook redirect keeps its Location; the execution's URL has its own header."""
    key = new_key()
    fresh = await client.post("/webhook/redirect", json={}, headers={"Idempotency-Key": key})
    replay = await client.post("/webhook/redirect", json={}, headers={"Idempotency-Key": key})
    for answer in (fresh, replay):
        assert answer.status_code == 307
        assert answer.headers.get_list("location") == ["https://shop.example/thanks"]
        assert answer.headers["n8n-gate-execution"] == f"/v1/executions/{key}"
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(key)) == 1


async def test_a_replayed_header_sent_by_n8n_is_not_believed(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    """Idempotent-Replayed and N8n-Gate-* are the gateway's: n8n cannot set them for it."""
    key = new_key()
    fresh = await client.post("/webhook/impostor", json={}, headers={"Idempotency-Key": key})
    replay = await client.post("/webhook/impostor", json={}, headers={"Idempotency-Key": key})
    assert "idempotent-replayed" not in fresh.headers
    assert fresh.headers["n8n-gate-execution"] == f"/v1/executions/{key}"
    assert replay.headers.get_list("idempotent-replayed") == ["true"]
    assert replay.headers.get_list("n8n-gate-execution") == [f"/v1/executions/{key}"]


async def test_a_quoted_key_and_its_bare_form_are_the_same_key(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    bare = new_key()
    first = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": f'"{bare}"'})
    second = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": bare})
    assert first.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert len(n8n.calls_for(f'"{bare}"')) == 1
    assert n8n.calls_for(bare) == []


async def test_escapes_in_a_quoted_key_are_unescaped(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/webhook/echo", json={}, headers={"Idempotency-Key": r'"say \"hi\""'}
    )
    status = await client.get(response.headers["n8n-gate-execution"])
    assert status.json()["key"] == 'say "hi"'


async def test_missing_key_is_400(client: httpx.AsyncClient, n8n: FakeN8n) -> None:
    probe = uuid.uuid4().hex  # other tests' pending deliveries may reach n8n meanwhile
    response = await client.post("/webhook/echo", json={"probe": probe})
    assert_problem(response, 400, "idempotency-key-missing")
    assert not [call for call in n8n.calls if probe.encode() in call.body]


@pytest.mark.parametrize(
    "value",
    ["x" * 256, '""', '"unterminated', '"bad\\escape"', '"in"side"', "ünïcode", "tab\there"],
)
async def test_malformed_key_is_400(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post(
        "/webhook/echo", json={}, headers=[(b"Idempotency-Key", value.encode("utf-8"))]
    )
    assert_problem(response, 400, "idempotency-key-invalid")


async def test_255_character_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhook/echo", json={}, headers={"Idempotency-Key": "k" * 255})
    assert response.status_code == 200


async def test_two_key_headers_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/webhook/echo", json={}, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    )
    assert_problem(response, 400, "idempotency-key-invalid")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("POST", "/webhook/echo", b'{"a":1}'), ("POST", "/webhook/echo", b'{"a":2}')),
        (("POST", "/webhook/echo", b"{}"), ("POST", "/webhook/started", b"{}")),
        (("POST", "/webhook/echo?x=1", b"{}"), ("POST", "/webhook/echo?x=2", b"{}")),
        (("POST", "/webhook/echo", b"{}"), ("PUT", "/webhook/echo", b"{}")),
        (("POST", "/webhook/echo", b"{}"), ("POST", "/webhook-test/echo", b"{}")),
    ],
)
async def test_key_reused_for_another_request_is_422(
    client: httpx.AsyncClient,
    n8n: FakeN8n,
    first: tuple[str, str, bytes],
    second: tuple[str, str, bytes],
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    await client.request(first[0], first[1], content=first[2], headers=headers)
    response = await client.request(second[0], second[1], content=second[2], headers=headers)
    assert_problem(response, 422, "idempotency-key-reused")
    assert len(n8n.calls_for(key)) == 1


async def test_query_parameter_order_does_not_change_the_fingerprint(
    client: httpx.AsyncClient,
) -> None:
    key = new_key()
    await client.post("/webhook/echo?a=1&b=2", json={}, headers={"Idempotency-Key": key})
    again = await client.post("/webhook/echo?b=2&a=1", json={}, headers={"Idempotency-Key": key})
    assert again.headers["idempotent-replayed"] == "true"


async def test_test_webhooks_go_to_webhook_test(client: httpx.AsyncClient, n8n: FakeN8n) -> None:
    key = new_key()
    response = await client.post("/webhook-test/echo", json={}, headers={"Idempotency-Key": key})
    assert response.status_code == 200
    assert n8n.calls_for(key)[0].mode == "webhook-test"


@pytest.mark.parametrize(
    "path",
    [
        "/webhook/..%2F..%2Frest%2Fworkflows",
        "/webhook/a%2Fb",
        "/webhook/a%5Cb",
        "/webhook/a%252Fb",
        "/webhook/%2E%2E/rest/workflows",
        "/webhook/http:%2F%2Fevil.example%2Fx",
        "/webhook/http://evil.example/x",
        "/webhook/a//b",
        "/webhook/",
        "/webhook/a%00b",
        "/webhook/%FF",
    ],
)
async def test_paths_that_could_leave_the_webhook_prefix_are_400(
    client: httpx.AsyncClient, n8n: FakeN8n, path: str
) -> None:
    key = new_key()
    response = await client.post(path, json={}, headers={"Idempotency-Key": key})
    assert_problem(response, 400, "webhook-path-invalid")
    assert n8n.calls_for(key) == []


@pytest.mark.parametrize("raw_tail", ["a/../../rest/workflows", "..", "a/./b", "%2e%2e/x"])
def test_raw_dot_segments_are_refused(raw_tail: str) -> None:
    # HTTP clients normalise '..' away before sending, but a raw request line can carry it
    # and uvicorn passes it through unchanged.
    with pytest.raises(InvalidWebhookPath):
        parse_webhook_path(raw_tail)


async def test_paths_with_several_segments_and_a_trailing_slash_are_forwarded(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    response = await client.post(
        "/webhook/orders/42/items/", json={}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 404  # the fake registers no such path; n8n's 404 comes back
    assert n8n.calls_for(key)[0].path == "orders/42/items"
    status = (await client.get(f"/v1/executions/{key}")).json()
    assert status["workflow"] == "orders/42/items"


async def test_get_and_head_webhooks_are_triggers_like_any_other(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    get_key, head_key = new_key(), new_key()
    fresh = await client.get("/webhook/lookup?sku=7", headers={"Idempotency-Key": get_key})
    replay = await client.get("/webhook/lookup?sku=7", headers={"Idempotency-Key": get_key})
    assert (fresh.status_code, fresh.json()) == (200, {"found": True})
    assert (replay.content, replay.headers["idempotent-replayed"]) == (fresh.content, "true")
    assert [(c.method, c.query) for c in n8n.calls_for(get_key)] == [("GET", "sku=7")]

    head = await client.head("/webhook/probe", headers={"Idempotency-Key": head_key})
    head_replay = await client.head("/webhook/probe", headers={"Idempotency-Key": head_key})
    assert (head.status_code, head.content, head.headers["x-probe"]) == (200, b"", "ok")
    assert (head_replay.content, head_replay.headers["x-probe"]) == (b"", "ok")
    assert [c.method for c in n8n.calls_for(head_key)] == ["HEAD"]


async def test_options_on_a_trigger_path_is_405(client: httpx.AsyncClient) -> None:
    response = await client.options("/webhook/echo", headers={"Idempotency-Key": new_key()})
    problem = assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert problem["instance"] == "/webhook/echo"


@pytest.mark.parametrize("raw_path", ["/webhook%2Fecho", "/webhook-test%2fecho"])
async def test_an_encoded_slash_after_the_prefix_is_400_and_not_forwarded(
    client: httpx.AsyncClient, n8n: FakeN8n, raw_path: str
) -> None:
    # Decoded, the path reads /webhook/echo; what n8n would get is the raw rest, "2Fecho".
    key = new_key()
    response = await client.post(raw_path, json={}, headers={"Idempotency-Key": key})
    assert_problem(response, 400, "webhook-path-invalid")
    assert n8n.calls_for(key) == []


async def test_body_over_the_limit_is_413_and_not_forwarded(
    make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    async with make_client(max_body_bytes=1024) as small:
        response = await small.post(
            "/webhook/echo", content=b"x" * 1025, headers={"Idempotency-Key": key}
        )
        assert_problem(response, 413, "payload-too-large")
        ok = await small.post(
            "/webhook/echo", json={"fits": True}, headers={"Idempotency-Key": key}
        )
        assert ok.status_code == 200
    assert len(n8n.calls_for(key)) == 1


async def test_a_key_reused_after_its_replay_was_cached_is_still_422(
    client: httpx.AsyncClient, n8n: FakeN8n
) -> None:
    key = new_key()
    headers = {"Idempotency-Key": key}
    await client.post("/webhook/echo", json={"a": 1}, headers=headers)
    for _ in range(2):  # the first replay reads the database, the second the process cache
        replay = await client.post("/webhook/echo", json={"a": 1}, headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["received"] == {"a": 1}
    reused = await client.post("/webhook/echo", json={"a": 2}, headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")
    assert len(n8n.calls_for(key)) == 1


async def test_the_openapi_schema_documents_the_trigger_paths(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for mode in ("webhook", "webhook-test"):
        operations = paths[f"/{mode}/{{path}}"]
        assert sorted(operations) == ["delete", "get", "head", "patch", "post", "put"]
        headers = {p["name"] for p in operations["post"]["parameters"] if p["in"] == "header"}
        assert headers == {"Idempotency-Key", "Prefer", "N8n-Gate-Key"}
        for operation in operations.values():
            path, key = (p for p in operation["parameters"] if p["in"] != "header" or p["required"])
            assert (path["name"], path["in"], path["required"]) == ("path", "path", True)
            assert key["name"] == "Idempotency-Key"
            schema = key["schema"]
            assert (schema["minLength"], schema["maxLength"]) == (1, 257)
            assert schema["pattern"] == "^[\\x20-\\x7e]+$"
            assert operation["requestBody"] == {"content": {"*/*": {}}}
            assert sorted(operation["responses"]) == [
                *("200", "202", "400", "401", "403", "405", "408", "409", "413", "422", "429"),
                *("502", "503", "504"),
            ]
            assert "content" not in operation["responses"]["200"]  # whatever n8n answers
            assert "application/problem+json" in operation["responses"]["409"]["content"]
            assert operation["tags"] == ["triggers"]
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert "/v1/executions/{key}" in paths


@pytest.mark.parametrize("mode", ["webhook", "webhook-test"])
async def test_the_middleware_answers_the_trigger_paths_before_their_declared_routes(
    client: httpx.AsyncClient, mode: str
) -> None:
    # Headers FastAPI would accept: a declared route reached would raise here, not answer 401.
    headers = {"Idempotency-Key": new_key(), "Authorization": "Bearer not-a-key"}
    for method in TRIGGER_METHODS:
        response = await client.request(method, f"/{mode}/echo", headers=headers)
        assert response.status_code == 401, (method, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_the_declared_trigger_routes_come_after_every_other_route(settings: Settings) -> None:
    # In the order the router tries them: every other route matches before these are looked at.
    endpoints = [route.endpoint for route in iter_route_contexts(create_app(settings).routes)]
    declared = 2 * len(TRIGGER_METHODS)
    assert endpoints[-declared:] == [declared_trigger] * declared
    assert declared_trigger not in endpoints[:-declared]


async def test_a_trigger_under_a_root_path_is_404_not_a_crash(settings: Settings) -> None:
    """Under a root path the middleware does not see a trigger: the declared route answers,
    with a 404 that says where triggers are served, never a 500."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(
            app=with_lifespan_state(app, state), root_path="/gw", raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://gate.test") as client:
            answer = await client.post("/gw/webhook/echo", headers={"Idempotency-Key": new_key()})
    problem = assert_problem(answer, 404, "not-found")
    assert "not under a path prefix" in problem["detail"]


async def test_a_trigger_path_without_its_slash_is_not_redirected(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/webhook", "/webhook-test"):
        answer = await client.post(path, headers={"Host": "evil.example"})
        assert answer.status_code == 404
        assert "location" not in answer.headers
