"""Traces: W3C trace context in and out, the span tree of a trigger and of an async delivery
(in-memory exporter), a real `serve` exporting over OTLP/HTTP, and nothing at all while off."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager

import asyncpg
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import tracing
from app.config import Settings
from app.forwarding.headers import valid_trace_context
from app.logs import JsonFormatter
from app.main import create_app
from tests.conftest import ClientFactory, gateway_client, new_api_key
from tests.support.executions_api import new_key, until_status
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import ROOT, Gateway, cli_env
from tests.support.servers import serve_in_thread
from tests.test_cli import run_cli

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
TRIGGER_SPAN = "POST /webhook/{path:path}"


@pytest.fixture
async def spans() -> AsyncIterator[InMemorySpanExporter]:
    """Traces on for this test, into memory. The app's lifespan ends them when it stops, so a
    test reads the spans once its gateway is closed: every span has ended by then."""
    exporter = InMemorySpanExporter()
    log_records = logging.getLogRecordFactory()
    tracing.start(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        await tracing.shutdown()
    # Nothing is left patched for the tests that follow.
    assert logging.getLogRecordFactory() is log_records
    assert not hasattr(asyncpg.Connection.execute, "__wrapped__")
    assert not hasattr(BackgroundTask, "_otel_original_call")


def in_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if _ctx(span).trace_id == trace_id]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, [span.name for span in spans]
    return named[0]


def _ctx(span: ReadableSpan) -> object:
    assert span.context is not None
    return span.context


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [span for span in spans if parent_id(span) == span_id(parent)]


def attribute_text(spans: Sequence[ReadableSpan]) -> str:
    return json.dumps(
        [{**(span.attributes or {}), "name": span.name} for span in spans], default=str
    )


# --- The trace context a caller sends: checked and forwarded, tracing on or off ---


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ([("traceparent", TRACEPARENT)], [("traceparent", TRACEPARENT)]),
        (
            [("Traceparent", f" {TRACEPARENT} "), ("tracestate", "a=1"), ("tracestate", "b=2")],
            [("traceparent", TRACEPARENT), ("tracestate", "a=1,b=2")],
        ),
        # A later version may carry more after a dash; version 00 may not.
        ([("traceparent", f"01-{TRACE_ID}-{CALLER_SPAN}-01-xyz")], "same"),
        ([("traceparent", f"{TRACEPARENT}-xyz"), ("tracestate", "a=1")], []),
        ([("traceparent", f"ff-{TRACE_ID}-{CALLER_SPAN}-01")], []),
        ([("traceparent", f"00-{'0' * 32}-{CALLER_SPAN}-01")], []),
        ([("traceparent", f"00-{TRACE_ID}-{'0' * 16}-01")], []),
        ([("traceparent", TRACEPARENT.upper())], []),
        ([("traceparent", "00-abc"), ("tracestate", "a=1")], []),
        ([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)], []),
        ([("tracestate", "a=1")], []),
        # A bad tracestate goes alone: a bad member, a repeated key, more than 32 members.
        ([("traceparent", TRACEPARENT), ("tracestate", "A=1")], [("traceparent", TRACEPARENT)]),
        (
            [("traceparent", TRACEPARENT), ("tracestate", "a=1,a=2")],
            [("traceparent", TRACEPARENT)],
        ),
        (
            [("traceparent", TRACEPARENT), ("tracestate", ",".join(f"k{i}=v" for i in range(33)))],
            [("traceparent", TRACEPARENT)],
        ),
    ],
)
def test_only_well_formed_trace_context_is_forwarded(
    sent: list[tuple[str, str]], forwarded: list[tuple[str, str]] | str
) -> None:
    others = [("X-Other", "1")]
    expected = sent if forwarded == "same" else forwarded
    assert valid_trace_context([*others, *sent]) == [*others, *expected]


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_on_only_when_an_endpoint_is_set(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.requested(environ) is wanted


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_another_otlp_protocol_is_refused_and_leaves_traces_off(
    protocol: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    with pytest.raises(tracing.TracingConfigError, match="http/protobuf"):
        tracing.check_environment()
    tracing.start()  # a worker serves on, untraced, and says why
    assert not tracing.active()
    assert [r.levelname for r in caplog.records if "traces stay off" in r.getMessage()] == ["ERROR"]


async def test_with_traces_off_the_callers_context_reaches_n8n_as_sent(
    settings: Settings, api_key: str, n8n: FakeN8n
) -> None:
    app = create_app(settings)
    assert "build_middleware_stack" not in vars(app)  # no server span middleware
    assert not tracing.active()
    sent, malformed, async_key = new_key(), new_key(), new_key()
    async with gateway_client(settings, api_key) as client:
        for key, traceparent, extra in (
            (sent, TRACEPARENT, {}),
            (malformed, "00-not-a-trace", {}),
            (async_key, TRACEPARENT, {"Prefer": "respond-async"}),
        ):
            answer = await client.post(
                "/webhook/echo",
                json={},
                headers={
                    "Idempotency-Key": key,
                    "traceparent": traceparent,
                    "tracestate": TRACESTATE,
                    **extra,
                },
            )
            assert answer.status_code in (200, 202), answer.text
        await until_status(client, async_key, "completed")
    for key in (sent, async_key):
        received = n8n.calls_for(key)[0].headers
        assert (received["traceparent"], received["tracestate"]) == (TRACEPARENT, TRACESTATE)
    received = n8n.calls_for(malformed)[0].headers
    assert "traceparent" not in received
    assert "tracestate" not in received


# --- Traces on, into memory ---


async def test_a_sync_trigger_is_one_trace_from_its_caller_through_n8n(
    spans: InMemorySpanExporter, settings: Settings, api_key: str, n8n: FakeN8n
) -> None:
    key = new_key()
    async with gateway_client(settings, api_key) as client:
        answer = await client.post(
            "/webhook/echo?token=query-secret",
            json={"card": "4242424242424242"},
            headers={"Idempotency-Key": key, "traceparent": TRACEPARENT, "tracestate": TRACESTATE},
        )
        assert answer.status_code == 200, answer.text
    trace = in_trace(spans, int(TRACE_ID, 16))
    server = one(trace, TRIGGER_SPAN)
    assert server.kind is SpanKind.SERVER
    assert parent_id(server) == int(CALLER_SPAN, 16)
    claim, forward, record = (one(trace, name) for name in ("claim", "forward", "record"))
    assert {parent_id(span) for span in (claim, forward, record)} == {span_id(server)}
    assert forward.kind is SpanKind.CLIENT
    assert claim.end_time is not None
    assert forward.start_time is not None
    assert claim.end_time <= forward.start_time
    assert forward.end_time is not None
    assert record.start_time is not None
    assert forward.end_time <= record.start_time
    # The request's own statements are spans under it (the API key's lookup); claims and
    # records are group-committed for several requests at once, of several traces: their
    # statements are in none (docs/adr/0007-tracing.md).
    queries = [span for span in trace if span.attributes and "db.system" in span.attributes]
    assert queries
    assert all(parent_id(query) == span_id(server) for query in queries)
    assert children(trace, claim) == children(trace, record) == []

    assert claim.attributes is not None
    assert claim.attributes["n8n_gate.idempotency_key"] == key
    assert claim.attributes["n8n_gate.workflow"] == "webhook/echo"
    assert claim.attributes["n8n_gate.decision"] == "run"
    assert forward.attributes is not None
    assert forward.attributes["http.request.method"] == "POST"
    assert forward.attributes["http.response.status_code"] == 200
    assert forward.attributes["url.path"] == "/webhook/echo"
    assert record.attributes is not None
    assert record.attributes["n8n_gate.status"] == "completed"
    assert server.attributes is not None
    assert server.attributes["http.target"] == "/webhook/echo"

    # n8n continues the gateway's forward span, with the caller's tracestate.
    received = n8n.calls_for(key)[0].headers
    assert received["traceparent"] == traceparent_of(forward)
    assert received["tracestate"] == TRACESTATE


async def test_an_async_delivery_continues_the_trace_of_its_accept(
    spans: InMemorySpanExporter, settings: Settings, api_key: str, n8n: FakeN8n
) -> None:
    key = new_key()
    async with gateway_client(settings, api_key) as client:
        accepted = await client.post(
            "/webhook/echo",
            json={},
            headers={
                "Idempotency-Key": key,
                "Prefer": "respond-async",
                "traceparent": TRACEPARENT,
                "tracestate": TRACESTATE,
            },
        )
        assert accepted.status_code == 202, accepted.text
        await until_status(client, key, "completed")
    trace = in_trace(spans, int(TRACE_ID, 16))
    server, accept = one(trace, TRIGGER_SPAN), one(trace, "accept")
    assert parent_id(accept) == span_id(server)
    deliver = one(trace, "deliver")
    assert deliver.kind is SpanKind.CONSUMER
    assert parent_id(deliver) == span_id(accept)
    assert deliver.attributes is not None
    assert deliver.attributes["n8n_gate.attempt"] == 1
    forward, record = one(trace, "forward"), one(trace, "record")
    assert parent_id(forward) == parent_id(record) == span_id(deliver)
    received = n8n.calls_for(key)[0].headers
    assert received["traceparent"] == traceparent_of(forward)
    assert received["tracestate"] == TRACESTATE


async def test_each_delivery_attempt_is_a_span_of_the_same_trace(
    spans: InMemorySpanExporter, make_client: ClientFactory, n8n: FakeN8n
) -> None:
    key = new_key()
    n8n.failures_left[key] = 1
    fast = {"retry_base_seconds": 0.01, "retry_cap_seconds": 0.01, "delivery_poll_seconds": 0.05}
    async with make_client(**fast) as client:
        accepted = await client.post(
            "/webhook/flaky",
            json={},
            headers={"Idempotency-Key": key, "Prefer": "respond-async", "traceparent": TRACEPARENT},
        )
        assert accepted.status_code == 202, accepted.text
        await until_status(client, key, "completed", attempts=2)
    trace = in_trace(spans, int(TRACE_ID, 16))
    delivers = sorted(
        (span for span in trace if span.name == "deliver"),
        key=lambda span: span.start_time or 0,
    )
    assert [span.attributes and span.attributes["n8n_gate.attempt"] for span in delivers] == [1, 2]
    assert len({parent_id(span) for span in delivers}) == 1  # both under the accept
    records = sorted(
        (span for span in trace if span.name == "record"), key=lambda span: span.start_time or 0
    )
    assert [span.attributes and span.attributes["n8n_gate.status"] for span in records] == [
        "failed",
        "completed",
    ]
    assert records[0].attributes
    assert "n8n_gate.retry_at" in records[0].attributes
    forwards = [span for span in trace if span.name == "forward"]
    sent = [call.headers["traceparent"] for call in n8n.calls_for(key)]
    assert sent == [traceparent_of(span) for span in sorted(forwards, key=_start)]


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


async def test_a_malformed_traceparent_starts_a_new_trace_and_is_not_an_error(
    spans: InMemorySpanExporter, settings: Settings, api_key: str, n8n: FakeN8n
) -> None:
    key = new_key()
    async with gateway_client(settings, api_key) as client:
        answer = await client.post(
            "/webhook/echo",
            json={},
            headers={
                "Idempotency-Key": key,
                "traceparent": f"00-{TRACE_ID}-{'0' * 16}-01",
                "tracestate": TRACESTATE,
            },
        )
        assert answer.status_code == 200, answer.text
    assert not in_trace(spans, int(TRACE_ID, 16))
    forward = next(
        span
        for span in spans.get_finished_spans()
        if span.name == "forward" and span.attributes and span.attributes["url.path"]
    )
    received = n8n.calls_for(key)[0].headers
    assert received["traceparent"] == traceparent_of(forward)
    assert "tracestate" not in received
    server = next(span for span in spans.get_finished_spans() if span.name == TRIGGER_SPAN)
    assert server.parent is None


async def test_spans_carry_no_secret_query_or_body(
    spans: InMemorySpanExporter,
    settings: Settings,
    api_key: str,
    n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a platform may set for every service: every header of every request and answer.
    for direction in ("REQUEST", "RESPONSE"):
        monkeypatch.setenv(f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_{direction}", ".*")
    keys = [new_key(), new_key()]
    async with gateway_client(settings, None) as client:
        for key, auth in zip(
            keys,
            (
                {"Authorization": f"Bearer {api_key}"},
                {"N8n-Gate-Key": api_key, "Authorization": "Bearer hook-secret"},
            ),
            strict=True,
        ):
            answer = await client.post(
                "/webhook/guarded?token=query-secret",
                content=b'{"card": "4242424242424242"}',
                headers={"Idempotency-Key": key, "Content-Type": "application/json", **auth},
            )
            assert answer.status_code in (200, 403), answer.text
        async with client.services.pool.acquire() as conn:
            with tracing.span("probe"):
                assert await conn.fetchval("SELECT $1::text", "param-secret") == "param-secret"
    finished = spans.get_finished_spans()
    text = attribute_text(finished)
    assert "SELECT $1::text" in text  # statements are there, parameters are not
    for secret in (
        api_key,
        api_key.split("_")[-1],
        "hook-secret",
        "query-secret",
        "4242424242424242",
    ):
        assert secret not in text
    assert "param-secret" not in text
    # Names stay templates: never a raw path, key or query.
    names = {span.name for span in finished}
    assert not any(key in name for key in keys for name in names)
    assert not any("guarded" in name or "?" in name for name in names)


async def test_log_lines_carry_the_trace_and_span_they_belong_to(
    spans: InMemorySpanExporter,
    settings: Settings,
    api_key: str,
    n8n: FakeN8n,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = new_key()
    with caplog.at_level(logging.WARNING, logger="app.executions.runner"):
        async with gateway_client(settings, api_key) as client:
            answer = await client.post(
                "/webhook/fail",
                json={},
                headers={"Idempotency-Key": key, "traceparent": TRACEPARENT},
            )
            assert answer.status_code == 500, answer.text
    failed = next(r for r in caplog.records if getattr(r, "idempotency_key", None) == key)
    line = json.loads(JsonFormatter().format(failed))
    server = one(in_trace(spans, int(TRACE_ID, 16)), TRIGGER_SPAN)
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, f"{span_id(server):016x}")


async def test_server_spans_are_named_by_route_template(
    spans: InMemorySpanExporter, settings: Settings, api_key: str, n8n: FakeN8n
) -> None:
    key = new_key()
    async with gateway_client(settings, api_key) as client:
        for method, path in (
            ("POST", f"/webhook-test/echo/{uuid.uuid4()}"),
            ("POST", f"/in/{uuid.uuid4().hex}"),
            ("GET", f"/v1/executions/{key}"),
            ("DELETE", f"/no/such/{uuid.uuid4().hex}"),
        ):
            answer = await client.request(method, path, headers={"Idempotency-Key": key})
            assert answer.status_code < 500, answer.text
    names = {span.name for span in spans.get_finished_spans() if span.kind is SpanKind.SERVER}
    assert names == {
        "POST /webhook-test/{path:path}",
        "POST /in/{route}",
        "GET /v1/executions/{key:path}",
        "DELETE",
    }


async def test_statements_outside_any_span_make_no_trace(
    spans: InMemorySpanExporter, settings: Settings, api_key: str
) -> None:
    async with gateway_client(settings, api_key) as client:
        async with client.services.pool.acquire() as conn:
            assert await conn.fetchval("SELECT 'lone'") == "lone"
            with tracing.span("probe"):
                assert await conn.fetchval("SELECT 'inside'") == "inside"
        assert (await client.get("/healthz")).status_code == 200
    statements = {
        span.attributes.get("db.statement"): span
        for span in spans.get_finished_spans()
        if span.attributes and "db.statement" in span.attributes
    }
    assert "SELECT 'lone'" not in statements
    probe = one(spans.get_finished_spans(), "probe")
    assert parent_id(statements["SELECT 'inside'"]) == span_id(probe)
    # Probes are not traced (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS overrides the list).
    assert not [span for span in spans.get_finished_spans() if "healthz" in span.name]


# --- Off costs nothing; a real process exports over OTLP/HTTP ---


OFF_SCRIPT = """
import asyncio, json, os, sys
import httpx
from app.config import load_settings
from app.main import create_app

