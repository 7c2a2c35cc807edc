"""A stand-in for n8n's webhook server that answers as n8n does (shared/reference/n8n-webhooks.md).

Registered production webhooks (method, path → behaviour):
    POST echo          respond "When Last Node Finishes": 200, the request echoed as JSON
    POST started       respond "Immediately": 200 {"message": "Workflow was started"}
    POST fail          the workflow errors: 500 {"message": "Error in workflow"}
    POST slow          waits until released (or ?delay= seconds), then echoes
    POST flaky         500 while `failures_left[key]` > 0, then echoes
    POST busy          429 with Retry-After: 1 while `failures_left[key]` > 0, then echoes
    POST binary        200 application/octet-stream bytes (not UTF-8)
    POST large         200 application/octet-stream, ?bytes=N bytes ("Respond to Webhook" binary)
    POST respond       "Respond to Webhook" node: 201, text body, custom X-Execution-Id header
    POST missing-order "Respond to Webhook" node answering a workflow-level 404
    POST customer      "Respond to Webhook" 404 {"message":"Customer 42 is not registered"}
    POST redirect      "Respond to Webhook" redirect: 307 with its own Location
    POST page          "Respond to Webhook" HTML page, 200 (a workflow's own HTML: final)
    POST impostor      answers with headers that only the gateway may set
    POST guarded       Header Auth: Authorization must be "Bearer hook-secret", else n8n's 403
    POST stopping      n8n stopping: 500 "There was a problem executing the workflow" (it may
                       run the execution at its next start, or never)
    GET  lookup        only GET is registered: other methods get n8n's "did you mean" 404
    HEAD probe         only HEAD is registered: 200, no body, X-Probe: ok
    GET/POST/PUT multi three methods: others get "Did you mean to make a GET, POST or PUT request?"
Test webhooks (/webhook-test/...): echo only. Anything else: n8n's "not registered" 404.

`phase` plays n8n's start (shared/reference/real-n8n.md), each answer byte for byte as n8n
2.40.7 gives it: "starting" (200 text/html "n8n is starting up. Please wait" for every path),
"mounting" (Express's HTML 404 "Cannot POST /webhook/..."), "registering" (every webhook "not
registered"), "settling" (ready by its readiness endpoint, webhooks still "not registered"),
then "ready". `GET /healthz/readiness` answers 503 {"status":"error"} until ready.

`ProxyInFront` stands in for a reverse proxy that fails every call with one status (nginx's
504 when n8n is too slow, Cloudflare's 524).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

BINARY_BODY = bytes(range(256)) * 4
STARTING_PAGE = "n8n is starting up. Please wait"
Phase = Literal["starting", "mounting", "registering", "settling", "ready"]
PRODUCTION_HINT = (
    "The workflow must be active for a production URL to run successfully. You can activate "
    "the workflow using the toggle in the top-right of the editor. Note that unlike test URL "
    "calls, production URL calls aren't shown on the canvas (only in the executions list)"
)
TEST_HINT = (
    "Click the 'Execute workflow' button on the canvas, then try again. (In test mode, the "
    "webhook only works for one call after you click this button)"
)


class N8nJSON(JSONResponse):
    """JSON as n8n (Express) sends it."""

    media_type = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Call:
    method: str
    mode: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    ran: bool = True  # a workflow answered (not one of n8n's start-up pages)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class FakeN8n:
    calls: list[Call] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)
    slow_in_flight: int = 0
    slow_most_in_flight: int = 0
    phase: Phase = "ready"
    readiness_probes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: asyncio.Event | None = None

    def calls_for(self, key: str) -> list[Call]:
        """Calls with this key that a workflow answered."""
        with self._lock:
            return [call for call in self.calls if call.key == key and call.ran]

    def refused_for(self, key: str) -> list[Call]:
        """Calls with this key that n8n answered with a start-up page (nothing ran)."""
        with self._lock:
            return [call for call in self.calls if call.key == key and not call.ran]

    def release_slow(self) -> None:
        """Let every waiting (and future) `slow` call answer."""
        assert self._release is not None
        loop = self._loop
        loop.call_soon_threadsafe(self._release.set)

    def hold_slow(self) -> None:
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.clear)

    @property
    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                Route("/healthz", self._health),
                Route("/healthz/readiness", self._readiness),
                Route("/webhook/{path:path}", self._production, methods=methods),
                Route("/webhook-test/{path:path}", self._test, methods=methods),
            ],
            lifespan=self._lifespan,
        )

    async def _health(self, request: Request) -> Response:
        if self.phase == "starting":
            return HTMLResponse(STARTING_PAGE)
        return N8nJSON({"status": "ok"})

    async def _readiness(self, request: Request) -> Response:
        with self._lock:
            self.readiness_probes += 1
        if self.phase not in ("settling", "ready"):
            return N8nJSON({"status": "error"}, status_code=503)
        return N8nJSON({"status": "ok"})

    def _starting_answer(self, request: Request, path: str, *, test: bool) -> Response | None:
        """n8n's own answer while it starts, or None once it is ready."""
        if self.phase == "starting":
            return HTMLResponse(STARTING_PAGE)
        if self.phase == "mounting":
            return _express_404(request.method, request.url.path)
        if self.phase in ("registering", "settling"):
            return _not_registered(request.method, path, test=test)
        return None

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        yield

    async def _production(self, request: Request) -> Response:
        path = request.path_params["path"].rstrip("/")
        starting = self._starting_answer(request, path, test=False)
        call = await self._record(request, "webhook", path, ran=starting is None)
        if starting is not None:
            return starting
        handler = {
            "echo": self._echo,
            "started": self._started,
            "fail": self._fail,
            "slow": self._slow,
            "flaky": self._flaky,
            "busy": self._busy,
            "binary": self._binary,
            "large": self._large,
            "respond": self._respond,
            "missing-order": self._missing_order,
            "customer": self._customer,
            "redirect": self._redirect,
            "page": self._page,
            "impostor": self._impostor,
            "stopping": self._stopping,
        }.get(path)
        if path == "lookup":
            if request.method == "GET":
                return N8nJSON({"found": True})
            return _did_you_mean(request.method, "GET")
        if path == "guarded" and request.headers.get("authorization") != "Bearer hook-secret":
            return Response(
                b"Authorization data is wrong!",
                status_code=403,
                headers={"WWW-Authenticate": 'Basic realm="Webhook"'},
            )
        if path == "guarded":
            return await self._echo(call)
        if path == "probe":
            if request.method == "HEAD":
                return Response(headers={"X-Probe": "ok"}, media_type=N8nJSON.media_type)
            return _did_you_mean(request.method, "HEAD")
        if path == "multi":
            if request.method in ("GET", "POST", "PUT"):
                return await self._echo(call)
            return _did_you_mean(request.method, "GET, POST or PUT")
        if handler is None:
            return _not_registered(request.method, path, test=False)
        if request.method != "POST":
            return _did_you_mean(request.method, "POST")
        return await handler(call)

    async def _test(self, request: Request) -> Response:
        path = request.path_params["path"].rstrip("/")
        starting = self._starting_answer(request, path, test=True)
        call = await self._record(request, "webhook-test", path, ran=starting is None)
        if starting is not None:
            return starting
        if path != "echo":
            return _not_registered(request.method, path, test=True)
        return await self._echo(call)

    async def _record(self, request: Request, mode: str, path: str, *, ran: bool) -> Call:
        call = Call(
            ran=ran,
            method=request.method,
            mode=mode,
            path=path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        with self._lock:
            self.calls.append(call)
        return call

    async def _echo(self, call: Call) -> Response:
        received: Any = json.loads(call.body) if call.body else None
        return N8nJSON({"received": received, "query": call.query, "headers": call.headers})

    async def _started(self, call: Call) -> Response:
        return N8nJSON({"message": "Workflow was started"})

    async def _fail(self, call: Call) -> Response:
        return N8nJSON({"message": "Error in workflow"}, status_code=500)

    async def _slow(self, call: Call) -> Response:
        with self._lock:
            self.slow_in_flight += 1
            self.slow_most_in_flight = max(self.slow_most_in_flight, self.slow_in_flight)
        try:
            return await self._slow_answer(call)
        finally:
            with self._lock:
                self.slow_in_flight -= 1

    async def _slow_answer(self, call: Call) -> Response:
        assert self._release is not None
        delay = dict(pair.split("=", 1) for pair in call.query.split("&") if "=" in pair).get(
            "delay"
        )
        with suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=float(delay) if delay else 30.0)
        return await self._echo(call)

    async def _flaky(self, call: Call) -> Response:
        key = call.key or ""
        with self._lock:
            left = self.failures_left.get(key, 0)
            self.failures_left[key] = max(left - 1, 0)
        if left > 0:
            return await self._fail(call)
        return await self._echo(call)

    async def _busy(self, call: Call) -> Response:
        key = call.key or ""
        with self._lock:
            left = self.failures_left.get(key, 0)
            self.failures_left[key] = max(left - 1, 0)
        if left > 0:
            return N8nJSON({"message": "Too many requests"}, 429, {"Retry-After": "1"})
        return await self._echo(call)

    async def _binary(self, call: Call) -> Response:
        return Response(BINARY_BODY, media_type="application/octet-stream")

    async def _large(self, call: Call) -> Response:
        size = int(dict(parse_qsl(call.query)).get("bytes", "0"))
        return Response(b"\x00" * size, media_type="application/octet-stream")

    async def _respond(self, call: Call) -> Response:
        return Response(
            "accepted for processing",
            status_code=201,
            media_type="text/plain",
            headers={"X-Execution-Id": "4711"},
        )

    async def _missing_order(self, call: Call) -> Response:
        return N8nJSON({"error": "order not found"}, status_code=404)

    async def _customer(self, call: Call) -> Response:
        return N8nJSON({"message": "Customer 42 is not registered"}, status_code=404)

    async def _redirect(self, call: Call) -> Response:
        return Response(
            status_code=307,
            headers={"Location": "https://shop.example/thanks"},
            media_type=N8nJSON.media_type,
        )

    async def _page(self, call: Call) -> Response:
        return HTMLResponse(f"<html><body><p>{STARTING_PAGE}</p></body></html>")

    async def _stopping(self, call: Call) -> Response:
        message = "There was a problem executing the workflow"
        return N8nJSON({"code": 0, "message": message}, status_code=500)

    async def _impostor(self, call: Call) -> Response:
        return N8nJSON(
            {"ok": True},
            headers={"Idempotent-Replayed": "true", "N8n-Gate-Execution": "/v1/executions/other"},
        )


