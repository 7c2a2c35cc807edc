"""The one client that talks to n8n.

It speaks HTTP/1.1 through `app.forwarding.http1` rather than httpx: under 32 concurrent
forwards httpx's pool was the bottleneck, and aiohttp's client cost about 0.4 ms more per
forward at one connection (README, Benchmark). Whichever library, what matters is the line
between "n8n never got it" and "n8n may have run it", which every failure below keeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import N8nAnswerTooLarge, N8nTimeout, N8nUnreachable
from app.executions.trigger import TriggerRequest
from app.forwarding.headers import NOT_REPLAYED, end_to_end
from app.forwarding.http1 import NoAnswer, NotSent, Origin

# Node's HTTP server (n8n) closes idle keep-alive connections after 5 s; reusing one it is
# closing fails the request, so the gateway drops idle connections first.
KEEPALIVE_SECONDS = 4.0
# What a proxy in front of n8n answers when n8n took too long: 504 (nginx, load balancers),
# 524 (Cloudflare, so n8n Cloud, after 100 s). n8n had the request, so the workflow may have
# run or still be running. (A 502 is more often n8n down than n8n hanging up: not counted.)
PROXY_TIMEOUTS = frozenset({504, 524})


@dataclass(frozen=True)
class N8nResponse:
    status: int
    content_type: str | None
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    @property
    def is_not_registered(self) -> bool:
        """n8n's own 404 for an unknown path or inactive workflow, not a workflow's 404."""
        if self.status != 404:
            return False
        try:
            payload = json.loads(self.body)
        except ValueError:
            return False
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        return isinstance(message, str) and "not registered" in message

    @property
    def is_retryable(self) -> bool:
        return self.status >= 500 or self.is_not_registered

    @property
    def outcome_unknown(self) -> bool:
        """A proxy's timeout: GATE_UNKNOWN_OUTCOME decides, as for the gateway's own."""
        return self.status in PROXY_TIMEOUTS


class N8nClient:
    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float,
        timeout: float,
        max_connections: int,
        max_answer_bytes: int,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self._base_url).path
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_answer_bytes = max_answer_bytes
        self._origin: Origin | None = None

    async def __aenter__(self) -> N8nClient:
        self._origin = Origin(
            self._base_url,
            max_connections=self._max_connections,
            idle_seconds=KEEPALIVE_SECONDS,
            max_body_bytes=self._max_answer_bytes,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._origin is not None:
            await self._origin.close()

    def target_for(self, request: TriggerRequest) -> str:
        """The request target on n8n: the same mode, path and query, under N8N_BASE_URL."""
        query = f"?{request.query}" if request.query else ""
        return f"{self._base_path}/{request.mode}/{request.raw_path}{query}"

    async def forward(
        self, request: TriggerRequest, *, headers: list[tuple[str, str]]
    ) -> N8nResponse:
        """Send `request` to n8n with `headers` (`to_forward` chose them from the client's)."""
        assert self._origin is not None, "N8nClient used outside its context"
        try:
            response = await self._origin.request(
                request.method,
                self.target_for(request),
                headers,
                request.body,
                connect_timeout=self._connect_timeout,
                total_timeout=self._timeout,
            )
        except NotSent as exc:
            raise self._not_sent(exc) from exc
        except NoAnswer as exc:
            raise self._no_answer(exc) from exc
        return N8nResponse(
            status=response.status,
            content_type=next(
                (v for k, v in response.headers if k.lower() == "content-type"), None
            ),
            headers=end_to_end(response.headers, drop=NOT_REPLAYED),
            body=response.body,
        )

    def _not_sent(self, exc: NotSent) -> N8nUnreachable | N8nTimeout:
        if exc.dns:
            return N8nUnreachable(
                f"Could not resolve n8n's host in {self._base_url}: {exc}. "
                "Check N8N_BASE_URL, then retry with the same key.",
                cause="n8n-dns-failure",
                maybe_ran=False,
            )
        if exc.timed_out:
            return N8nTimeout(
                f"Could not reach n8n in time ({exc}); nothing was sent. Retry with the same key.",
                cause="n8n-connect-timeout",
                maybe_ran=False,
            )
        return N8nUnreachable(
            f"Could not connect to n8n at {self._base_url}: {exc}. "
            "Check N8N_BASE_URL and that n8n is running, then retry with the same key.",
            cause="n8n-connection-refused",
            maybe_ran=False,
        )

    def _no_answer(self, exc: NoAnswer) -> N8nUnreachable | N8nTimeout | N8nAnswerTooLarge:
        if exc.too_large:
            return N8nAnswerTooLarge(
                f"n8n ran the workflow, but {exc} (GATE_N8N_MAX_ANSWER_BYTES), so the gateway "
                "did not take it. This answer is final for this key: the workflow does not run "
                "again. Have it answer with less (a link to a file, say) or raise the limit, "
                "then send a new key.",
                cause="n8n-answer-too-large",
                maybe_ran=True,
            )
        if exc.timed_out:
            return N8nTimeout(
                f"n8n did not answer within {self._timeout:g} s; the workflow may still "
                "be running. Ask the Location for the execution's status before retrying.",
                cause="n8n-read-timeout",
                maybe_ran=True,
            )
        return N8nUnreachable(
            f"n8n did not send a complete answer ({exc}); the workflow may have run. "
            "Ask the Location for the execution's status.",
            cause="n8n-connection-lost",
            maybe_ran=True,
        )
