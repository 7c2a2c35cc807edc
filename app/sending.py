"""Answers sent to callers in slices, within a deadline, holding their bytes of the budget.

Sent whole, an answer was copied into the transport's buffer and stayed there for as long as its
caller read nothing (12 callers not reading a 60 MiB answer: RSS 0.3 → 1.6 GB). In slices, the
server's flow control waits for the caller between them, so the buffer holds one slice; the
deadline (`GATE_SEND_TIMEOUT_SECONDS` plus the time the answer takes at
`GATE_SEND_MIN_BYTES_PER_SECOND`) drops the connection of a caller that reads too slowly, and
the answer's bytes go back to the budget.

A fresh answer that does not fit the budget is not refused (its workflow ran): it waits for its
caller in an unlinked temporary file instead of in memory, as a proxy buffers to disk.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import BinaryIO

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import GatewayBusy
from app.memory import Holding

SLICE_BYTES = 64 * 1024
# The server's protocol puts a callable here that closes the connection at once (app/server.py).
ABORT_EXTENSION = "n8n_gate.abort"


class HeldResponse(Response):
    def __init__(
        self,
        body: bytes | BinaryIO,
        *,
        size: int,
        status_code: int,
        holding: Holding,
        timeout_seconds: float,
        min_bytes_per_second: int,
    ) -> None:
        super().__init__(b"", status_code=status_code)
        self.source = body
        if "content-length" in self.headers:  # Starlette leaves it out where it is not allowed
            self.headers["content-length"] = str(size)
        self.holding = holding
        self.send_seconds = timeout_seconds + size / min_bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._send_within(scope, send)
        finally:
            self.holding.release()
            if not isinstance(self.source, bytes):
                self.source.close()

    async def _send_within(self, scope: Scope, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async with asyncio.timeout(self.send_seconds):
                async for piece, more in self._slices():
                    await send({"type": "http.response.body", "body": piece, "more_body": more})
        except TimeoutError:
            abort: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
            if abort is not None:
                abort()
                await asyncio.sleep(0)  # the server sees the connection lost before we return

    async def _slices(self) -> AsyncIterator[tuple[bytes, bool]]:
        """The body's slices, each with whether more follow (one empty slice for no body)."""
        if isinstance(self.source, bytes):
            # BytesIO shares the bytes until written to: each slice is the only copy made.
            in_memory = io.BytesIO(self.source)
            read = partial(_read_now, in_memory)
        else:
            read = partial(asyncio.to_thread, self.source.read, SLICE_BYTES)
        piece = await read()
        while True:
            following = await read() if piece else b""
            yield piece, bool(following)
            if not following:
                return
            piece = following


async def _read_now(source: io.BytesIO) -> bytes:
    return source.read(SLICE_BYTES)


async def held_body(body: bytes, *, holding: Holding, refusable: bool) -> bytes | BinaryIO:
    """The body as it waits for its caller: in memory while the budget has room for it.

    Refusable (a replay: its caller only asks again), it is refused when there is none; else it
    goes to a temporary file, which the system deletes however the process ends.
    """
    try:
        holding.take(len(body))
    except GatewayBusy:
        if refusable:
            raise
        return await asyncio.to_thread(_spooled, body)
    return body


def _spooled(body: bytes) -> BinaryIO:
    file = tempfile.TemporaryFile()  # noqa: SIM115 - closed once the answer is sent
    file.write(body)
    file.seek(0)
    return file
