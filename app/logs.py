"""Logging under `n8n-gate serve`: every record of the app and of uvicorn through one setup,
human-readable lines or JSON lines (GATE_LOG_FORMAT); a JSON line carries the context of the
request it belongs to (request id, tenant, idempotency key, workflow) and what its caller adds
(execution, attempt, error type).

The standard library's logging with a small JSON formatter, rather than structlog: every record
here, uvicorn's included, already goes through `logging`, and the context the gateway binds is a
handful of fields that a `contextvars` variable carries into every task a request starts (its
forward runs on after the caller left) — docs/adr/0006-logging.md.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from uvicorn.config import LOGGING_CONFIG

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The context a record may carry, in the order a JSON line shows it. Never a header, a body, a
# key or a signature: only what an operator searches by.
FIELDS = (
    "request_id",
    "tenant",
    "tenant_id",
    "idempotency_key",
    "workflow",
    "route",
    "execution_id",
    "attempt",
    "error_type",
    "reason",
    "trace_id",  # with traces on (app/tracing.py)
    "span_id",
)

_NOTHING: Mapping[str, object] = MappingProxyType({})
_context: ContextVar[Mapping[str, object]] = ContextVar("n8n_gate_log_context", default=_NOTHING)


def bind(**fields: object) -> None:
    """Adds `fields` to the context of every record logged from here on, in this task and the
    tasks it starts."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def new_context(**fields: object) -> Token[Mapping[str, object]]:
    """A context of its own for a request; `reset_context(token)` ends it."""
    return _context.set({k: v for k, v in fields.items() if v is not None})


def reset_context(token: Token[Mapping[str, object]]) -> None:
    _context.reset(token)


def current(field: str) -> object | None:
    return _context.get().get(field)


class ContextFilter(logging.Filter):
    """Puts the bound context on each record (what a call passes in `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class WithoutQuery(logging.Filter):
    """uvicorn's access line shows the path without its query string: a webhook's caller may
    put a token there (`?token=...`), as the traces leave it out too."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(level: str, log_format: LogFormat = "text") -> dict[str, Any]:
    """uvicorn's logging setup, with the app's records too, in one format."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["app"] = {"format": TEXT_FORMAT}
    config["handlers"]["app"] = {
        "formatter": "app",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["app"] = {"handlers": ["app"], "level": level, "propagate": False}
    config["filters"] = {"context": {"()": ContextFilter}, "without_query": {"()": WithoutQuery}}
    for handler in config["handlers"].values():
        handler["filters"] = ["context"]
    config["handlers"]["access"]["filters"].append("without_query")
    # OpenTelemetry warns of each malformed member of a caller's tracestate, quoting it, before
    # any authentication: anyone could write WARNING lines of their own text.
    config["loggers"]["opentelemetry.trace.span"] = {"level": "ERROR"}
    # Everything else that logs (asyncio, asyncpg...) goes through the same handler, warnings up.
    config["root"] = {"handlers": ["app"], "level": "WARNING"}
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": JsonFormatter}
    return config
