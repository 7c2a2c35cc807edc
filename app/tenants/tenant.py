"""A tenant: who a request acts for, as authentication established it."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Tenant:
    id: UUID
    name: str
