"""Where a provider's delivery gets its idempotency key: a header it sends (`webhook-id`,
`X-GitHub-Delivery`), a JSON Pointer (RFC 6901) into its body (Stripe's `/id`), or, for a
provider that names nothing, the SHA-256 of the body itself."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jsonpointer

from app.ingress.signatures import standard_webhooks_id

# Header names as RFC 9110 spells tokens.
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")


@dataclass(frozen=True, slots=True)
class HeaderKey:
    name: str  # lower case

    def __str__(self) -> str:
        return f"header {self.name}"


@dataclass(frozen=True, slots=True)
class JsonPointerKey:
    pointer: str

    def __str__(self) -> str:
        return f"JSON pointer {self.pointer}"


@dataclass(frozen=True, slots=True)
class MessageIdKey:
    """Standard Webhooks' message id, under either naming (webhook-id, or Svix's svix-id)."""

    def __str__(self) -> str:
        return "header webhook-id (or svix-id)"


@dataclass(frozen=True, slots=True)
class BodyHashKey:
    def __str__(self) -> str:
        return "the body's SHA-256"


KeySource = HeaderKey | JsonPointerKey | MessageIdKey | BodyHashKey


class DeliveryKeyMissing(Exception):
    """The delivery does not carry its key where the route says; `reason` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_key_source(text: str) -> KeySource:
    """`header:<name>`, `json:<pointer>`, `body-sha256` or `standard-webhooks-id`; ValueError
    says what is wrong."""
    kind, _, value = text.partition(":")
    if text == "body-sha256":
        return BodyHashKey()
    if text == "standard-webhooks-id":
        return MessageIdKey()
    if kind == "header" and _TOKEN.fullmatch(value):
        return HeaderKey(value.lower())
    if kind == "json":
        try:
            jsonpointer.JsonPointer(value)
        except jsonpointer.JsonPointerException as exc:
            raise ValueError(f"not a JSON Pointer (RFC 6901): {exc}") from None
        if value:
            return JsonPointerKey(value)
    raise ValueError(
        "must be 'header:<Header-Name>', 'json:<JSON Pointer such as /id>', 'body-sha256' "
        "or 'standard-webhooks-id'"
    )


def delivery_key(
    source: KeySource, *, headers: Sequence[tuple[str, str]], body: bytes, max_length: int
) -> str:
    """The delivery's key: as sent when it is 1-`max_length` printable ASCII characters,
    else `sha256:<hex>` of what was sent (a key never varies with how it is stored)."""
    if isinstance(source, BodyHashKey):
        return f"sha256:{hashlib.sha256(body).hexdigest()}"
    if isinstance(source, HeaderKey):
        sent = _from_header(source, headers)
    elif isinstance(source, MessageIdKey):
        sent = _message_id(headers)
    else:
        sent = _from_body(source, body)
    if not sent:
        raise DeliveryKeyMissing(f"the delivery's key ({source}) is empty")
    if len(sent) <= max_length and _PRINTABLE_ASCII.fullmatch(sent):
        return sent
    return f"sha256:{hashlib.sha256(sent.encode()).hexdigest()}"


def _from_header(source: HeaderKey, headers: Sequence[tuple[str, str]]) -> str:
    values = [value for name, value in headers if name.lower() == source.name]
    if not values:
        raise DeliveryKeyMissing(f"no {source.name} header")
    if len(values) > 1:
        raise DeliveryKeyMissing(f"{source.name} sent {len(values)} times")
    return values[0].strip(" \t")


def _message_id(headers: Sequence[tuple[str, str]]) -> str:
    sent = standard_webhooks_id(headers)
    if sent is None:
        raise DeliveryKeyMissing("no single webhook-id (or svix-id) header")
    return sent


def _from_body(source: JsonPointerKey, body: bytes) -> str:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise DeliveryKeyMissing(f"the body is not JSON, so it has no {source}") from None
    value = jsonpointer.resolve_pointer(document, source.pointer, default=None)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DeliveryKeyMissing(f"the body has no string or integer at {source}")
    return str(value)
