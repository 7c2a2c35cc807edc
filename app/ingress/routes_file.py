"""The routes file (GATE_ROUTES_FILE): which provider may post to /in/<route>, how its deliveries
are verified and keyed, and which n8n webhook they trigger.

    [routes.stripe-orders]          # POST /in/stripe-orders
    tenant   = "acme"
    provider = "stripe"             # preset: Stripe-Signature, key = JSON /id
    secrets  = ["whsec_old", "whsec_new"]
    webhook  = "orders"             # {N8N_BASE_URL}/webhook/orders
    respond  = "async"

Every mistake is reported, one line each, naming the route and the field, and never a secret.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import InvalidWebhookPath
from app.executions.trigger import Mode, parse_webhook_path
from app.ingress.keys import HeaderKey, KeySource, parse_key_source
from app.ingress.signatures import HmacOptions, SchemeName, signature_headers, validate_secret

Provider = Literal["stripe", "github", "shopify", "slack", "standard-webhooks", "hmac-sha256"]
Respond = Literal["async", "sync"]
# A route's name is its URL segment: long enough to be an unguessable token.
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Preset:
    scheme: SchemeName
    key: str | None  # None: the route must name its key source


# Where each provider puts its signature and the id it names a delivery with.
PRESETS: dict[Provider, Preset] = {
    "stripe": Preset("stripe", "json:/id"),
    "github": Preset("github", "header:X-GitHub-Delivery"),
    # Shopify's own guide to duplicates keys on the event id: a retried webhook may get a new
    # X-Shopify-Webhook-Id.
    "shopify": Preset("shopify", "header:X-Shopify-Event-Id"),
    "slack": Preset("slack", "json:/event_id"),
    "standard-webhooks": Preset("standard-webhooks", "standard-webhooks-id"),
    "hmac-sha256": Preset("hmac-sha256", None),
}


class RouteEntry(BaseModel):
    """One [routes.<name>] table as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=TENANT_NAME.pattern)
    provider: Provider
    secrets: list[str] = Field(min_length=1, max_length=16, repr=False)
    webhook: str = Field(min_length=1, max_length=2048)
    mode: Mode = "webhook"
    respond: Respond = "async"
    key: str | None = None
    tolerance_seconds: float | None = Field(default=None, gt=0, le=24 * 3600)
    wait_seconds: int = Field(default=5, ge=0, le=3600)
    signature_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    signature_encoding: Literal["hex", "base64"] = "hex"
    signature_prefix: str = Field(default="", max_length=64)

    @field_validator("webhook")
    @classmethod
    def _webhook_path(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(
                "the path after /webhook/ (or /webhook-test/ with mode), without a leading '/': "
                "e.g. 'orders' for {N8N_BASE_URL}/webhook/orders"
            )
        try:
            parse_webhook_path(value.rstrip("/"))
        except InvalidWebhookPath as exc:
            raise ValueError(exc.detail) from None
        return value.rstrip("/")

    @field_validator("key")
    @classmethod
    def _key_source(cls, value: str | None) -> str | None:
        if value is not None:
            parse_key_source(value)  # raises ValueError with the reason
        return value


@dataclass(frozen=True)
class IngressRoute:
    """A route as the gateway serves it."""

    name: str
    source: str  # the routes file, to name in what is said of the route
    tenant: str
    scheme: SchemeName
    secrets: tuple[str, ...]
    hmac_options: HmacOptions | None
    key_source: KeySource
    mode: Mode
    workflow_path: str
    raw_path: str
    respond: Respond
    wait_seconds: int
    tolerance_seconds: float | None

    def __repr__(self) -> str:  # a route may be printed; its secrets never are
        return f"IngressRoute(name={self.name!r}, tenant={self.tenant!r}, scheme={self.scheme!r})"


class RoutesFileError(Exception):
    """The routes file cannot be served; `lines` holds one line per mistake."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_routes(path: Path) -> dict[str, IngressRoute]:
    """The routes of `path` by name, or RoutesFileError naming every mistake."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesFileError([f"{path}: cannot be read ({_reason(exc)})"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutesFileError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_routes(document, source=str(path))


def parse_routes(document: dict[str, Any], *, source: str) -> dict[str, IngressRoute]:
    unknown = sorted(set(document) - {"routes"})
    mistakes = [
        f"{source}: unknown table or key {name!r} (routes go in [routes.<name>])"
        for name in unknown
    ]
    tables = document.get("routes")
    if not isinstance(tables, dict) or not tables:
        mistakes.append(f"{source}: no routes: add a [routes.<name>] table")
        raise RoutesFileError(mistakes)
    routes: dict[str, IngressRoute] = {}
    for name, table in tables.items():
        route_mistakes = _route_mistakes(name, table)
        if route_mistakes:
            mistakes += [f"{source}: route {name!r}: {line}" for line in route_mistakes]
            continue
        routes[name] = _route(name, RouteEntry.model_validate(table), source=source)
    if mistakes:
        raise RoutesFileError(mistakes)
    return routes


def _route_mistakes(name: str, table: object) -> list[str]:
    if not ROUTE_NAME.fullmatch(name):
        return [
            "the name must be 1-128 letters, digits, '.', '_', '~' or '-', starting with a "
            "letter or digit"
        ]
    if not isinstance(table, dict):
        return ["must be a table ([routes.<name>])"]
    secret_mistakes = _secret_mistakes(table)
    try:
        entry = RouteEntry.model_validate(table)
    except ValidationError as exc:
        return [_field_mistake(error) for error in exc.errors()] + secret_mistakes
    return secret_mistakes + _cross_field_mistakes(entry)


def _secret_mistakes(table: dict[str, Any]) -> list[str]:
    """Each secret the route's scheme cannot use, checked even when other fields are wrong."""
    preset = PRESETS.get(table.get("provider"))  # type: ignore[arg-type]
    secrets = table.get("secrets")
    if preset is None or not isinstance(secrets, list):
        return []
    return [
        f"secrets.{index}: {reason}"
        for index, secret in enumerate(secrets)
        if isinstance(secret, str) and (reason := validate_secret(preset.scheme, secret))
    ]


def _field_mistake(error: Any) -> str:
    """A pydantic error as one line that names the field and never echoes its value."""
    field = ".".join(str(part) for part in error["loc"]) or "(route)"
    if error["type"] == "extra_forbidden":
        return f"unknown field {field!r}"
    if error["type"] == "missing":
        return f"{field}: missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if field.startswith("secrets"):  # a pattern or type message could quote the value
        message = message.split(",")[0]
    return f"{field}: {message}"


def _cross_field_mistakes(entry: RouteEntry) -> list[str]:
    mistakes = []
    preset = PRESETS[entry.provider]
    if preset.key is None and entry.key is None:
        mistakes.append(f"key: missing (provider {entry.provider!r} has no preset key source)")
    if entry.provider == "hmac-sha256" and entry.signature_header is None:
        mistakes.append("signature_header: missing (provider 'hmac-sha256' needs it)")
    if entry.provider != "hmac-sha256" and entry.signature_header is not None:
        mistakes.append("signature_header: only for provider 'hmac-sha256'")
    key_text = entry.key or preset.key
    key = parse_key_source(key_text) if key_text else None
    if isinstance(key, HeaderKey) and key.name in _never_a_key(entry):
        mistakes.append(
            f"key: {key.name} carries the signature or a credential, which is never stored; "
            "take the key from another header, the body, or 'body-sha256'"
        )
    return mistakes


def _never_a_key(entry: RouteEntry) -> frozenset[str]:
    """Headers whose values are never stored, so never a delivery's key."""
    options = None
    if entry.signature_header is not None:
        options = HmacOptions(header=entry.signature_header)
    scheme = PRESETS[entry.provider].scheme
    return signature_headers(scheme, options) | {"authorization", "n8n-gate-key", "cookie"}


def _route(name: str, entry: RouteEntry, *, source: str) -> IngressRoute:
    preset = PRESETS[entry.provider]
    key = entry.key or preset.key
    assert key is not None  # checked by _cross_field_mistakes
    workflow_path, raw_path = parse_webhook_path(entry.webhook)
    hmac_options = None
    if entry.signature_header is not None:
        hmac_options = HmacOptions(
            header=entry.signature_header,
            encoding=entry.signature_encoding,
            prefix=entry.signature_prefix,
        )
    return IngressRoute(
        name=name,
        source=source,
        tenant=entry.tenant,
        scheme=preset.scheme,
        secrets=tuple(entry.secrets),
        hmac_options=hmac_options,
        key_source=parse_key_source(key),
        mode=entry.mode,
        workflow_path=workflow_path,
        raw_path=raw_path,
        respond=entry.respond,
        wait_seconds=entry.wait_seconds,
        tolerance_seconds=entry.tolerance_seconds,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8"
