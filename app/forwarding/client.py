"""The one client that talks to n8n, on aiohttp (docs/adr/0003-forwarding-client.md).

Every failure says whether the request may have reached n8n: nothing sent (refused, DNS,
TLS, connect timeout, every connection busy) or sent without a usable answer (timeout,
connection lost, unparseable or oversized answer). The unknown-outcome policy rests on that
line, so the client never resends on its own: aiohttp would resend a GET, HEAD, PUT or
DELETE once when a kept-alive connection fails, a second workflow run no attempt records.

While n8n starts it answers with pages of its own (app.forwarding.answers); nothing ran then,
so the client waits for n8n's readiness and sends again, for up to `startup_wait_seconds`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from app import tracing
from app.errors import (
    N8nAnswerTooLarge,
    N8nStarting,
    N8nTimeout,
    N8nUnreachable,
)
from app.forwarding.answers import Answer, AnswerKind, classify, is_starting_page
from app.forwarding.headers import NOT_REPLAYED, end_to_end
from app.forwarding.readiness import Readiness
from app.memory import Body, ByteBudget

# Node's HTTP server (n8n) closes idle keep-alive connections after 5 s; reusing one it is
# closing fails the request, so the gateway drops idle connections first.
KEEPALIVE_SECONDS = 4.0
# The whole response head n8n may send; Node's own limit on request heads is 16 KiB.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 128
# Encodings the client asks for and decodes; any other stays with its body.
DECODED_ENCODINGS = frozenset({"gzip", "deflate"})
READ_CHUNK_BYTES = 64 * 1024
CLASSIFIED_BYTES = 64 * 1024
DECODED_SLICE_BYTES = 64 * 1024
# How long after n8n says it is ready a "not registered" still means "not yet".
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Outbound:
    """A request for n8n: method, the path under the base URL, the raw query, what to send."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    # Headers made anew for each send (a signature with its timestamp): a request sent again
    # while n8n starts is signed as it leaves, not as it was first built.
    stamp: Callable[[], list[tuple[str, str]]] | None = None


@dataclass(frozen=True)
class N8nResponse:
    status: int
    content_type: str | None
    headers: list[tuple[str, str]]
    body: Body
    kind: AnswerKind

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


class _TooLarge(Exception):
    pass


class _NotWritten(Exception):
    """The connection closed before the request was written whole: n8n cannot have run it."""

    cause = "n8n-connection-closed"  # as its forward's span names it


class UndecodableAnswer(Exception):
    pass


async def decode(
    body: Body, *, encoding: str, max_bytes: int, budget: ByteBudget | None = None
) -> Body | None:
    """A gzip or deflate body decoded into a Body of its own (memory within the budget, disk
    past it), 64 KiB at a time, yielding to other requests between slices; None when it is over
    `max_bytes` once decoded (a compression bomb stops there); UndecodableAnswer when it is
    corrupt, cut short or followed by other bytes."""
    # deflate is zlib-wrapped by the RFC, raw in some servers' hands: try both.
    for wbits in (
        (16 + zlib.MAX_WBITS,) if encoding == "gzip" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    ):
        decoded = Body(budget)
        try:
            whole = await _decompress(
                body, zlib.decompressobj(wbits), into=decoded, max_bytes=max_bytes
            )
        except zlib.error:
            whole = False
        except BaseException:
            decoded.close()
            raise
        if decoded.size > max_bytes:
            decoded.close()
            return None
        if whole:
            return decoded
        decoded.close()
    raise UndecodableAnswer(f"an undecodable {encoding} answer (corrupt or cut short)")


async def _decompress(body: Body, decoder: Any, *, into: Body, max_bytes: int) -> bool:
    """Decodes `body` into `into` up to one byte past `max_bytes`; True when it ended exactly
    where the body does."""
    for chunk in body.chunks():
        if decoder.eof:
            return False  # bytes after the end
        data = chunk
        while True:
            room = min(DECODED_SLICE_BYTES, max_bytes + 1 - into.size)
            decoded = decoder.decompress(data, room)
            into.write(decoded)
            if into.size > max_bytes:
                return False
            data = decoder.unconsumed_tail
            if decoder.eof or (not data and len(decoded) < room):  # a full slice may leave
                break  # output pending; past the end, zlib keeps the rest as unconsumed too
            await asyncio.sleep(0)  # a large answer is many slices: others go on meanwhile
    return bool(decoder.eof and not decoder.unused_data)