def _not_registered(method: str, path: str, *, test: bool) -> Response:
    name = f"{path}" if test else f"{method} {path}"
    return N8nJSON(
        {
            "code": 404,
            "message": f'The requested webhook "{name}" is not registered.',
            "hint": TEST_HINT if test else PRODUCTION_HINT,
        },
        status_code=404,
    )


def _express_404(method: str, path: str) -> Response:
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>Cannot {method} {path}</pre>\n</body>\n</html>\n"
    )
    return HTMLResponse(
        page, status_code=404, headers={"Content-Security-Policy": "default-src 'none'"}
    )


def _did_you_mean(method: str, registered: str) -> Response:
    return N8nJSON(
        {
            "code": 404,
            "message": f"This webhook is not registered for {method} requests. "
            f"Did you mean to make a {registered} request?",
        },
        status_code=404,
    )


class ProxyInFront:
    """A reverse proxy in front of n8n that fails every call with `status`, as nginx does."""

    def __init__(self, status: int) -> None:
        self.keys: list[str | None] = []  # of each call, as other tests' deliveries come too
        self.app = Starlette(routes=[Route("/webhook/{path:path}", self._fail, methods=["POST"])])
        self._status = status

    async def _fail(self, request: Request) -> Response:
        self.keys.append(request.headers.get("idempotency-key"))
        await request.body()
        page = f"<html><head><title>{self._status}</title></head></html>"
        return HTMLResponse(page, status_code=self._status)
