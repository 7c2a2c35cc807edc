"""What a trigger request is: its idempotency key, its webhook path, and its fingerprint."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

from app.errors import InvalidIdempotencyKey, InvalidWebhookPath, MissingIdempotencyKey
from app.numbers import ascii_int

Mode = Literal["webhook", "webhook-test"]

MAX_KEY_LENGTH = 255
# Keys of provider deliveries (/in/<route>) are `in:<route>:<the provider's id>`; a client's own
# key may not start so, or it could take a provider's delivery before it arrives.
PROVIDER_KEY_PREFIX = "in:"
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")
# Characters a webhook path segment may hold once percent-decoded: n8n paths are URL path
# segments; anything else (controls, backslashes, '%' tricks) is refused rather than passed on.
_SEGMENT = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@ ]+$")
_ENCODED_SEPARATORS = re.compile(r"%(2f|5c|25|00)", re.IGNORECASE)


@dataclass(frozen=True)
class TriggerRequest:
    key: str
    method: str
    mode: Mode
    workflow_path: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]  # what n8n gets (app.forwarding.headers.to_forward)
    body: bytes

    @cached_property
    def fingerprint(self) -> bytes:
        """Same method, path, query (in any parameter order) and body ⇔ same fingerprint."""
        digest = hashlib.sha256()
        canonical_query = urlencode(sorted(parse_qsl(self.query, keep_blank_values=True)))
        for part in (self.method, self.mode, self.workflow_path, canonical_query):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(self.body)
        return digest.digest()


def location_for(key: str) -> str:
    """Where a trigger's execution can be looked up; every trigger answer points there."""
    return f"/v1/executions/{quote(key, safe='')}"


def is_idempotency_key(key: str) -> bool:
    """Whether `key` could be an execution's: 1-255 printable ASCII, as a trigger requires."""
    return 0 < len(key) <= MAX_KEY_LENGTH and _PRINTABLE_ASCII.fullmatch(key) is not None


def parse_idempotency_key(values: list[str]) -> str:
    """The key as an RFC 8941 sf-string (`"abc"`) or a bare token; 1-255 printable ASCII."""
    if not values:
        raise MissingIdempotencyKey(
            "Send an Idempotency-Key header (for example a UUID) so retries of this trigger "
            "run the workflow only once."
        )
    if len(values) > 1:
        raise InvalidIdempotencyKey("Send exactly one Idempotency-Key header.")
    raw = values[0].strip(" \t")
    key = _unquote_sf_string(raw) if raw.startswith('"') else raw
    if not key or len(key) > MAX_KEY_LENGTH or not _PRINTABLE_ASCII.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"An Idempotency-Key is 1 to {MAX_KEY_LENGTH} printable ASCII characters, "
            'bare or as a quoted string ("...").'
        )
    if key.startswith(PROVIDER_KEY_PREFIX):
        raise InvalidIdempotencyKey(
            f"Idempotency-Keys starting with {PROVIDER_KEY_PREFIX!r} are the keys of provider "
            "deliveries (/in/<route>); choose another key."
        )
    return key


def _unquote_sf_string(raw: str) -> str:
    if len(raw) < 2 or not raw.endswith('"'):
        raise InvalidIdempotencyKey('A quoted Idempotency-Key must end with a closing quote (").')
    inner, out, escaped = raw[1:-1], [], False
    for char in inner:
        if escaped:
            if char not in '"\\':
                raise InvalidIdempotencyKey('Inside quotes, only \\" and \\\\ may be escaped.')
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            raise InvalidIdempotencyKey("A quote inside a quoted Idempotency-Key must be escaped.")
        else:
            out.append(char)
    if escaped:
        raise InvalidIdempotencyKey("A quoted Idempotency-Key cannot end with a backslash.")
    return "".join(out)


def parse_webhook_path(raw_tail: str) -> tuple[str, str]:
    """Validate the part of the raw (still percent-encoded) URL path after the prefix.

    Returns (workflow path as n8n sees it, raw path to forward). Anything that could leave
    the webhook prefix on n8n (dot segments, encoded or back slashes, absolute URLs) is a 400.
    """
    if _ENCODED_SEPARATORS.search(raw_tail) or "\\" in raw_tail:
        raise _bad_path("encoded slashes, backslashes and encoded '%' are not allowed")
    forwarded = raw_tail.rstrip("/")  # n8n strips a trailing slash too
    segments = forwarded.split("/")
    if not forwarded or any(segment == "" for segment in segments):
        raise _bad_path("the path must name a webhook and hold no empty segments ('//')")
    for segment in segments:
        try:
            decoded = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise _bad_path("percent-encoded bytes must be UTF-8") from None
        if decoded in {".", ".."}:
            raise _bad_path("'.' and '..' segments are not allowed")
        if not _SEGMENT.fullmatch(decoded):
            raise _bad_path(f"the segment {decoded!r} holds characters a webhook path cannot")
    if "://" in unquote(forwarded):
        raise _bad_path("absolute URLs are not allowed")
    return unquote(forwarded), forwarded


def _bad_path(reason: str) -> InvalidWebhookPath:
    return InvalidWebhookPath(
        f"Invalid webhook path: {reason}. Use the path of your n8n webhook, "
        "as in /webhook/<path> or /webhook-test/<path>."
    )


def parse_preferences(values: list[str]) -> dict[str, str]:
    """RFC 7240 `Prefer` headers as {token: value}; the first occurrence of a token wins."""
    preferences: dict[str, str] = {}
    for header in values:
        for preference in header.split(","):
            token, _, value = preference.split(";")[0].strip().partition("=")
            preferences.setdefault(token.strip().lower(), value.strip().strip('"'))
    return preferences


def parse_prefer_wait(values: list[str]) -> int | None:
    """The `wait` preference in seconds; None when absent or malformed (the RFC says to ignore
    what cannot be understood)."""
    value = parse_preferences(values).get("wait")
    return None if value is None else ascii_int(value, max_digits=9)
