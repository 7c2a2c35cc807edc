"""Every request gets an id: the caller's `X-Request-Id` when it is a plausible one, else a new
one. It is bound to the request's log records, sent back on the answer, and forwarded to n8n
(an async trigger stores it with its request, so its delivery carries it too)."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import new_context, reset_context

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
        headers = [(name, value) for name, value in scope["headers"] if name != HEADER]
        scope = {**scope, "headers": [*headers, (HEADER, request_id)]}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent = [(n, v) for n, v in message.get("headers", []) if n.lower() != HEADER]
                message = {**message, "headers": [*sent, (HEADER, request_id)]}
            await send(message)

        token = new_context(request_id=request_id.decode())
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_context(token)


def _request_id(scope: Scope) -> bytes:
    sent = [value for name, value in scope["headers"] if name == HEADER]
    if len(sent) == 1 and _VALID.fullmatch(sent[0]):
        return bytes(sent[0])
    return uuid.uuid4().hex.encode()
