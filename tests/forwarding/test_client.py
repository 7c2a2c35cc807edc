"""The n8n client against a raw server that answers byte for byte.

Every answer n8n (Node's HTTP server) can give must come back whole: framed by
Content-Length, chunked, or by the connection's close; compressed; after an interim 100; up to
the body limit. Every failure must say whether the request may have reached the server. And
whatever a misbehaving upstream sends, no answer is ever attributed to another request, and no
request is ever sent twice.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
import trustme
from aiohttp.http_writer import StreamWriter

from app.errors import ForwardFailed, N8nAnswerTooLarge, N8nTimeout, N8nUnreachable
from app.forwarding.client import N8nClient, N8nResponse, Outbound
from app.memory import ByteBudget
from tests.support.servers import refusing_port

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
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
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


class ClientFactory(Protocol):
    async def __call__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        max_answer_bytes: int = 1024 * 1024,
        answer_within: float = 2.0,
        budget: ByteBudget | None = None,
        reuse_connections: bool = True,
    ) -> N8nClient: ...


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
async def clients() -> AsyncIterator[ClientFactory]:
    opened: list[N8nClient] = []

    async def make(
        url: str,
        *,
        max_connections: int = 4,
        max_answer_bytes: int = 1024 * 1024,
        answer_within: float = 2.0,
        budget: ByteBudget | None = None,
        reuse_connections: bool = True,
    ) -> N8nClient:
        client = N8nClient(
            base_url=url,
            connect_timeout=1.0,
            timeout=answer_within,
            max_connections=max_connections,
            max_answer_bytes=max_answer_bytes,
            budget=budget,
            reuse_connections=reuse_connections,
        )
        await client.__aenter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.__aexit__(None, None, None)


async def post(
    client: N8nClient,
    body: bytes = b"{}",
    *,
    headers: list[tuple[str, str]] | None = None,
    method: str = "POST",
) -> N8nResponse:
    return await client.forward(
        Outbound(
            method=method,
            path="/webhook/orders",
            query="x=1",
            headers=headers if headers is not None else [("Content-Type", "application/json")],
            body=body,
        )
    )


def content_of(response: N8nResponse) -> bytes:
    return b"".join(response.body.chunks())


def header(response: N8nResponse, name: str) -> str | None:
    return response.header(name)


def request_headers(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in head)}


async def test_request_is_sent_as_given_and_the_connection_kept(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    server = await serve(Answer(OK), Answer(OK))
    client = await clients(server.url)
    first = await post(client, b'{"n":1}', headers=[("X-Trace", "a"), ("Idempotency-Key", "k")])
    second = await post(client, b'{"n":2}')
    assert (first.status, content_of(first), header(first, "content-type")) == (
        200,
        b'{"ok":true}',
        "application/json",
    )
    assert content_of(second) == b'{"ok":true}'
    assert server.connections == 1
    port = server.url.rsplit(":", 1)[1]
    assert server.requests[0].startswith(b"POST /webhook/orders?x=1 HTTP/1.1\r\n")
    assert server.requests[0].endswith(b'\r\n\r\n{"n":1}')
    # What the caller sent, plus only what HTTP needs: no User-Agent, Accept or Content-Type.
    assert request_headers(server.requests[0]) == {
        "host": f"localhost:{port}",
        "x-trace": "a",
        "idempotency-key": "k",
        "accept-encoding": "gzip, deflate",
        "content-length": "7",
    }


async def test_chunked_answer_is_reassembled(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n"
    )
    server = await serve(Answer(chunked), Answer(OK))
    client = await clients(server.url)
    assert content_of(await post(client)) == b"Wikipedia in \r\n\r\nchunks."
    assert content_of(await post(client)) == b'{"ok":true}'
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
    serve: RawServerFactory, clients: ClientFactory, first: Answer, status: int, body: bytes
) -> None:
    server = await serve(first, Answer(OK))
    client = await clients(server.url)
    answer = await post(client)
    assert (answer.status, content_of(answer)) == (status, body)
    assert content_of(await post(client)) == b'{"ok":true}'
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
    clients: ClientFactory,
    encoding: str,
    compress: Callable[[bytes], bytes],
) -> None:
    body = compress(b'{"compressed":true}')
    answer = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    server = await serve(Answer(answer))
    response = await post(await clients(server.url))
    assert content_of(response) == b'{"compressed":true}'
    assert header(response, "content-encoding") is None


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b'{"cut":"short"}' * 50)[:-12]],
    ids=["garbage", "truncated"],
)
async def test_an_undecodable_compressed_answer_is_no_answer(
    serve: RawServerFactory, clients: ClientFactory, body: bytes
) -> None:
    server = await serve(Answer(with_length(body, encoding="gzip")), Answer(OK))
    client = await clients(server.url)
    with pytest.raises(N8nUnreachable) as caught:
        await post(client)
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-connection-lost", True)
    assert content_of(await post(client)) == b'{"ok":true}'


async def test_other_encodings_keep_their_header_with_the_body(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\n\x0b\x01\x80"
    server = await serve(Answer(answer))
    response = await post(await clients(server.url))
    assert (content_of(response), header(response, "content-encoding")) == (b"\x0b\x01\x80", "br")


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
        # a gzip bomb: 64 MiB of zeros in about 64 KiB
        Answer(with_length(gzip.compress(bytes(64 * 1024 * 1024)), encoding="gzip")),
    ],
    ids=["content-length", "chunked", "until-close", "gzip", "deflate", "gzip-bomb"],
)
async def test_an_answer_over_the_limit_is_refused_and_its_connection_dropped(
    serve: RawServerFactory, clients: ClientFactory, answer: Answer
) -> None:
    server = await serve(answer, Answer(OK))
    client = await clients(server.url, max_answer_bytes=LIMIT)
    with pytest.raises(N8nAnswerTooLarge) as caught:
        await post(client)
    assert caught.value.cause == "n8n-answer-too-large"
    # The next answer is its own (on a new connection, or on this one if it was read whole).
    assert content_of(await post(client)) == b'{"ok":true}'


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_an_answer_at_the_limit_comes_back_whole(
    serve: RawServerFactory, clients: ClientFactory, encoding: str | None
) -> None:
    body = b"x" * LIMIT
    wire = gzip.compress(body) if encoding else body
    server = await serve(Answer(with_length(wire, encoding=encoding)), Answer(chunked(body)))
    client = await clients(server.url, max_answer_bytes=LIMIT)
    assert content_of(await post(client)) == body
    assert content_of(await post(client)) == body
    assert server.connections == 1


async def test_an_answer_to_head_has_no_body_whatever_its_length_says(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    server = await serve(Answer(head_answer), Answer(OK))
    client = await clients(server.url)
    response = await post(client, b"", method="HEAD", headers=[])
    assert (response.status, content_of(response), header(response, "content-type")) == (
        200,
        b"",
        "application/json",
    )
    assert content_of(await post(client)) == b'{"ok":true}'


async def test_interim_100_continue_is_skipped(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    server = await serve(Answer(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    response = await post(await clients(server.url))
    assert (response.status, content_of(response)) == (200, b'{"ok":true}')


async def test_connection_the_server_closed_while_idle_is_not_reused(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    server = await serve(Answer(OK, close=True), Answer(OK))
    client = await clients(server.url)
    await post(client)
    deadline = asyncio.get_running_loop().time() + 5
    while any(proto.is_connected() for conns in pooled(client) for proto, _ in conns):
        # until this side has seen the close
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert (await post(client)).status == 200
    assert server.connections == 2


def pooled(client: N8nClient) -> list[Any]:
    session = client._session
    assert session is not None
    return list(session.connector._conns.values())  # type: ignore[union-attr]


async def test_a_connection_closed_just_before_the_write_is_sent_again_on_a_new_one(
    serve: RawServerFactory, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n8n closed the kept-alive connection after its last answer, and the close lands
    between taking the connection and writing on it: nothing reached n8n, so the one resend
    the gateway allows itself is safe."""
    server = await serve(Answer(OK), Answer(OK))
    client = await clients(server.url)
    await post(client)
    armed = [True]

    def closing_first(write: Callable[..., None]) -> Callable[..., None]:
        def write_on_a_closing_connection(self: StreamWriter, data: Any) -> None:
            if armed:
                armed.clear()
                assert self.transport is not None
                self.transport.close()  # as if n8n's FIN had just been read
            write(self, data)

        return write_on_a_closing_connection

    for name in ("_write", "_writelines"):
        monkeypatch.setattr(StreamWriter, name, closing_first(getattr(StreamWriter, name)))
    response = await post(client, b'{"n":2}')
    assert content_of(response) == b'{"ok":true}'
    assert [r.endswith(b'{"n":2}') for r in server.requests] == [False, True]
    assert server.connections == 2


