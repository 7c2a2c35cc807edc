"""The gateway's signature on every call it makes to n8n (Standard Webhooks), so a workflow can
tell that a call came through the gateway, and recently: `webhook-id`, `webhook-timestamp` and
one `v1,<signature>` per live secret of the tenant in `webhook-signature` (during a rotation, a
workflow that knows either secret verifies)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

# Whatever a caller sent under these names is dropped: only the gateway signs. Svix's timestamp
# and signature too, which Svix's libraries read first when both namings are there; a Svix
# sender's svix-id passes (alone it proves nothing).
SIGNATURE_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "svix-timestamp", "svix-signature"}
)


def signed_headers(
    secrets: Sequence[str], *, message_id: str, timestamp: datetime, body: bytes
) -> list[tuple[str, str]]:
    signatures = [
        Webhook(secret).sign(message_id, timestamp.astimezone(UTC), body) for secret in secrets
    ]
    return [
        ("webhook-id", message_id),
        ("webhook-timestamp", str(int(timestamp.timestamp()))),
        ("webhook-signature", " ".join(signatures)),
    ]


def unsigned(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in SIGNATURE_HEADERS]
