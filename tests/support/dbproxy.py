"""A TCP proxy in front of Postgres (or n8n) that a test can cut, drain and restore, to play an
outage, or a load balancer taking a server out of rotation before it is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit, urlunsplit


class _Link:
    """One proxied connection; a silent one swallows what either side sends."""

    silent = False


class DatabaseProxy:
    def __init__(self, upstream_url: str) -> None:
        self._upstream = urlsplit(upstream_url)
        self._connections: set[asyncio.StreamWriter] = set()
        self._links: set[_Link] = set()
        self.down = False
        self.stalled = False
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The upstream URL, pointed at the proxy (always TCP on loopback)."""
        user = self._upstream.username or "postgres"
        return urlunsplit(
            ("postgresql", f"{user}@127.0.0.1:{self.port}", self._upstream.path, "", "")
        )

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, as a restarting server does."""
        self.down = True
        for writer in list(self._connections):
            writer.close()
        self._connections.clear()

    def stall(self) -> None:
        """Drop every open connection, then take new ones but never answer on them, as a
        database behind a network path that went silent does: connecting hangs, not fails."""
        self.cut()
        self.down, self.stalled = False, True

    def silence(self) -> None:
        """Keep the open connections open but carry nothing more on them, as a NAT or firewall
        that dropped an idle connection does; new connections work."""
        for link in self._links:
            link.silent = True

    def drain(self) -> None:
        """Stop listening (new connections are refused) and let the open ones finish, as a
        load balancer takes a server out of rotation."""
        assert self._server is not None
        self._server.close()

    async def listen_again(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def restore(self) -> None:
        self.down = self.stalled = False

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = parse_qs(self._upstream.query).get("host", [None])[0]
        port = self._upstream.port or 5432
        if socket_dir:
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self._upstream.hostname or "127.0.0.1", port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        if self.stalled:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            writer.close()
            return
        up_reader, up_writer = await self._open_upstream()
        link = _Link()
        self._connections.update({writer, up_writer})
        self._links.add(link)
        await asyncio.gather(_pipe(reader, up_writer, link), _pipe(up_reader, writer, link))
        self._connections.difference_update({writer, up_writer})
        self._links.discard(link)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DatabaseProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            self.cut()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            if link.silent:
                continue
            sink.write(data)
            await sink.drain()
    sink.close()
