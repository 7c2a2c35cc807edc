"""Every request gets an id: the caller's `X-Request-Id` when it is a plausible one, else a new
one. It is bound to the request's log records and sent back on the answer; the trigger edges
forward it to n8n (`forwarded_with_id`; an async trigger stores it with its request, so its
delivery carries it too). The request's own headers are left as sent: a provider route may
take its key from X-Request-Id."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import current, new_context

HEADER = b"x-request-id"
# What an id from a caller may be: short, and nothing a log line or a header could trip on.
_VALID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent = [(n, v) for n, v in message.get("headers", []) if n.lower() != HEADER]
                message = {**message, "headers": [*sent, (HEADER, request_id)]}
            await send(message)

        # Not reset afterwards: each request runs in a task of its own, and the error handler
        # outside this middleware (Starlette's, outermost) logs a 500 in this request's context.
        new_context(request_id=request_id.decode())
        await self.app(scope, receive, send_with_id)


def _request_id(scope: Scope) -> bytes:
    sent = [value for name, value in scope["headers"] if name == HEADER]
    if len(sent) == 1 and _VALID.fullmatch(sent[0]):
        return bytes(sent[0])
    return uuid.uuid4().hex.encode()


def forwarded_with_id(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers for n8n, with this request's id in place of any X-Request-Id sent."""
    request_id = current("request_id")
    if request_id is None:
        return headers
    kept = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
    return [*kept, ("X-Request-Id", str(request_id))]
