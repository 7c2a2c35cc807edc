"""The forwarding client's HTTP/1.1, against a raw server that answers byte for byte.

Every answer n8n (Node's HTTP server) can give must come back whole: framed by
Content-Length, chunked, or by the connection's close; compressed; after an interim 100; up to
the body limit. Every failure must say whether the request may have reached the server.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import pytest
import trustme

from app.forwarding.http1 import NoAnswer, NotSent, Origin, Response
from tests.servers import refusing_port

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


@dataclass
class Answer:
    data: bytes
    close: bool = False  # close the connection after writing `data`
    hold: asyncio.Event | None = None  # write only once this is set


@dataclass
class RawServer:
    """Answers the n-th request with the n-th `Answer`; records what it received."""

    answers: list[Answer]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    received: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                self.received.set()
                answer = self.answers.pop(0)
                if answer.hold is not None:
                    await answer.hold.wait()
                writer.write(answer.data)
                await writer.drain()
                if answer.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class RawServerFactory(Protocol):
    async def __call__(
        self, *answers: Answer, ssl_context: ssl.SSLContext | None = None
    ) -> RawServer: ...


class OriginFactory(Protocol):
    def __call__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        idle_seconds: float = 4.0,
        max_body_bytes: int = 1024 * 1024,
    ) -> Origin: ...


@pytest.fixture
async def serve() -> AsyncIterator[RawServerFactory]:
    servers: list[tuple[asyncio.Server, RawServer]] = []

    async def start(*answers: Answer, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        raw = RawServer(list(answers))
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=ssl_context)
        servers.append((server, raw))
        scheme = "https" if ssl_context else "http"
        raw.url = f"{scheme}://localhost:{server.sockets[0].getsockname()[1]}"
        return raw

    yield start
    for server, raw in servers:
        server.close()
        # Since Python 3.12.1 wait_closed() also waits for the connections: a handler still
        # holding its answer would keep it open for good.
        for writer in raw.writers:
            writer.close()
        await server.wait_closed()


@pytest.fixture
async def origins() -> AsyncIterator[OriginFactory]:
    opened: list[Origin] = []

    def make(
        url: str,
        *,
        max_connections: int = 4,
        idle_seconds: float = 4.0,
        max_body_bytes: int = 1024 * 1024,
    ) -> Origin:
        origin = Origin(
            url,
            max_connections=max_connections,
            idle_seconds=idle_seconds,
            max_body_bytes=max_body_bytes,
        )
        opened.append(origin)
        return origin

    yield make
    for origin in opened:
        await origin.close()


async def post(
    origin: Origin, body: bytes = b"{}", *, headers: list[tuple[str, str]] | None = None
) -> Response:
    return await origin.request(
        "POST",
        "/webhook/orders?x=1",
        headers or [("Content-Type", "application/json")],
        body,
        connect_timeout=1.0,
        total_timeout=2.0,
    )


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k.lower() == name), None)


async def test_request_is_sent_as_given_and_the_connection_kept(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    server = await serve(Answer(OK), Answer(OK))
    origin = origins(server.url)
    first = await post(origin, b'{"n":1}', headers=[("X-Trace", "a"), ("Idempotency-Key", "k")])
    second = await post(origin, b'{"n":2}')
    assert (first.status, first.body, header(first, "content-type")) == (
        200,
        b'{"ok":true}',
        "application/json",
    )
    assert second.body == b'{"ok":true}'
    assert server.connections == 1
    port = server.url.rsplit(":", 1)[1]
    assert server.requests[0] == (
        b"POST /webhook/orders?x=1 HTTP/1.1\r\n"
        + f"Host: localhost:{port}\r\n".encode()
        + b"X-Trace: a\r\nIdempotency-Key: k\r\nAccept-Encoding: gzip, deflate\r\n"
        + b'Content-Length: 7\r\n\r\n{"n":1}'
    )


async def test_chunked_answer_is_reassembled(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    )
    server = await serve(Answer(chunked), Answer(OK))
    origin = origins(server.url)
    assert (await post(origin)).body == b"Wikipedia in \r\n\r\nchunks."
    assert (await post(origin)).body == b'{"ok":true}'
    assert server.connections == 1


@pytest.mark.parametrize(
    ("first", "status", "body"),
    [
        # no length: the close ends the body
        (
            Answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", close=True),
            200,
            b"all of it",
        ),
        # the server says it closes; this side must not wait for it
        (Answer(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"), 204, b""),
    ],
)
async def test_a_closing_answer_is_whole_and_its_connection_not_reused(
    serve: RawServerFactory, origins: OriginFactory, first: Answer, status: int, body: bytes
) -> None:
    server = await serve(first, Answer(OK))
    origin = origins(server.url)
    answer = await post(origin)
    assert (answer.status, answer.body) == (status, body)
    assert (await post(origin)).body == b'{"ok":true}'
    assert server.connections == 2


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw deflate
    ],
)
async def test_compressed_answers_are_decoded(
    serve: RawServerFactory,
    origins: OriginFactory,
    encoding: str,
    compress: Callable[[bytes], bytes],
) -> None:
    body = compress(b'{"compressed":true}')
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    server = await serve(Answer(answer))
    response = await post(origins(server.url))
    assert response.body == b'{"compressed":true}'
    assert header(response, "content-encoding") is None


async def test_other_encodings_keep_their_header_with_the_body(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\n\x0b\x01\x80"
    server = await serve(Answer(answer))
    response = await post(origins(server.url))
    assert (response.body, header(response, "content-encoding")) == (b"\x0b\x01\x80", "br")


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b'{"cut":"short"}')[:-6]],
    ids=["garbage", "truncated"],
)
async def test_an_undecodable_compressed_answer_is_no_answer_and_its_connection_dropped(
    serve: RawServerFactory, origins: OriginFactory, body: bytes
) -> None:
    server = await serve(Answer(with_length(body, encoding="gzip")), Answer(OK))
    origin = origins(server.url)
    with pytest.raises(NoAnswer, match="undecodable compressed answer") as caught:
        await post(origin)
    assert not caught.value.too_large
    assert not caught.value.timed_out
    assert (await post(origin)).body == b'{"ok":true}'
    assert server.connections == 2


def with_length(body: bytes, *, encoding: str | None = None) -> bytes:
    coding = f"Content-Encoding: {encoding}\r\n" if encoding else ""
    head = f"HTTP/1.1 200 OK\r\n{coding}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    chunks = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:half], body[half:]))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


LIMIT = 1000


@pytest.mark.parametrize(
    "answer",
    [
        Answer(with_length(b"x" * (LIMIT + 1))),
        Answer(chunked(b"x" * (LIMIT + 1))),
        Answer(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (LIMIT + 1), close=True),
        # small on the wire, over the limit once decoded
        Answer(with_length(gzip.compress(b"x" * (LIMIT + 1)), encoding="gzip")),
        Answer(with_length(zlib.compress(b"x" * (LIMIT + 1)), encoding="deflate")),
    ],
    ids=["content-length", "chunked", "until-close", "gzip", "deflate"],
)
async def test_an_answer_over_the_limit_is_refused_and_its_connection_dropped(
    serve: RawServerFactory, origins: OriginFactory, answer: Answer
) -> None:
    server = await serve(answer, Answer(OK))
    origin = origins(server.url, max_body_bytes=LIMIT)
    with pytest.raises(NoAnswer) as caught:
        await post(origin)
    assert caught.value.too_large
    assert not caught.value.timed_out
    assert (await post(origin)).body == b'{"ok":true}'
    assert server.connections == 2


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_an_answer_at_the_limit_comes_back_whole(
    serve: RawServerFactory, origins: OriginFactory, encoding: str | None
) -> None:
    body = b"x" * LIMIT
    wire = gzip.compress(body) if encoding else body
    server = await serve(Answer(with_length(wire, encoding=encoding)), Answer(chunked(body)))
    origin = origins(server.url, max_body_bytes=LIMIT)
    assert (await post(origin)).body == body
    assert (await post(origin)).body == body
    assert server.connections == 1


async def test_interim_100_continue_is_skipped(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    server = await serve(Answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    response = await post(origins(server.url))
    assert (response.status, response.body) == (200, b'{"ok":true}')


async def test_idle_connection_past_its_time_is_not_reused(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    server = await serve(Answer(OK), Answer(OK))
    origin = origins(server.url, idle_seconds=0)
    await post(origin)
    await post(origin)
    assert server.connections == 2


async def test_connection_the_server_closed_while_idle_is_not_reused(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    server = await serve(Answer(OK, close=True), Answer(OK))
    origin = origins(server.url)
    await post(origin)
    deadline = asyncio.get_running_loop().time() + 5
    while any(c.open for c in origin._idle):  # until this side has seen the close
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert (await post(origin)).status == 200
    assert server.connections == 2


async def test_no_answer_in_time_is_a_timeout_after_sending(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    never = asyncio.Event()
    server = await serve(Answer(OK, hold=never))
    origin = origins(server.url)
    with pytest.raises(NoAnswer) as caught:
        await origin.request(
            "POST", "/webhook/slow", [], b"{}", connect_timeout=1, total_timeout=0.2
        )
    assert caught.value.timed_out
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",  # cut inside the body
        b"HTTP/1.1 200 OK\r\nContent-Le",  # cut inside the head
        b"",  # closed without a byte
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP
    ],
)
async def test_incomplete_answer_is_no_answer(
    serve: RawServerFactory, origins: OriginFactory, answer: bytes
) -> None:
    server = await serve(Answer(answer, close=True))
    with pytest.raises(NoAnswer) as caught:
        await post(origins(server.url))
    assert not caught.value.timed_out


async def test_refused_connection_is_not_sent(origins: OriginFactory) -> None:
    with refusing_port() as port, pytest.raises(NotSent) as caught:
        await post(origins(f"http://127.0.0.1:{port}"))
    assert not caught.value.timed_out
    assert not caught.value.dns


async def test_busy_connections_past_the_deadline_are_not_sent(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    release = asyncio.Event()
    server = await serve(Answer(OK, hold=release), Answer(OK))
    origin = origins(server.url, max_connections=1)
    first = asyncio.create_task(post(origin))
    await server.received.wait()  # the only connection is taken
    with pytest.raises(NotSent) as caught:
        await origin.request("POST", "/webhook/x", [], b"", connect_timeout=1, total_timeout=0.1)
    assert caught.value.timed_out
    assert "busy" in str(caught.value)
    release.set()
    assert (await first).status == 200
    assert len(server.requests) == 1


async def test_header_with_a_line_break_is_refused_before_sending(
    serve: RawServerFactory, origins: OriginFactory
) -> None:
    server = await serve(Answer(OK))
    with pytest.raises(ValueError, match="line break"):
        await post(origins(server.url), headers=[("X-Evil", "a\r\nX-Injected: 1")])
    assert server.requests == []


async def test_https_origin_verifies_its_certificate(
    serve: RawServerFactory, origins: OriginFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    server = await serve(Answer(OK), Answer(OK), ssl_context=server_context)

    with pytest.raises(NotSent, match="certificate"):  # not trusted: nothing is sent
        await post(origins(server.url))

    with authority.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # read when the origin is created
        trusted = origins(server.url)
    assert (await post(trusted)).body == b'{"ok":true}'
    assert len(server.requests) == 1
