"""A small HTTP/1.1 client for the one origin the gateway forwards to.

The forward is the gateway's only outgoing HTTP: one origin, keep-alive connections, request
bodies of known length, answers framed by Content-Length, chunked encoding or the connection's
close. That much fits here, on an asyncio protocol with httptools (the C parser uvicorn uses
for requests) reading the answers. It replaced aiohttp's client, on every new key's path: at
one connection on the 2-core machine a forward took 0.30-0.33 ms instead of 0.55 ms (medians),
and the gateway's CPU per new key fell by about a third (README, Benchmark).

Failures say how far the exchange got, because that decides whether n8n may have run the
workflow: `NotSent` (no connection, nothing written) or `NoAnswer` (written, no complete
answer). An answer is held in memory whole, so its body has a limit (`max_body_bytes`, before
and after decoding); a larger one is a `NoAnswer` too, and its connection is closed unread.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # as sent, minus Content-Encoding when decoded here
    body: bytes


class NotSent(Exception):
    """No byte of the request left the gateway."""

    def __init__(self, reason: str, *, dns: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.dns = dns
        self.timed_out = timed_out


class NoAnswer(Exception):
    """The request was written, but no complete answer came back (or one too large to take)."""

    def __init__(self, reason: str, *, timed_out: bool = False, too_large: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out
        self.too_large = too_large


class Origin:
    """Keep-alive connections to one origin, at most `max_connections` exchanges at once.

    A connection idle for `idle_seconds` is closed rather than reused: a server closes idle
    connections on its own schedule (Node: after 5 s), and a request written on a connection
    the server is closing fails without telling whether it arrived.
    """

    def __init__(
        self, base_url: str, *, max_connections: int, idle_seconds: float, max_body_bytes: int
    ) -> None:
        parts = urlsplit(base_url)
        secure = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if secure else 80)
        default_port = self.port == (443 if secure else 80)
        self.authority = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            self.authority = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        self._ssl = ssl.create_default_context() if secure else None
        self._idle_seconds = idle_seconds
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: deque[_Connection] = deque()

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        connect_timeout: float,
        total_timeout: float,
    ) -> Response:
        """One exchange; `total_timeout` bounds all of it, `connect_timeout` a new connection."""
        message = _request_bytes(method, target, self.authority, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise NotSent(
                f"all {self._max_connections} connections stayed busy for {total_timeout:g} s",
                timed_out=True,
            ) from None
        try:
            connection = self._reusable(loop.time()) or await self._connect(
                min(connect_timeout, deadline - loop.time())
            )
            return await self._exchange(connection, message, deadline)
        finally:
            self._slots.release()

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _reusable(self, now: float) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely to be stale
            if connection.open and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.close()
        return None

    async def _connect(self, within_seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within_seconds):
                _, connection = await loop.create_connection(
                    lambda: _Connection(max_body_bytes=self._max_body_bytes),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError:
            raise NotSent(f"no connection within {within_seconds:g} s", timed_out=True) from None
        except socket.gaierror as exc:
            raise NotSent(exc.strerror or str(exc), dns=True) from exc
        except OSError as exc:  # refused, unreachable, TLS handshake failed
            raise NotSent(exc.strerror or str(exc)) from exc
        return connection

    async def _exchange(self, connection: _Connection, message: bytes, deadline: float) -> Response:
        answer = connection.send(message)
        try:
            async with asyncio.timeout_at(deadline):
                response = await answer
        except TimeoutError:
            connection.close()
            raise NoAnswer("no answer in time", timed_out=True) from None
        except BaseException:  # lost, unparseable, or the caller was cancelled
            connection.close()
            raise
        if connection.keep_alive:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()
        return response


class _Connection(asyncio.Protocol):
    """One connection; one exchange at a time, answers parsed as they arrive."""

    def __init__(self, *, max_body_bytes: int) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Response] | None = None
        self._max_body_bytes = max_body_bytes
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._framed = False  # the answer says where its body ends
        self._headers_done = False
        self.open = False
        self.keep_alive = False
        self.idle_since = 0.0

    def send(self, message: bytes) -> asyncio.Future[Response]:
        assert self._transport is not None
        assert self._answer is None, "one exchange at a time"
        if not self.open:  # closed between connecting and now
            raise NotSent("the connection closed before the request was written")
        self._answer = asyncio.get_running_loop().create_future()
        self._start_answer()
        self._transport.write(message)
        return self._answer

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked: the server is not speaking HTTP/1.1 to us
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NoAnswer(f"unparseable answer ({exc})"))
            self.close()
            return
        if self._body_bytes > self._max_body_bytes:
            self._fail(_too_large(self._parser.get_status_code(), self._max_body_bytes))
            self.close()  # the rest of the body is not read at all

    def eof_received(self) -> bool:
        if self._answer is not None and not self._answer.done():
            if self._headers_done and not self._framed:  # the close ends the body
                self._complete(keep_alive=False)
            else:
                self._fail(NoAnswer("the connection closed before a complete answer"))
        self.open = False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(NoAnswer(f"the connection was lost ({exc or 'closed'})"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked")
        ):
            self._framed = True
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes <= self._max_body_bytes:  # beyond: data_received fails the answer
            self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the final one follows
            self._start_answer()
            return
        self._complete(keep_alive=self._parser.should_keep_alive())

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def _start_answer(self) -> None:
        self._headers, self._body, self._body_bytes = [], [], 0
        self._framed = self._headers_done = False

    def _complete(self, *, keep_alive: bool) -> None:
        if self._body_bytes > self._max_body_bytes:
            return  # data_received fails it once the parser returns
        assert self._answer is not None
        answer, self._answer = self._answer, None
        self.keep_alive = keep_alive and self.open
        if answer.done():  # the caller gave up (timeout, cancelled) and closes the connection
            return
        body = b"".join(self._body)
        try:
            response = _decoded(
                self._parser.get_status_code(), self._headers, body, self._max_body_bytes
            )
        except zlib.error as exc:  # the failed exchange closes the connection
            answer.set_exception(NoAnswer(f"undecodable compressed answer ({exc})"))
            return
        except NoAnswer as exc:
            answer.set_exception(exc)
            return
        answer.set_result(response)

    def _fail(self, error: NoAnswer) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self._answer = None


def _request_bytes(
    method: str, target: str, authority: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers)
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        # The server that parsed them rejects these; a line break here would split the request.
        raise ValueError("a header to forward holds a line break")
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n{fields}"
        f"Accept-Encoding: {ACCEPT_ENCODING}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _decoded(
    status: int, headers: list[tuple[str, str]], body: bytes, max_body_bytes: int
) -> Response:
    """The answer with a gzip or deflate body decoded (this client asked for those)."""
    encodings = [v.strip().lower() for k, v in headers if k.lower() == "content-encoding"]
    if len(encodings) == 1 and encodings[0] in ("gzip", "x-gzip", "deflate"):
        body = _decompress(body, encodings[0], max_body_bytes)
        if len(body) > max_body_bytes:
            raise _too_large(status, max_body_bytes, decoded=True)
        headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
    return Response(status=status, headers=headers, body=body)


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    if encoding != "deflate":
        return _inflate(body, zlib.MAX_WBITS | 16, max_bytes)
    try:  # "deflate" is zlib-wrapped by the standard, raw in some servers
        return _inflate(body, zlib.MAX_WBITS, max_bytes)
    except zlib.error:
        return _inflate(body, -zlib.MAX_WBITS, max_bytes)


def _inflate(body: bytes, wbits: int, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes of the decoded body: a few kilobytes of gzip can inflate
    to gigabytes, and one byte more than the limit is enough to refuse it."""
    inflater = zlib.decompressobj(wbits)
    decoded = inflater.decompress(body, max_bytes + 1)
    if len(decoded) <= max_bytes and not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return decoded


def _too_large(status: int, max_bytes: int, *, decoded: bool = False) -> NoAnswer:
    what = "once decoded " if decoded else ""
    return NoAnswer(f"its answer ({status}) is {what}larger than {max_bytes} bytes", too_large=True)
