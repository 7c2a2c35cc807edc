"""Traces (OpenTelemetry): on when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set,
off otherwise, at no cost: nothing of OpenTelemetry is imported, no middleware wraps the app, and
every helper here returns at once (docs/adr/0007-tracing.md).

On, each process (each `serve --workers N` worker, in its app factory) has a tracer provider of
its own that exports over OTLP/HTTP as the standard OTEL_* variables say, and flushes it when
its lifespan ends. The server span wraps the whole ASGI app, the trigger middlewares included;
asyncpg's statements are spans (their text, never their parameters); the gateway's own spans are
`claim`, `accept`, `forward` (a client span per request sent to n8n, whose context n8n gets in
`traceparent`), `record`, and `deliver` for an async delivery's attempt, which continues the
trace of the request that was accepted.

Span attributes carry what the log lines carry (key, workflow, execution, attempt, outcome):
never a header, a query string or a body. Log records made under a span carry its `trace_id`
and `span_id`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span as Span
    from opentelemetry.trace import Tracer
    from opentelemetry.util.types import AttributeValue

SERVICE_NAME = "n8n-gate"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The gateway's own attributes are namespaced, as OpenTelemetry asks of non-standard ones.
PREFIX = "n8n_gate."
# Not traced by default: probes and scrapes, every few seconds (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS
# replaces this list). Matched against the request's whole URL.
EXCLUDED_URLS = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)(\?.*)?$"
SHUTDOWN_SECONDS = 5.0
NO_HEADER = "(?!)"  # a regular expression that matches nothing

Kind = Literal["internal", "client", "consumer"]


logger = logging.getLogger(__name__)
_NO_SPAN: AbstractContextManager[None] = nullcontext()


class TracingConfigError(Exception):
    """The OTEL_* variables ask for something this gateway cannot do."""


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: Tracer
    instrumentations: list[Any]
    previous_log_record_factory: Callable[..., logging.LogRecord]
    apps: list[Any] = field(default_factory=list)


_active: _Tracing | None = None
_lock = threading.Lock()


# --- Setup, once per process ---


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def active() -> bool:
    return _active is not None


def start(processor: SpanProcessor | None = None) -> None:
    """Traces for this process: to `processor` (tests), else to the OTLP/HTTP exporter the
    standard OTEL_EXPORTER_OTLP_* variables configure. Once per process: again, nothing.

    Variables this gateway cannot follow leave traces off with an error logged, rather than
    stop a worker (a supervisor would start it again and again): `check_environment` is for
    refusing them before serving."""
    global _active
    with _lock:
        if _active is not None:
            return
        try:
            chosen = processor if processor is not None else _otlp_processor()
        except TracingConfigError as exc:
            logger.error("traces stay off: %s", exc)
            return
        _active = _build(chosen)
    logger.info("traces on: exporting spans")


def check_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Raises TracingConfigError when the OTEL_* variables ask for an exporter this gateway
    does not have (`serve` may call it first, for a one-line message)."""
    for name in PROTOCOL_VARIABLES:
        protocol = environ.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            raise TracingConfigError(
                f"{name}={protocol}: this gateway exports traces over OTLP/HTTP with protobuf "
                "only; set it to http/protobuf or unset it."
            )


def _otlp_processor() -> SpanProcessor:
    check_environment()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter())


def _build(processor: SpanProcessor) -> _Tracing:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.instance.id": str(uuid.uuid4())})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # Its shutdown is the lifespan's: a spawned worker exits without running atexit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.sampler = _no_lone_queries(provider.sampler)  # before any tracer takes it
    provider.add_span_processor(processor)
    queries = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    queries.instrument(tracer_provider=provider)
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_with_trace_ids(previous))
    return _Tracing(provider, provider.get_tracer("app"), [queries], previous)


def _with_trace_ids(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """`factory`, with the current span's `trace_id` and `span_id` on each record made while
    one is current (JSON log lines show them, app/logs.py)."""
    from opentelemetry.trace import get_current_span

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        context = get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = f"{context.trace_id:032x}"
            record.span_id = f"{context.span_id:016x}"
        return record

    return make


# What marks a statement's span, under the old and the new semantic conventions.
_QUERY_MARKS = frozenset({"db.system", "db.system.name"})


def _no_lone_queries(sampler: Sampler) -> Sampler:
    """`sampler` (OTEL_TRACES_SAMPLER's), except that a statement outside any span is dropped:
    the delivery workers' and the reaper's polls would each be a trace of their own, every
    second."""
    from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
    from opentelemetry.sdk.trace.sampling import Sampler as SamplerBase
    from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
    from opentelemetry.util.types import Attributes

    class NoLoneQueries(SamplerBase):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> SamplingResult:
            parent = get_current_span(parent_context).get_span_context()
            if not parent.is_valid and attributes and not _QUERY_MARKS.isdisjoint(attributes):
                return SamplingResult(Decision.DROP)
            return sampler.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"NoLoneQueries{{{sampler.get_description()}}}"

    return NoLoneQueries()


def instrument(app: Any) -> None:
    """With traces on, a server span around the whole ASGI app (the trigger middlewares run
    ahead of FastAPI's routing, inside it), named by route template."""
    if _active is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    excluded = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", EXCLUDED_URLS)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_active.provider,
        meter_provider=NoOpMeterProvider(),  # metrics are prometheus-client's (/metrics)
        excluded_urls=excluded,
        server_request_hook=_without_query,
        # Never a header in a span, whatever OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* say:
        # credentials, signatures and keys travel in headers of any name. A pattern that
        # matches no name: an empty list counts as unset, and the variables then apply.
        http_capture_headers_server_request=[NO_HEADER],
        http_capture_headers_server_response=[NO_HEADER],
        exclude_spans=["receive", "send"],
    )
    _active.apps.append(app)


