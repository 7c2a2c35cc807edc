"""The HTTP server's protocol: uvicorn's httptools protocol with the bounds it lacks.

httptools takes a request head of any size (one 64 MiB header cost seconds of CPU, quadratic in
its size, before the 401) and uvicorn waits for an incomplete head forever (no timer runs until
a first response). This subclass answers 431 once a head passes `max_head_bytes`, and closes a
connection whose head has not arrived whole within `head_timeout_seconds` of its first byte (or
of the connection, for one that sends nothing). Each request's scope also carries a way to drop
its connection, which answers use on a caller too slow to read them (app/sending.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings
from app.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from app.sending import ABORT_EXTENSION

LINGER_SECONDS = 1.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops parsing, uvicorn answers with
    `send_400_response`, which answers 431 instead."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head_bytes = settings.max_head_bytes
        self._head_timeout_seconds = settings.head_timeout_seconds
        self._head_bytes = 0  # as received, for a head that does not end
        self._head_size = 0  # as parsed: line and headers, for one that ends in one read
        self._head_over = False
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # refused already
            return
        if self._in_head:
            self._start_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        # Counted after the parser had the data: a head that ended in it, body and all, is fine.
        if self._in_head and self._head_bytes > self._max_head_bytes and self.parser is not None:
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {ABORT_EXTENSION: self._abort}  # type: ignore[dict-item]
        self._in_head = True  # the next request on a kept-alive connection
        self._head_size = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._max_head_bytes:
            self._head_over = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        if self._head_over:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def _abort(self) -> None:
        """Drops the connection and what its write buffer holds (a caller too slow to read)."""
        self.transport.abort()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout_seconds, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._in_head:
            self.transport.close()

    def _refuse_head(self) -> None:
        problem = {
            "type": PROBLEM_TYPE_BASE + "request-head-too-large",
            "title": "Request head too large",
            "status": 431,
            "detail": (
                f"The request line and headers are over {self._max_head_bytes} bytes "
                "(GATE_MAX_HEAD_BYTES)."
            ),
        }
        body = json.dumps(problem).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            f"content-type: {PROBLEM_CONTENT_TYPE}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self._stop_head_timer()
        self.transport.write(head.encode() + body)
        # A lingering close: the client is likely still sending, and closing now would reset
        # the connection and lose the answer. Half-close, read on and discard, close soon.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
        self.parser = None  # type: ignore[assignment]