class N8nClient:
    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float,
        timeout: float,
        max_connections: int,
        max_answer_bytes: int,
        startup_wait_seconds: float = 0.0,
        budget: ByteBudget | None = None,
        reuse_connections: bool = False,
        readiness_poll_seconds: float = 0.5,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._origin = str(URL(self._base_url).origin())
        self._base_path = URL(self._base_url).raw_path.rstrip("/")
        self._host = URL(self._base_url).host or ""
        self._port = URL(self._base_url).port or 0
        self._connect_timeout = min(connect_timeout, timeout)
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_answer_bytes = max_answer_bytes
        self._budget = budget
        self._reuse_connections = reuse_connections
        self._startup_wait_seconds = startup_wait_seconds
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self.readiness = Readiness(
            self._probe_ready,
            poll_seconds=readiness_poll_seconds,
            give_up_seconds=max(startup_wait_seconds, 30 * readiness_poll_seconds),
        )

    async def __aenter__(self) -> N8nClient:
        self._session = _session(self._max_connections, reuse_connections=self._reuse_connections)
        self._proxy = proxy_for(self._base_url)
        await self.readiness.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.readiness.__aexit__()
        if self._session is not None:
            await self._session.close()

    async def _probe_ready(self) -> bool:
        """n8n's readiness endpoint does not say 503, nor answer with a start-up page (any
        other answer: n8n is up, behind a proxy that guards the endpoint or without it)."""
        assert self._session is not None
        path = f"{self._base_path}/healthz/readiness"
        try:
            async with (
                asyncio.timeout(self._connect_timeout),
                self._session.get(
                    URL(f"{self._origin}{path}", encoded=True), proxy=self._proxy
                ) as response,
            ):
                body = await response.content.read(4096)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        answer = Answer(response.status, response.headers.get("Content-Type"), body)
        if is_starting_page(answer, method="GET", paths=self._paths(path)):
            return False
        return response.status != 503

    def _paths(self, path: str) -> tuple[str, ...]:
        """`path` as sent, and as n8n sees it behind a proxy that strips the base URL's path."""
        if self._base_path and path.startswith(self._base_path + "/"):
            return (path, path[len(self._base_path) :])
        return (path,)

    def path_for(self, *, mode: str, raw_path: str) -> str:
        """The path on n8n for a trigger's mode and path: under N8N_BASE_URL's own path."""
        return f"{self._base_path}/{mode}/{raw_path}"

    async def forward(self, outbound: Outbound) -> N8nResponse:
        """Send `outbound`; while n8n is starting, wait for it and send again (nothing ran)."""
        deadline = time.monotonic() + self._startup_wait_seconds
        while True:
            try:
                response = await self._send_unwritten_again(outbound)
            except N8nUnreachable as exc:
                if exc.maybe_ran or not await self._waited_for_start(deadline, outage=True):
                    raise
                continue
            if not await self._is_starting(response):
                self.readiness.saw_answer()
                return response
            outage = response.kind is AnswerKind.STARTING
            if not await self._waited_for_start(deadline, outage=outage):
                if outage:
                    raise _starting(self._startup_wait_seconds)
                return response  # "not registered" all along: that is n8n's answer

    async def _send_unwritten_again(self, outbound: Outbound) -> N8nResponse:
        """A kept-alive connection n8n closed between its last answer and this request's
        write fails the write; nothing reached n8n whole, so it is sent once more, on a new
        connection. (Any failure after the write may have run the workflow: never resent.)"""
        try:
            return await self._send_once(outbound)
        except _NotWritten:
            pass
        try:
            return await self._send_once(outbound)
        except _NotWritten as exc:
            raise N8nUnreachable(
                f"n8n closed the connection before the request was sent "
                f"({_no_query(exc.__cause__ or exc)}); "
                "nothing ran. Retry with the same key.",
                cause="n8n-connection-closed",
                maybe_ran=False,
            ) from exc

    async def _is_starting(self, response: N8nResponse) -> bool:
        """n8n's start-up pages; and "not registered" while n8n is not ready, or was ready
        only just now: it registers the active workflows' webhooks after it says so."""
        if response.kind is AnswerKind.STARTING:
            return True
        if response.kind is not AnswerKind.NOT_REGISTERED:
            return False
        return self.readiness.settling(SETTLE_SECONDS) or not await self._probe_ready()

    async def _waited_for_start(self, deadline: float, *, outage: bool) -> bool:
        """After n8n was not there: wait until it says it is ready; False once out of time."""
        self.readiness.saw_not_ready(outage=outage)
        return await self.readiness.pause_then_wait(deadline)

    async def _send_once(self, outbound: Outbound) -> N8nResponse:
        assert self._session is not None, "N8nClient used outside its context"
        query = f"?{outbound.query}" if outbound.query else ""
        url = URL(f"{self._origin}{outbound.path}{query}", encoded=True)
        headers = CIMultiDict(outbound.headers)
        if outbound.stamp is not None:
            headers.extend(outbound.stamp())
        headers.setdefault("Accept-Encoding", "gzip, deflate")
        with tracing.span("forward", kind="client", attributes=self._traced(outbound)) as span:
            tracing.inject(headers)  # n8n continues this span's trace
            response = await self._send_timed(outbound, url, headers)
            tracing.note_standard(span, {"http.response.status_code": response.status})
            tracing.note(span, answer=response.kind.value)
            return response

    def _traced(self, outbound: Outbound) -> dict[str, str | int] | None:
        """What a forward's span says of it (never its query, headers or body); None while
        tracing is off."""
        if not tracing.active():
            return None
        return {
            "http.request.method": outbound.method,
            "server.address": self._host,
            "server.port": self._port,
            "url.path": outbound.path,
        }

    async def _send_timed(
        self, outbound: Outbound, url: URL, headers: CIMultiDict[str]
    ) -> N8nResponse:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._exchange(outbound, url, headers)
        except aiohttp.ConnectionTimeoutError as exc:  # before TimeoutError: it is one too
            raise self._connect_timed_out(exc) from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise self._dns_failed(exc) from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._refused(exc) from exc
        except TimeoutError as exc:
            raise self._read_timed_out() from exc
        except _TooLarge as exc:
            raise self._too_large(exc) from exc
        except aiohttp.ClientOSError as exc:
            if _failed_to_write(exc):
                raise _NotWritten from exc
            raise self._lost(exc) from exc
        except (aiohttp.ClientError, OSError, UndecodableAnswer) as exc:
            raise self._lost(exc) from exc

    async def _exchange(
        self, outbound: Outbound, url: URL, headers: CIMultiDict[str]
    ) -> N8nResponse:
        assert self._session is not None
        async with self._session.request(
            outbound.method,
            url,
            headers=headers,
            data=outbound.body if outbound.body or outbound.method not in _BODYLESS else None,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self._connect_timeout, sock_connect=self._connect_timeout
            ),
            allow_redirects=False,
            proxy=self._proxy,
        ) as response:
            if response.status < 200:  # 101 and other interim answers are not n8n's answer
                response.close()
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message="interim answer"
                )
            body = await self._read_body(response)
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding in DECODED_ENCODINGS and body.size:  # HEAD, 204 and 304 answers have none
            try:
                decoded = await decode(
                    body, encoding=encoding, max_bytes=self._max_answer_bytes, budget=self._budget
                )
            finally:
                body.close()
            if decoded is None:
                raise _TooLarge(
                    f"its answer ({response.status}) is larger than {self._max_answer_bytes} "
                    "bytes once decoded"
                )
            body = decoded
        content_type = next((v for k, v in raw_headers if k.lower() == "content-type"), None)
        answer = Answer(
            status=response.status,
            content_type=content_type,
            # n8n's own answers are small, and known by their whole body: a prefix of a larger
            # body is never one of them.
            body=body.prefix(CLASSIFIED_BYTES),
            content_length=response.content_length,
            authenticate=response.headers.get("WWW-Authenticate"),
        )
        kind = classify(answer, method=outbound.method, paths=self._paths(outbound.path))
        return N8nResponse(
            status=response.status,
            content_type=content_type,
            headers=end_to_end(_decoded(raw_headers), drop=NOT_REPLAYED),
            body=body,
            kind=kind,
        )

    async def _read_body(self, response: aiohttp.ClientResponse) -> Body:
        """The whole body as sent, or _TooLarge past the limit; its connection is dropped."""
        declared, limit = response.content_length, self._max_answer_bytes
        if declared is not None and declared > self._max_answer_bytes:
            response.close()
            raise _TooLarge(f"its answer ({response.status}) is larger than {limit} bytes")
        body = Body(self._budget)
        try:
            async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                if body.size + len(chunk) > limit:
                    response.close()
                    raise _TooLarge(f"its answer ({response.status}) is larger than {limit} bytes")
                body.write(chunk)
        except BaseException:
            body.close()  # at once: a traceback may keep it alive until a collection
            raise
        return body

    def _dns_failed(self, exc: Exception) -> N8nUnreachable:
        return N8nUnreachable(
            f"Could not resolve n8n's host in {self._base_url}: {_no_query(exc)}. "
            "Check N8N_BASE_URL, then retry with the same key.",
            cause="n8n-dns-failure",
            maybe_ran=False,
        )

    def _connect_timed_out(self, exc: Exception) -> N8nTimeout:
        return N8nTimeout(
            f"Could not reach n8n in time ({_no_query(exc) or 'every connection busy'}); "
            "nothing was sent. Retry with the same key.",
            cause="n8n-connect-timeout",
            maybe_ran=False,
        )

    def _refused(self, exc: Exception) -> N8nUnreachable:
        return N8nUnreachable(
            f"Could not connect to n8n at {self._base_url}: {_no_query(exc)}. "
            "Check N8N_BASE_URL and that n8n is running, then retry with the same key.",
            cause="n8n-connection-refused",
            maybe_ran=False,
        )

    def _read_timed_out(self) -> N8nTimeout:
        return N8nTimeout(
            f"n8n did not answer within {self._timeout:g} s; the workflow may still "
            "be running. Ask the execution's URL (N8n-Gate-Execution) for its status before "
            "retrying.",
            cause="n8n-read-timeout",
            maybe_ran=True,
        )

    def _too_large(self, exc: Exception) -> N8nAnswerTooLarge:
        return N8nAnswerTooLarge(
            f"n8n ran the workflow, but {exc} (GATE_N8N_MAX_ANSWER_BYTES), so the gateway "
            "did not take it. This answer is final for this key: the workflow does not run "
            "again. Have it answer with less (a link to a file, say) or raise the limit, "
            "then send a new key.",
            cause="n8n-answer-too-large",
            maybe_ran=True,
        )

    def _lost(self, exc: Exception) -> N8nUnreachable:
        reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {_no_query(exc)}"
        return N8nUnreachable(
            f"n8n did not send a complete answer ({reason}); the workflow may have run. "
            "Ask the execution's URL (N8n-Gate-Execution) for its status.",
            cause="n8n-connection-lost",
            maybe_ran=True,
        )


