"""The fastest honest stand-in for n8n: a raw ASGI app answering like a webhook set to respond
"Immediately" (200 {"message":"Workflow was started"}). Run: uvicorn bench.fast_n8n:app"""

from __future__ import annotations

from typing import Any

BODY = b'{"message":"Workflow was started"}'
HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
