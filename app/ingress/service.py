"""Provider deliveries (/in/<route>): verified, keyed by the provider's own id, then run or
accepted like any trigger, so a redelivery gets the first delivery's answer and never runs the
workflow again."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from app import db
from app.errors import IdempotencyKeyReused, MissingDeliveryKey, RouteNotFound, SignatureInvalid
from app.executions.gateway_answer import GatewayAnswer
from app.executions.repo import Accepted
from app.executions.service import ExecutionService
from app.executions.trigger import MAX_KEY_LENGTH, PROVIDER_KEY_PREFIX, TriggerRequest
from app.ingress import signatures
from app.ingress.keys import DeliveryKeyMissing, delivery_key
from app.ingress.routes_file import IngressRoute, RoutesFileError
from app.metrics import delivery_refused
from app.tenants import repo as tenants_repo
from app.tenants.tenant import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedRoute:
    route: IngressRoute
    tenant: Tenant
    # Headers that carry the signature: never stored, logged or forwarded.
    signature_headers: frozenset[str]


@dataclass(frozen=True)
class Delivery:
    """A delivery as received: what the signature covers and where its key is."""

    method: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes


async def serve_routes(pool: db.Pool, routes: Mapping[str, IngressRoute]) -> dict[str, ServedRoute]:
    """The routes with their tenants resolved; RoutesFileError names each unknown tenant."""
    async with db.connection(pool) as conn:
        tenants = await resolve_tenants(conn, routes)
    return {
        name: ServedRoute(
            route=route,
            tenant=tenants[route.tenant],
            signature_headers=signatures.signature_headers(route.scheme, route.hmac_options),
        )
        for name, route in routes.items()
    }


async def resolve_tenants(
    conn: db.AnyConnection, routes: Mapping[str, IngressRoute]
) -> dict[str, Tenant]:
    """The routes' tenants by name; RoutesFileError names each route whose tenant is unknown."""
    tenants: dict[str, Tenant] = {}
    for name in sorted({route.tenant for route in routes.values()}):
        tenant_id = await tenants_repo.find_tenant_id(conn, name=name)
        if tenant_id is not None:
            tenants[name] = Tenant(id=tenant_id, name=name)
    unknown = [
        f"{route.source}: route {route.name!r}: tenant: {route.tenant!r} does not exist "
        f"(create it with 'n8n-gate keys create --tenant {route.tenant}')"
        for route in routes.values()
        if route.tenant not in tenants
    ]
    if unknown:
        raise RoutesFileError(unknown)
    return tenants


class Ingress:
    def __init__(
        self,
        *,
        routes: Mapping[str, ServedRoute],
        executions: ExecutionService,
        tolerance_seconds: float,
        max_wait_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._routes = routes
        self._max_wait_seconds = max_wait_seconds
        self._executions = executions
        self._tolerance_seconds = tolerance_seconds
        self._clock = clock

    def route(self, name: str) -> ServedRoute:
        served = self._routes.get(name)
        if served is None:
            raise RouteNotFound(f"No route {name!r} in GATE_ROUTES_FILE.")
        return served

    def check_headers(self, served: ServedRoute, headers: Sequence[tuple[str, str]]) -> None:
        """Raises SignatureInvalid (401) for a delivery whose signature headers cannot verify,
        whatever its body: checked before the body is read."""
        route = served.route
        with self._refused(route):
            signatures.check_headers(
                route.scheme,
                headers=headers,
                now=self._clock(),
                tolerance_seconds=self._tolerance(route),
                hmac_options=route.hmac_options,
            )

    def verify(self, served: ServedRoute, delivery: Delivery) -> None:
        """Raises SignatureInvalid (401) unless one of the route's secrets signed the delivery."""
        route = served.route
        with self._refused(route):
            signatures.verify(
                route.scheme,
                secrets=route.secrets,
                headers=delivery.headers,
                body=delivery.body,
                now=self._clock(),
                tolerance_seconds=self._tolerance(route),
                hmac_options=route.hmac_options,
            )

    def _tolerance(self, route: IngressRoute) -> float:
        return route.tolerance_seconds or self._tolerance_seconds

    @contextmanager
    def _refused(self, route: IngressRoute) -> Iterator[None]:
        try:
            yield
        except signatures.SignatureRejected as rejected:
            delivery_refused(route.name, "signature")
            logger.warning(
                "delivery refused: route=%s scheme=%s reason=%s",
                route.name,
                route.scheme,
                rejected.reason,
                extra={"route": route.name, "reason": rejected.reason},
            )
            raise SignatureInvalid(
                f"The delivery's signature does not verify ({rejected.reason}); nothing was "
                "stored. Check the route's secrets and the sender's clock."
            ) from None

    def handshake(self, served: ServedRoute, delivery: Delivery) -> str | None:
        """The challenge to answer when a verified delivery is the provider checking the URL,
        not an event (Slack's url_verification): answered at once, nothing stored or run."""
        if served.route.scheme != "slack" or not delivery.body.startswith(b"{"):
            return None
        try:
            payload = json.loads(delivery.body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(payload, dict) or payload.get("type") != "url_verification":
            return None
        challenge = payload.get("challenge")
        return challenge if isinstance(challenge, str) else None

    def key(self, served: ServedRoute, delivery: Delivery) -> str:
        """The execution key: the route's name and the provider's id for the delivery."""
        prefix = f"{PROVIDER_KEY_PREFIX}{served.route.name}:"
        try:
            sent = delivery_key(
                served.route.key_source,
                headers=delivery.headers,
                body=delivery.body,
                max_length=MAX_KEY_LENGTH - len(prefix),
            )
        except DeliveryKeyMissing as missing:
            delivery_refused(served.route.name, "missing-key")
            raise MissingDeliveryKey(
                f"The delivery has no key where route {served.route.name!r} takes it "
                f"({missing.reason}); nothing was stored."
            ) from None
        return prefix + sent

    async def deliver(
        self, served: ServedRoute, request: TriggerRequest
    ) -> Accepted | GatewayAnswer:
        """Accept (async route) or run (sync route) the verified delivery; a redelivery gets the
        first one's answer."""
        route = served.route
        try:
            if route.respond == "async":
                return await self._executions.accept(tenant=served.tenant, request=request)
            return await self._executions.trigger(
                tenant=served.tenant,
                request=request,
                wait_seconds=min(route.wait_seconds, self._max_wait_seconds),
            )
        except IdempotencyKeyReused:
            # Signed by the provider, yet another body under an id it used before: a provider
            # bug, or a replayed signature with a body that also verifies. Worth a look.
            delivery_refused(route.name, "key-reused")
            logger.warning(
                "delivery refused: route=%s key=%r was first delivered with another body",
                route.name,
                request.key,
                extra={"route": route.name, "idempotency_key": request.key},
            )
            raise
