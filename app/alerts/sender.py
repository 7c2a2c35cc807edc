"""Sends the alerts the delivery workers take to GATE_ALERT_URL (docs/alerts.md).

One send is a POST of the alert's JSON (app.alerts.payload) signed with its tenant's secrets as
the calls to n8n are (Standard Webhooks), under one message id per alert, the same on every
send, so a receiver can drop a resend. It is bounded by GATE_ALERT_TIMEOUT_SECONDS, follows no
redirect, and reads at most MAX_ANSWER_BYTES of the answer, which it drops. A 2xx answer
delivers it; any other answer, or none, makes it due again with the deliveries' backoff, until
GATE_ALERT_MAX_SENDS sends were refused: then it is given up, logged as an ERROR, and kept for
`n8n-gate alerts list`.

Without GATE_ALERT_URL nothing is sent: the alerts that come due are dropped.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from yarl import URL

from app import db, metrics
from app.alerts import payload, repo
from app.alerts.repo import Alert
from app.config import Settings
from app.delivery.backoff import Backoff, parse_retry_after
from app.forwarding.client import proxy_for
from app.forwarding.signing import signed_headers
from app.tenants.signing import SigningSecrets

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 128
# Alerts a process without GATE_ALERT_URL drops per look.
DROP_BATCH = 500
USER_AGENT = "n8n-gate"


@dataclass(frozen=True)
class Sent:
    """How one send went: delivered, or why not (and how long the receiver asked to wait)."""

    delivered: bool
    error: str | None = None
    retry_after: float | None = None


class AlertSender:
    def __init__(self, pool: db.Pool, *, signing: SigningSecrets, settings: Settings) -> None:
        self._pool = pool
        self._signing = signing
        self._url = str(settings.alert_url) if settings.alert_url is not None else None
        self._public_url = str(settings.public_url) if settings.public_url is not None else None
        self._timeout = settings.alert_timeout_seconds
        # A send takes at most its timeout: the lease outlasts it, so it is never renewed.
        self._lease_seconds = settings.lease_seconds + settings.alert_timeout_seconds
        self._backoff = Backoff(
            base_seconds=settings.retry_base_seconds,
            cap_seconds=settings.retry_cap_seconds,
            max_attempts=settings.alert_max_sends,
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    async def __aenter__(self) -> AlertSender:
        if self._url is not None:
            self._session = _session(self._timeout)
            self._proxy = proxy_for(self._url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def take_due(self, *, limit: int) -> list[Alert]:
        """Alerts due now, leased to this process; none while the database is out of reach.
        Without an alert URL the due alerts are dropped, and none is returned."""
        try:
            async with db.connection(self._pool) as conn:
                if self._url is None:
                    if dropped := await repo.drop_due(conn, limit=DROP_BATCH):
                        logger.debug("dropped %d alerts: GATE_ALERT_URL is not set", dropped)
                        metrics.ALERTS_DROPPED.inc(dropped)
                    return []
                return await repo.take_due(conn, lease_seconds=self._lease_seconds, limit=limit)
        except db.DatabaseUnreachable:
            return []

    async def send(self, alert: Alert) -> None:
        """Send a taken alert once, and record how it went."""
        if alert.sends > self._backoff.max_attempts:
            # Its last send's process died: that was the last send it had.
            sent = Sent(delivered=False, error="the process sending it stopped before it knew")
        else:
            sent = await self._post(alert)
        retry_at = None if sent.delivered else self._retry_at(alert, sent)
        await self._record(alert, sent, retry_at=retry_at)
        if sent.delivered:
            metrics.alert_sent("delivered")
        else:
            metrics.alert_sent("retry_scheduled" if retry_at else "given_up")
        _log(alert, sent, retry_at=retry_at, url_host=URL(self._url or "").host)

    async def _post(self, alert: Alert) -> Sent:
        assert self._session is not None
        assert self._url is not None
        body = payload.body(alert, public_url=self._public_url)
        try:
            secrets = await self._signing.of(alert.tenant_id)
        except db.DatabaseUnreachable:
            return Sent(delivered=False, error="signing-secret-unavailable: database unreachable")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **dict(
                signed_headers(
                    secrets,
                    message_id=f"msg_alert_{alert.id}",
                    timestamp=datetime.now(UTC),
                    body=body,
                )
            ),
        }
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False, proxy=self._proxy
            ) as response:
                await _drain(response)
        except TimeoutError:
            return Sent(delivered=False, error=f"no answer within {self._timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Sent(delivered=False, error=self._described(exc))
        if 200 <= response.status < 300:
            return Sent(delivered=True)
        return Sent(
            delivered=False,
            error=f"answered {response.status}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _retry_at(self, alert: Alert, sent: Sent) -> datetime | None:
        if self._backoff.exhausted(alert.sends):
            return None
        # A receiver may ask for a pause, not for the alert to wait past the backoff's cap.
        asked = min(sent.retry_after, self._backoff.cap_seconds) if sent.retry_after else None
        delay = self._backoff.delay(alert.sends, retry_after=asked)
        return datetime.now(UTC) + timedelta(seconds=delay)

    async def _record(self, alert: Alert, sent: Sent, *, retry_at: datetime | None) -> None:
        try:
            async with db.connection(self._pool) as conn:
                recorded = await repo.record_send(
                    conn,
                    alert_id=alert.id,
                    send=alert.sends,
                    delivered=sent.delivered,
                    retry_at=retry_at,
                    error=sent.error,
                )
        except db.DatabaseUnreachable:
            # Its lease runs out, and it is sent again under the same message id.
            logger.warning("could not record a send of alert %s; it will be sent again", alert.id)
            return
        if not recorded:
            logger.info("alert %s was taken over while it was being sent", alert.id)

    def _described(self, exc: BaseException) -> str:
        """The error without the alert URL's path or query: a Slack webhook's path is its
        credential."""
        text = str(exc)
        if self._url is not None:
            url = URL(self._url)
            for hidden in (self._url, url.raw_path_qs, url.path_qs):
                if hidden not in ("", "/"):
                    text = text.replace(hidden, "…")
        return f"{type(exc).__name__}: {text}"[:500]


def _session(timeout: float) -> aiohttp.ClientSession:
    """Alerts are few: a connection each, closed after it. TLS verified against the system's
    CAs or SSL_CERT_FILE; no cookies kept; the answer's head bounded, its body never decoded
    (it is dropped)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True, ssl=ssl.create_default_context()),
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        max_headers=MAX_HEADERS,
    )


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Reads at most MAX_ANSWER_BYTES of the answer and drops them."""
    left = MAX_ANSWER_BYTES
    while left > 0 and (chunk := await response.content.read(left)):
        left -= len(chunk)


def _log(alert: Alert, sent: Sent, *, retry_at: datetime | None, url_host: str | None) -> None:
    what = f"alert {alert.id} ({alert.type}) for execution {alert.execution_id}"
    extra = {
        "tenant": alert.tenant_name,
        "tenant_id": str(alert.tenant_id),
        "idempotency_key": alert.idempotency_key,
        "workflow": alert.workflow,
        "execution_id": alert.execution_id,
        "attempt": alert.sends,
    }
    if sent.delivered:
        logger.info("%s delivered to %s", what, url_host, extra=extra)
    elif retry_at is not None:
        logger.warning(
            "%s: send %d to %s failed (%s); next at %s",
            what,
            alert.sends,
            url_host,
            sent.error,
            retry_at.isoformat(timespec="seconds"),
            extra=extra,
        )
    else:
        logger.error(
            "%s given up after %d sends to %s (%s); 'n8n-gate alerts list' shows it",
            what,
            alert.sends,
            url_host,
            sent.error,
            extra=extra,
        )
