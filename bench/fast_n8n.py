"""The fastest honest stand-in for n8n: a raw ASGI app answering like a webhook set to respond
"Immediately" (200 {"message":"Workflow was started"}). Run: uvicorn bench.fast_n8n:app

For the memory bench (bench/memory.py), query parameters shape the answer as a "Respond to
Webhook" node could: `bytes=N` answers N bytes, `headers=N` adds N headers of 8,000 bytes each,
`delay=S` answers after S seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

BODY = b'{"message":"Workflow was started"}'
HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
HEADER_VALUE = b"v" * 8000


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if not scope["query_string"]:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
        return
    shape = dict(parse_qsl(scope["query_string"].decode()))
    await asyncio.sleep(float(shape.get("delay", 0)))
    headers = [(f"x-big-{i}".encode(), HEADER_VALUE) for i in range(int(shape.get("headers", 0)))]
    body = b"\0" * int(shape["bytes"]) if "bytes" in shape else BODY
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS + headers})
    await send({"type": "http.response.body", "body": body})
