"""The edge's view of problems: RFC 9457 answers, their OpenAPI description, and the app's
handlers. Errors from below that are not problem types (a database out of reach) become one
here, and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import db
from app.errors import (
    PROBLEM_CONTENT_TYPE,
    DatabaseUnavailable,
    GateError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
)
from app.logs import current

logger = logging.getLogger(__name__)


class Problem(BaseModel):
    """An RFC 9457 problem, as every error is answered (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def documented(*errors: type[GateError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problems a route may answer with."""
    by_status: dict[int, list[str]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(f"`{error.slug}`: {error.title}")
    return {
        status: {
            "description": "; ".join(titles),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": Problem.model_json_schema()}},
        }
        for status, titles in sorted(by_status.items())
    }


def problem_response(error: GateError, *, instance: str | None = None) -> Response:
    return Response(
        error.problem_json(instance=instance),
        status_code=error.status_code,
        headers=error.headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def as_problem(error: db.DatabaseUnreachable) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        "The gateway cannot reach its database right now; nothing was forwarded. "
        "Retry with the same Idempotency-Key.",
        headers={"Retry-After": "5"},
    )


def install_handlers(app: FastAPI) -> None:
    async def on_gate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GateError)
        return problem_response(exc, instance=request.url.path)

    async def on_database_unreachable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, db.DatabaseUnreachable)
        return problem_response(as_problem(exc), instance=request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(_from_http_exception(exc), instance=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = InvalidRequest(_describe_validation(exc.errors()), extra={"errors": _errors(exc)})
        return problem_response(error, instance=request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        error = InternalError("The gateway hit an unexpected error; it has been logged.")
        response = problem_response(error, instance=request.url.path)
        request_id = current("request_id")  # this handler runs outside RequestIds
        if request_id is not None:
            response.headers["X-Request-Id"] = str(request_id)
        return response

    app.add_exception_handler(GateError, on_gate_error)
    app.add_exception_handler(db.DatabaseUnreachable, on_database_unreachable)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def _from_http_exception(exc: StarletteHTTPException) -> GateError:
    if exc.status_code == 404:
        return NotFound("No such endpoint. Triggers go to /webhook/<path>; see the README.")
    if exc.status_code == 405:
        return MethodNotAllowed(
            "This endpoint does not accept that method.", headers=exc.headers or {}
        )
    error = InternalError(str(exc.detail), headers=exc.headers or {})
    error.status_code = exc.status_code  # type: ignore[misc]
    return error


def _errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"location": ".".join(str(part) for part in err["loc"]), "message": err["msg"]}
        for err in exc.errors()
    ]


def _describe_validation(errors: Sequence[Any]) -> str:
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}. Fix the request and send it again."
