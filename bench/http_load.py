"""A lean HTTP/1.1 load client: one keep-alive connection per worker, on asyncio streams.

The load generator shares the machine's two cores with everything it measures. aiohttp's
client spent about 300 µs of CPU per request doing it, a third of a core at 1,000 requests/s
that the gateway then did not have (README, Benchmark). This client writes each request in
one call and reads the answer by Content-Length or chunked framing, nothing more: enough for
the fake n8n and the gateway, which are the only servers it talks to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit


class ProtocolError(Exception):
    pass


class Connection:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one POST and return its status and body; reconnects if the server closed."""
        return await self.send(self.encode_post(body, headers))

    def encode_post(self, body: bytes, headers: dict[str, str]) -> bytes:
        """A POST to this connection's URL as bytes on the wire, to build ahead of a timed run."""
        head = [f"POST {self._target} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request built by encode_post and return the answer's status and body."""
        if self._streams is None or self._streams[1].is_closing():
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        writer.write(request)
        return await _read_response(reader, on_close=self.close)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _read_response(
    reader: asyncio.StreamReader, *, on_close: Callable[[], None]
) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    version, status, _ = status_line.split(b" ", 2)
    length: int | None = None
    chunked, keep_alive = False, True
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.strip().lower() == b"chunked"
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        raise ProtocolError("a response with neither Content-Length nor chunked framing")
    if not keep_alive or version != b"HTTP/1.1":
        on_close()
    return int(status), body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from these servers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