async def main():
    app = create_app(load_settings(_env_file=None, db_pool_min_size=1))
    async with app.router.lifespan_context(app) as state:
        async def with_state(scope, receive, send):
            await app({**scope, "state": dict(state)}, receive, send)
        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate.test") as client:
            answer = await client.post(
                "/webhook/echo", json={}, headers={
                    "Authorization": "Bearer " + os.environ["KEY"],
                    "Idempotency-Key": os.environ["IDEMPOTENCY_KEY"],
                    "traceparent": os.environ["TRACEPARENT"],
                },
            )
    # FastAPI itself imports OpenTelemetry's API (its own telemetry, off without a global
    # provider); the SDK, the instrumentations and the exporter are the gateway's to load.
    heavy = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
    loaded = sorted(name for name in sys.modules if name.startswith(heavy))
    print(json.dumps({"status": answer.status_code, "loaded": loaded}))

asyncio.run(main())
"""


@pytest.mark.slow
async def test_with_traces_off_no_sdk_instrumentation_or_exporter_is_even_imported(
    database_url: str, fake_n8n: tuple[FakeN8n, str], n8n: FakeN8n
) -> None:
    key = new_key()
    env = cli_env(
        DATABASE_URL=database_url,
        N8N_BASE_URL=fake_n8n[1],
        KEY=await new_api_key(database_url),
        IDEMPOTENCY_KEY=key,
        TRACEPARENT=TRACEPARENT,
    )
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", OFF_SCRIPT),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout.decode().splitlines()[-1])
    assert result == {"status": 200, "loaded": []}
    assert n8n.calls_for(key)[0].headers["traceparent"] == TRACEPARENT


class OtlpReceiver:
    """A collector's OTLP/HTTP traces endpoint on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, object]] = []
        self._lock = threading.Lock()

    async def _traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest.FromString(await request.body())
        with self._lock:
            for resource_spans in export.resource_spans:
                resource = {
                    item.key: item.value.string_value for item in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "service": resource.get("service.name"),
                                "instance": resource.get("service.instance.id"),
                            }
                        )
        body = ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    @contextmanager
    def serving(self) -> Iterator[str]:
        app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        with serve_in_thread(app) as url:
            yield url


