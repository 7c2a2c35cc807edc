"""The process's budget of bytes in flight: request bodies and answers held for callers.

Every trigger holds its body from the first byte until the gateway is done with it (waiting for
a connection slot, for n8n, for a `Prefer: wait`), and its answer until the caller has read the
last byte. Without a bound, callers that send big bodies and read nothing held any amount of
memory (12 slow readers of a 60 MiB answer: RSS 0.3 → 1.6 GB).

What the gateway may still refuse is admitted only while it fits: a request body, a replay
(nothing changes if it is refused, and the caller retries). An answer from n8n is counted but
never refused, because the workflow has run and its caller must get what it did; while such
answers overdraw the budget, every new body and replay is refused until they are sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import GatewayBusy


@dataclass
class ByteBudget:
    limit: int
    used: int = 0
    peak: int = 0

    def holding(self) -> Holding:
        return Holding(self)

    def _take(self, size: int, *, may_refuse: bool) -> None:
        if may_refuse and self.used + size > self.limit:
            raise GatewayBusy(
                f"The gateway holds {self.used} of its {self.limit} bytes for requests in "
                f"flight (GATE_MAX_BYTES_IN_FLIGHT) and cannot take {size} more now; "
                "nothing was forwarded. Retry later."
            )
        self.used += size
        self.peak = max(self.peak, self.used)

    def _give_back(self, size: int) -> None:
        self.used -= size


@dataclass
class Holding:
    """What one request holds of the budget; given back whole, once."""

    budget: ByteBudget
    size: int = field(default=0)

    def take(self, size: int) -> None:
        """Admits `size` more bytes, or raises `GatewayBusy` if they do not fit."""
        self.budget._take(size, may_refuse=True)
        self.size += size

    def take_anyway(self, size: int) -> None:
        """Counts bytes the gateway must hold whatever the budget says (a fresh answer)."""
        self.budget._take(size, may_refuse=False)
        self.size += size

    def release(self) -> None:
        self.budget._give_back(self.size)
        self.size = 0