_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def proxy_for(base_url: str) -> str | None:
    """The proxy for n8n's origin from HTTPS_PROXY / HTTP_PROXY / NO_PROXY, decided once: with
    trust_env aiohttp decides it again on every request, in a thread."""
    url = URL(base_url)
    if urllib.request.proxy_bypass(url.host or ""):
        return None
    return urllib.request.getproxies().get(url.scheme)


def _session(max_connections: int, *, reuse_connections: bool) -> aiohttp.ClientSession:
    """One session for the process; TLS verified against the system's CAs or SSL_CERT_FILE.

    A connection is used for one forward and closed, unless reuse is asked for: n8n's graceful
    shutdown waits for its executions while reused connections keep bringing new ones, until it
    gives up and exits as crashed (docs/adr/0002-one-connection-per-forward.md)."""
    reuse: dict[str, Any] = (
        {"keepalive_timeout": KEEPALIVE_SECONDS} if reuse_connections else {"force_close": True}
    )
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        ssl=ssl.create_default_context(),
        **reuse,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("User-Agent", "Accept", "Content-Type"),
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        max_headers=MAX_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),  # tenants share the session: never their cookies
        # Decoded here instead: aiohttp takes a gzip stream cut short as a whole, shorter body.
        auto_decompress=False,
    )
    _never_resend(session)
    return session


