"""The gateway's counters (prometheus-client). Their labels are bounded: a route of the routes
file, a reason from a fixed set."""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter

RefusalReason = Literal["signature", "missing-key", "key-reused"]

DELIVERIES_REFUSED = Counter(
    "n8n_gate_deliveries_refused",
    "Provider deliveries refused with nothing stored: a signature that did not verify, a "
    "delivery without its key, or a known id with another body.",
    ["route", "reason"],
)


def delivery_refused(route: str, reason: RefusalReason) -> None:
    DELIVERIES_REFUSED.labels(route=route, reason=reason).inc()
