"""Answers sent to callers in slices, within a deadline, holding their bytes of the budget.

Sent whole, an answer was copied into the transport's buffer and stayed there for as long as its
caller read nothing, so slow callers held memory without limit. In slices, the
server's flow control waits for the caller between them, so the buffer holds one slice; the
deadline (`GATE_SEND_TIMEOUT_SECONDS` plus the time the answer takes at
`GATE_SEND_MIN_BYTES_PER_SECOND`) drops the connection of a caller that reads too slowly, and
the answer's bytes go back to the budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.memory import Body

SLICE_BYTES = 64 * 1024
# The server's protocol puts a callable here that closes the connection at once (app/server.py).
ABORT_EXTENSION = "n8n_gate.abort"


class HeldResponse(Response):
    def __init__(
        self,
        body: Body,
        *,
        status_code: int,
        timeout_seconds: float,
        min_bytes_per_second: int,
    ) -> None:
        super().__init__(b"", status_code=status_code)
        self.held = body
        if "content-length" in self.headers:  # Starlette leaves it out where it is not allowed
            self.headers["content-length"] = str(body.size)
        self.send_seconds = timeout_seconds + body.size / min_bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A caller gone makes the server's send return at once: without a watch on the
        # connection, the rest of a large answer would be read for nobody, in one go.
        gone = asyncio.create_task(_disconnect(receive)) if self.held.size > SLICE_BYTES else None
        try:
            await self._send_within(scope, send, gone)
        finally:
            self.held.close()
            if gone is not None:
                gone.cancel()

    async def _send_within(self, scope: Scope, send: Send, gone: asyncio.Task[None] | None) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async with asyncio.timeout(self.send_seconds):
                for piece in self.held.chunks(SLICE_BYTES):
                    if gone is not None and gone.done():
                        return
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            abort: Callable[[], None] | None = scope.get("extensions", {}).get(ABORT_EXTENSION)
            if abort is not None:
                abort()
                await asyncio.sleep(0)  # the server sees the connection lost before we return


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
