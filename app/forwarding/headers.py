"""Which headers cross the gateway (RFC 9110 §7.6.1: hop-by-hop headers never do)."""

from __future__ import annotations

from collections.abc import Iterable

from app.tenants.service import GATE_KEY_HEADER

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself, or meaningful only between the client and the gateway (which
# has the whole body before it forwards, so an Expect: 100-continue was met already).
_GATE_KEY = GATE_KEY_HEADER.lower()
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    _GATE_KEY,
    "content-length",
    "accept-encoding",
    "expect",
}
# When the API key came in Authorization rather than N8n-Gate-Key, that header was the gateway's.
NOT_FORWARDED_WITH_KEY_IN_AUTHORIZATION = NOT_FORWARDED | {"authorization"}
# Regenerated on every answer the gateway sends, so never recorded or replayed. (The client
# decodes gzip and deflate bodies and drops their Content-Encoding; any other stays with its body.)
NOT_REPLAYED = HOP_BY_HOP | {"content-length", "date", "server"}


def end_to_end(
    headers: Iterable[tuple[str, str]], *, drop: frozenset[str]
) -> list[tuple[str, str]]:
    """Headers minus `drop` and minus any header the Connection header names."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return [
        (name, value)
        for name, value in pairs
        if (lowered := name.lower()) not in drop and lowered not in named
    ]


def to_forward(
    headers: Iterable[tuple[str, str]], *, client_host: str | None
) -> list[tuple[str, str]]:
    """The headers n8n gets for a client's request: end-to-end ones, plus X-Forwarded-For.
    Authorization carries the gateway's API key unless the client sent that in N8n-Gate-Key;
    then it is the client's credential for n8n's webhook, and passes."""
    pairs = list(headers)
    key_apart = any(name.lower() == _GATE_KEY for name, _ in pairs)
    drop = NOT_FORWARDED if key_apart else NOT_FORWARDED_WITH_KEY_IN_AUTHORIZATION
    forwarded = end_to_end(pairs, drop=drop)
    if client_host:
        forwarded.append(("X-Forwarded-For", client_host))
    return forwarded
