"""The one client that talks to n8n.

It uses aiohttp directly rather than httpx: under 32 concurrent forwards httpx's pool was the
bottleneck (see README, Benchmark), and the httpx-aiohttp bridge maps a refused connection and a
connection reset after sending to the same `ConnectTimeout`, which would blur "n8n never got it"
with "n8n may have run it".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp
from yarl import URL

from app.errors import N8nTimeout, N8nUnreachable
from app.executions.trigger import TriggerRequest
from app.forwarding.headers import NOT_REPLAYED, end_to_end, to_forward

# Node's HTTP server (n8n) closes idle keep-alive connections after 5 s; reusing one it is
# closing fails the request, so the gateway drops idle connections first.
KEEPALIVE_SECONDS = 4.0


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


class N8nClient:
    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout: float,
        timeout: float,
        max_connections: int,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> N8nClient:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    def url_for(self, request: TriggerRequest) -> URL:
        query = f"?{request.query}" if request.query else ""
        return URL(f"{self._base_url}/{request.mode}/{request.raw_path}{query}", encoded=True)

    async def forward(self, request: TriggerRequest, *, client_host: str | None) -> N8nResponse:
        assert self._session is not None, "N8nClient used outside its context"
        headers = to_forward(request.headers, client_host=client_host)
        try:
            async with self._session.request(
                request.method,
                self.url_for(request),
                headers=headers,
                data=request.body or None,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return N8nResponse(
                    status=response.status,
                    content_type=response.headers.get("Content-Type"),
                    headers=end_to_end(response.headers.items(), drop=NOT_REPLAYED),
                    body=body,
                )
        except aiohttp.ClientConnectorDNSError as exc:
            raise N8nUnreachable(
                f"Could not resolve n8n's host in {self._base_url}: {exc.os_error or exc}. "
                "Check N8N_BASE_URL, then retry with the same key.",
                cause="n8n-dns-failure",
                maybe_ran=False,
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable: n8n never got it
            raise N8nUnreachable(
                f"Could not connect to n8n at {self._base_url}: {exc.os_error or exc}. "
                "Check N8N_BASE_URL and that n8n is running, then retry with the same key.",
                cause="n8n-connection-refused",
                maybe_ran=False,
            ) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise N8nTimeout(
                f"Could not connect to n8n within {self._connect_timeout:g} s; nothing was "
                "sent. Retry with the same key.",
                cause="n8n-connect-timeout",
                maybe_ran=False,
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise N8nTimeout(
                f"n8n did not answer within {self._timeout.total:g} s; the workflow may still "
                "be running. Ask the Location for the execution's status before retrying.",
                cause="n8n-read-timeout",
                maybe_ran=True,
            ) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise N8nUnreachable(
                f"n8n closed the connection without a complete answer ({type(exc).__name__}); "
                "the workflow may have run. Ask the Location for the execution's status.",
                cause="n8n-connection-lost",
                maybe_ran=True,
            ) from exc