def _never_resend(session: aiohttp.ClientSession) -> None:
    """aiohttp resends idempotent methods once on a failed kept-alive connection, with no
    public switch; the gateway decides every resend itself (tests/forwarding prove it)."""
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("this aiohttp has no _retry_connection: check it cannot resend")
    session._retry_connection = False


_URL_QUERY = re.compile(r"(https?://[^\s?'\"]*)\?[^\s'\"]*")


def _no_query(exc: BaseException) -> str:
    """An error's text without the query strings of URLs in it (they may carry secrets)."""
    return _URL_QUERY.sub(r"\1?…", str(exc))


def _failed_to_write(exc: aiohttp.ClientOSError) -> bool:
    """aiohttp's writer refused to write on a closing connection (it raises that before a
    byte of the failed write leaves); reading errors are of other types."""
    return isinstance(exc, aiohttp.ClientConnectionResetError) or isinstance(
        exc.__cause__, aiohttp.ClientConnectionResetError
    )


def _decoded(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a decoded body: without the Content-Encoding the client undid."""
    return [
        (name, value)
        for name, value in headers
        if not (name.lower() == "content-encoding" and value.lower() in DECODED_ENCODINGS)
    ]


def _starting(waited: float) -> N8nStarting:
    return N8nStarting(
        f"n8n is starting and did not become ready within {waited:g} s "
        "(GATE_N8N_STARTUP_WAIT_SECONDS); nothing ran. Retry with the same key.",
        cause="n8n-starting",
        maybe_ran=False,
    )
