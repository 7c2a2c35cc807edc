"""The edge's error handling: a bug is a problem+json 500 that tells the client nothing of it,
and FastAPI's own errors come out as problem+json too."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from app.config import Settings
from tests.conftest import ClientFactory, GatewayClient, gateway_client
from tests.support.problems import assert_problem

SECRET = "connection string postgresql://admin:hunter2@db"


class Bug(RuntimeError):
    pass


async def broken(**_: object) -> None:
    raise Bug(SECRET)


def assert_hidden_bug(
    response: httpx.Response, caplog: pytest.LogCaptureFixture, *, instance: str
) -> None:
    """A 500 that says nothing of the bug, while the log has it with its traceback."""
    problem = assert_problem(response, 500, "internal-error")
    assert problem["instance"] == instance
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert any(record.exc_info and SECRET in str(record.exc_info[1]) for record in caplog.records)


@pytest.fixture
async def server_client(settings: Settings, api_key: str) -> AsyncIterator[GatewayClient]:
    async with gateway_client(settings, api_key, raise_app_exceptions=False) as client:
        yield client


async def test_a_bug_behind_an_api_route_is_a_500_without_its_details(
    server_client: GatewayClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_client.services.executions, "get", broken)
    with caplog.at_level(logging.ERROR):
        response = await server_client.get(
            "/v1/executions/some-key", headers={"X-Request-Id": "bug-req-1"}
        )
    assert_hidden_bug(response, caplog, instance="/v1/executions/some-key")
    # The one answer made outside the request-id middleware still carries the request's id.
    assert response.headers["x-request-id"] == "bug-req-1"


async def test_a_bug_on_the_trigger_path_is_a_500_without_its_details(
    server_client: GatewayClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server_client.services.executions, "trigger", broken)
    errors = {"mode": "sync", "outcome": "error", "status_class": "5xx"}
    counted = REGISTRY.get_sample_value("n8n_gate_triggers_total", errors) or 0
    with caplog.at_level(logging.ERROR):
        response = await server_client.post(
            "/webhook/orders", headers={"Idempotency-Key": "bug-1"}, content=b"{}"
        )
    assert_hidden_bug(response, caplog, instance="/webhook/orders")
    assert REGISTRY.get_sample_value("n8n_gate_triggers_total", errors) == counted + 1


async def test_a_method_an_api_route_does_not_take_is_a_405_naming_the_allowed_ones(
    server_client: GatewayClient,
) -> None:
    response = await server_client.delete("/v1/executions")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"


async def test_the_openapi_document_names_every_problem_a_route_answers(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    status = paths["/v1/executions/{key}"]["get"]["responses"]
    assert {"200", "400", "401", "404", "503"} <= set(status)
    assert "application/problem+json" in status["404"]["content"]
    trigger = paths["/webhook/{path}"]["post"]
    assert {"400", "401", "409", "413", "422", "502", "503", "504"} <= set(trigger["responses"])
    key = next(p for p in trigger["parameters"] if p["name"] == "Idempotency-Key")
    assert key["schema"]["maxLength"] == 257


async def test_the_docs_pages_that_load_scripts_from_a_cdn_are_off_by_default(
    client: httpx.AsyncClient, make_client: ClientFactory
) -> None:
    assert (await client.get("/docs")).status_code == 404
    async with make_client(api_docs=True) as with_docs:
        assert (await with_docs.get("/docs")).status_code == 200