def _without_query(span: Span, scope: dict[str, Any]) -> None:
    """The server span's URL without its query string, which may carry a webhook's token."""
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    if "http.target" in attributes:
        span.set_attribute("http.target", str(scope.get("path", "")))
    if "http.url" in attributes:
        span.set_attribute("http.url", str(attributes["http.url"]).split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "REDACTED")


async def shutdown(seconds: float = SHUTDOWN_SECONDS) -> None:
    """Export what is left and stop (the lifespan's end), waiting at most `seconds`: an
    unreachable collector does not hold up the process's exit."""
    global _active
    with _lock:
        tracing, _active = _active, None
    if tracing is None:
        return
    if tracing.apps:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        for app in tracing.apps:
            FastAPIInstrumentor.uninstrument_app(app)
    for instrumentation in tracing.instrumentations:
        instrumentation.uninstrument()
    logging.setLogRecordFactory(tracing.previous_log_record_factory)
    done = threading.Event()

    def stop() -> None:
        try:
            tracing.provider.shutdown()
        finally:
            done.set()

    threading.Thread(target=stop, name="tracing-shutdown", daemon=True).start()
    if not await asyncio.to_thread(done.wait, seconds):
        logger.warning("traces: the exporter did not finish within %g s; spans lost", seconds)


# --- Spans: each a no-op while tracing is off ---


def span(
    name: str,
    *,
    kind: Kind = "internal",
    attributes: Mapping[str, AttributeValue] | None = None,
    **gate: AttributeValue | None,
) -> AbstractContextManager[Span | None]:
    """A span around a block, current within it; `gate` are the gateway's own attributes
    (`n8n_gate.<name>`), `attributes` standard ones. An exception ends it as an error named by
    the exception's cause, slug or class (never its message)."""
    if _active is None:
        return _NO_SPAN
    return _span(_active.tracer, name, kind, _attributes(attributes, gate), None)


def continued(
    headers: Iterable[tuple[str, str]],
    name: str,
    *,
    kind: Kind = "consumer",
    **gate: AttributeValue | None,
) -> AbstractContextManager[Span | None]:
    """A span whose parent is the trace context in `headers` (a stored request's): an async
    delivery's attempt continues the trace of the request that was accepted."""
    if _active is None:
        return _NO_SPAN
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {key.lower(): value for key, value in headers if key.lower() in _CONTEXT_HEADERS}
    parent = TraceContextTextMapPropagator().extract(carrier)
    return _span(_active.tracer, name, kind, _attributes(None, gate), parent)


_CONTEXT_HEADERS = (TRACEPARENT, TRACESTATE)


@contextmanager
def _span(
    tracer: Tracer,
    name: str,
    kind: Kind,
    attributes: dict[str, AttributeValue],
    parent: Context | None,
) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind[kind.upper()],
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            error = _error_type(exc)
            current.set_attribute("error.type", error)
            if int(getattr(exc, "status_code", 500)) >= 500:  # a refusal is an answer, not a fault
                current.set_status(Status(StatusCode.ERROR, error))
            raise


def _error_type(exc: BaseException) -> str:
    for name in ("cause", "slug"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            return value
    return type(exc).__qualname__


def _attributes(
    standard: Mapping[str, AttributeValue] | None, gate: Mapping[str, AttributeValue | None]
) -> dict[str, AttributeValue]:
    attributes = dict(standard or {})
    attributes.update({PREFIX + name: value for name, value in gate.items() if value is not None})
    return attributes


def note(span: Span | None, **gate: AttributeValue | None) -> None:
    """Adds the gateway's attributes to `span` (None while tracing is off)."""
    if span is not None and span.is_recording():
        span.set_attributes(_attributes(None, gate))


def note_current(**gate: AttributeValue | None) -> None:
    """Adds the gateway's attributes to the current span (the request's, at the edge)."""
    if _active is None:
        return
    from opentelemetry.trace import get_current_span

    note(get_current_span(), **gate)


def note_standard(span: Span | None, attributes: Mapping[str, AttributeValue]) -> None:
    if span is not None and span.is_recording():
        span.set_attributes(attributes)


# --- Propagation: what n8n and the stored request carry while tracing is on ---


def inject(headers: MutableMapping[str, str]) -> None:
    """Puts the current span's context in `headers` in place of any sent (a forward's, so n8n
    continues the gateway's trace); the incoming tracestate rides on in that context."""
    if _active is None:
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    for name in _CONTEXT_HEADERS:
        if name in headers:
            del headers[name]  # every line of it, in a multidict
    TraceContextTextMapPropagator().inject(headers)


def with_context(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` carrying the current span's context in place of any sent: an async trigger's
    stored request, so that its delivery continues this trace. Unchanged while tracing is off."""
    if _active is None:
        return headers
    carrier: dict[str, str] = {}
    inject(carrier)
    kept = [(name, value) for name, value in headers if name.lower() not in _CONTEXT_HEADERS]
    return [*kept, *carrier.items()]