async def test_no_answer_in_time_is_a_timeout_after_sending(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    never = asyncio.Event()
    server = await serve(Answer(OK, hold=never))
    client = await clients(server.url, answer_within=0.2)
    with pytest.raises(N8nTimeout) as caught:
        await post(client)
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-read-timeout", True)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",  # cut inside the body
        b"HTTP/1.1 200 OK\r\nContent-Le",  # cut inside the head
        b"",  # closed without a byte
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        # one header of 32 MiB: refused at the limit, not read to its end
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (32 * 1024 * 1024) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 1000 + b"Content-Length: 0\r\n\r\n",
    ],
    ids=["cut-body", "cut-head", "closed", "not-http", "101", "huge-header", "many-headers"],
)
async def test_incomplete_or_unusable_answer_is_no_answer(
    serve: RawServerFactory, clients: ClientFactory, answer: bytes
) -> None:
    server = await serve(Answer(answer, close=True))
    with pytest.raises(N8nUnreachable) as caught:
        await post(await clients(server.url))
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-connection-lost", True)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 200_000,  # cut short
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1000\r\n\r\n"
        + b"not gzip" * 125,  # undecodable
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000,  # too large
    ],
    ids=["cut-short", "undecodable", "too-large"],
)
async def test_an_answer_that_fails_gives_its_bytes_back_at_once(
    serve: RawServerFactory, clients: ClientFactory, answer: bytes
) -> None:
    """Not at the next garbage collection: a traceback keeps the failed read alive until then,
    and n8n restarting cuts many answers short at once."""
    budget = ByteBudget(limit=64 * 1024 * 1024)
    server = await serve(Answer(answer, close=True))
    client = await clients(server.url, budget=budget)
    gc.disable()
    try:
        with pytest.raises(ForwardFailed):
            await post(client)
        assert budget.used == 0
    finally:
        gc.enable()
    assert budget.peak > 0 or answer.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000")