@pytest.mark.slow
async def test_a_serving_process_exports_its_spans_over_otlp_and_flushes_them_at_exit(
    database_url: str, fake_n8n: tuple[FakeN8n, str], n8n: FakeN8n
) -> None:
    api_key = await new_api_key(database_url)
    receiver = OtlpReceiver()
    traces = {new_key(): uuid.uuid4().hex for _ in range(6)}
    with receiver.serving() as collector:
        env = cli_env(
            DATABASE_URL=database_url,
            N8N_BASE_URL=fake_n8n[1],
            OTEL_EXPORTER_OTLP_ENDPOINT=collector,
        )
        env.pop("OTEL_SDK_DISABLED", None)
        gateway = Gateway(env, workers=2)
        try:
            for key, trace_id in traces.items():
                # A connection each, so that both workers may take some.
                async with httpx.AsyncClient(base_url=gateway.base_url) as client:
                    answer = await client.post(
                        "/webhook/echo",
                        json={},
                        headers={
                            "Authorization": f"Bearer {api_key}",
                            "Idempotency-Key": key,
                            "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01",
                        },
                    )
                    assert answer.status_code == 200, answer.text
        finally:
            # Before the exporter's 5 s schedule: what arrives, the shutdown flushed.
            assert gateway.stop() == 0, gateway.output()
    exported = receiver.spans
    assert {span["service"] for span in exported} == {"n8n-gate"}
    assert not [span for span in exported if "readyz" in str(span["name"])]
    for key, trace_id in traces.items():
        trace = [span for span in exported if span["trace_id"] == trace_id]
        names = sorted(name for span in trace if not (name := str(span["name"])).isupper())
        assert names == sorted([TRIGGER_SPAN, "claim", "forward", "record"]), trace
        forward = next(span for span in trace if span["name"] == "forward")
        received = n8n.calls_for(key)[0].headers["traceparent"]
        assert received == f"00-{trace_id}-{forward['span_id']}-01"


def test_serve_refuses_an_otlp_protocol_it_cannot_export_with_one_line(database_url: str) -> None:
    env = cli_env(
        DATABASE_URL=database_url,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    done = run_cli("serve", "--port", "1", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "n8n-gate: OTEL_EXPORTER_OTLP_PROTOCOL=grpc: this gateway exports traces over OTLP/HTTP "
        "with protobuf only; set it to http/protobuf or unset it."
    ]