async def test_each_forward_has_a_connection_of_its_own_unless_reuse_is_asked_for(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    """n8n's graceful shutdown waits for its executions; a kept-alive connection keeps
    bringing new ones until n8n gives up and exits as crashed."""
    server = await serve(Answer(OK), Answer(OK), Answer(OK))
    client = await clients(server.url, reuse_connections=False)
    for _ in range(3):
        assert content_of(await post(client)) == b'{"ok":true}'
    assert server.connections == 3
    assert all(b"connection: close" in request.lower() for request in server.requests)


async def test_bytes_past_an_answer_s_framing_never_become_another_answer(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    """A second answer smuggled behind the first, in the same write, is nobody's answer."""
    smuggled = b"HTTP/1.1 200 OK\r\nSet-Cookie: stolen=1\r\nContent-Length: 5\r\n\r\nEVIL!"
    server = await serve(Answer(OK + smuggled), Answer(b""), Answer(OK))
    client = await clients(server.url)
    first = await post(client, b'{"tenant":"a"}')
    assert (content_of(first), header(first, "set-cookie")) == (b'{"ok":true}', None)
    try:
        second = await post(client, b'{"tenant":"b"}')
    except ForwardFailed:
        return  # refused to read on from that connection: fine, nothing misattributed
    assert content_of(second) != b"EVIL!"
    assert header(second, "set-cookie") is None


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET", "HEAD", "POST"])
async def test_a_request_is_never_sent_twice_when_a_kept_connection_drops(
    serve: RawServerFactory, clients: ClientFactory, method: str
) -> None:
    """aiohttp resends idempotent methods once on a reused connection that fails; the
    gateway must not: the first send may have run the workflow."""
    server = await serve(Answer(OK), Answer(b"", close=True), Answer(OK))
    client = await clients(server.url)
    await post(client)
    with pytest.raises(N8nUnreachable) as caught:
        await post(client, b"", method=method, headers=[])
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-connection-lost", True)
    assert len(server.requests) == 2  # the first request, and the dropped one once


async def test_refused_connection_is_not_sent(clients: ClientFactory) -> None:
    with refusing_port() as port:
        client = await clients(f"http://127.0.0.1:{port}")
        with pytest.raises(N8nUnreachable) as caught:
            await post(client)
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-connection-refused", False)


async def test_busy_connections_past_the_deadline_are_not_sent(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    release = asyncio.Event()
    server = await serve(Answer(OK, hold=release), Answer(OK))
    client = await clients(server.url, max_connections=1)
    first = asyncio.create_task(post(client))
    await server.received.wait()  # the only connection is taken
    with pytest.raises(N8nTimeout) as caught:
        await post(client)
    assert (caught.value.cause, caught.value.maybe_ran) == ("n8n-connect-timeout", False)
    release.set()
    assert (await first).status == 200
    assert len(server.requests) == 1


async def test_https_origin_verifies_its_certificate(
    serve: RawServerFactory, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    server = await serve(Answer(OK), Answer(OK), ssl_context=server_context)

    with pytest.raises(N8nUnreachable, match="certificate") as caught:  # nothing is sent
        await post(await clients(server.url))
    assert not caught.value.maybe_ran

    with authority.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # read when the client starts
        trusted = await clients(server.url)
    assert content_of(await post(trusted)) == b'{"ok":true}'
    assert len(server.requests) == 1


async def test_https_proxy_from_the_environment_is_used(
    serve: RawServerFactory, clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-HTTP proxy gets the absolute URL of n8n (HTTP_PROXY, as HTTPS_PROXY for https)."""
    proxy = await serve(Answer(OK))
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("localhost", "127.0.0.1"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = await clients("http://n8n.internal:5678")
    assert content_of(await post(client)) == b'{"ok":true}'
    assert proxy.requests[0].startswith(
        b"POST http://n8n.internal:5678/webhook/orders?x=1 HTTP/1.1\r\n"
    )


async def test_a_failure_s_detail_keeps_the_query_string_out(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    """Queries may carry a caller's secrets; details are stored, returned and logged."""
    server = await serve(Answer(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", close=True))
    client = await clients(server.url)
    outbound = Outbound("POST", "/webhook/x", "api_key=SECRET123", [], b"{}")
    with pytest.raises(N8nUnreachable) as caught:
        await client.forward(outbound)
    assert "SECRET123" not in caught.value.detail


async def test_an_empty_encoded_answer_is_not_decoded(
    serve: RawServerFactory, clients: ClientFactory
) -> None:
    """A HEAD answer carries GET's Content-Encoding, and no body to decode."""
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 30\r\n\r\n"
    server = await serve(Answer(head))
    response = await post(await clients(server.url), b"", method="HEAD", headers=[])
    assert (response.status, content_of(response)) == (200, b"")
