"""Which headers cross the gateway (RFC 9110 §7.6.1: hop-by-hop headers never do)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Where a caller puts its gateway API key when Authorization belongs to n8n's webhook (its
# Basic, JWT or Header Auth): then Authorization is forwarded like any other header, and this
# one never is.
GATE_KEY_HEADER = "N8n-Gate-Key"
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
# X-Forwarded-* are rebuilt by `to_forward` from what the gateway saw.
FORWARDED_FOR = "x-forwarded-for"
FORWARDED_PROTO = "x-forwarded-proto"
FORWARDED_HOST = "x-forwarded-host"
NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    _GATE_KEY,
    "content-length",
    "accept-encoding",
    "expect",
    FORWARDED_FOR,
    FORWARDED_PROTO,
    FORWARDED_HOST,
}
# When the API key came in Authorization rather than N8n-Gate-Key, that header was the gateway's.
NOT_FORWARDED_WITH_KEY_IN_AUTHORIZATION = NOT_FORWARDED | {"authorization"}
# Regenerated on every answer the gateway sends, so never recorded or replayed. (The client
# decodes gzip and deflate bodies and drops their Content-Encoding; any other stays with its body.)
# The gateway's own headers (Idempotent-Replayed, N8n-Gate-*) come from the gateway alone: an
# answer from n8n that carries one is not believed.
NOT_REPLAYED = HOP_BY_HOP | {"content-length", "date", "server", "idempotent-replayed"}
GATE_HEADER_PREFIX = "n8n-gate-"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C Trace Context (https://www.w3.org/TR/trace-context/): a version other than ff, then the
# trace id, the parent id and the flags in lowercase hex; version 00 ends there, a later version
# may go on after a dash.
_TRACEPARENT = re.compile(
    r"(?!ff)([0-9a-f]{2})-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[\x21-\x7e]*)?"
)
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_LENGTH = 8192


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
        if (lowered := name.lower()) not in drop
        and lowered not in named
        and not lowered.startswith(GATE_HEADER_PREFIX)
    ]


@dataclass(frozen=True)
class Via:
    """How a request reached the gateway: the TCP peer, the scheme and Host it used, and
    whether that peer is a trusted proxy (GATE_TRUSTED_PROXIES) whose X-Forwarded-Proto and
    X-Forwarded-Host are believed."""

    peer: str | None
    scheme: str
    host: str | None
    peer_is_trusted_proxy: bool = False


def is_trusted(
    peer: str | None, proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if peer is None or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in proxies)


def to_forward(headers: Iterable[tuple[str, str]], *, via: Via) -> list[tuple[str, str]]:
    """The headers n8n gets for a client's request: end-to-end ones, plus X-Forwarded-*.

    Authorization carries the gateway's API key unless the client sent that in N8n-Gate-Key;
    then it is the client's credential for n8n's webhook, and passes. X-Forwarded-For is the
    chain the client sent plus the peer, once, as any proxy appends it (n8n's
    N8N_PROXY_HOPS counts from the right); Proto and Host come from a trusted proxy, else
    from what the gateway itself saw. W3C trace context passes only when well formed."""
    pairs = list(headers)
    key_apart = any(name.lower() == _GATE_KEY for name, _ in pairs)
    drop = NOT_FORWARDED if key_apart else NOT_FORWARDED_WITH_KEY_IN_AUTHORIZATION
    forwarded = valid_trace_context(end_to_end(pairs, drop=drop))
    chain = [value.strip() for name, value in pairs if name.lower() == FORWARDED_FOR]
    if via.peer:
        chain.append(via.peer)
    if chain:
        forwarded.append(("X-Forwarded-For", ", ".join(chain)))
    proto = _first(pairs, FORWARDED_PROTO) if via.peer_is_trusted_proxy else None
    host = _first(pairs, FORWARDED_HOST) if via.peer_is_trusted_proxy else None
    forwarded.append(("X-Forwarded-Proto", proto or via.scheme))
    if host or via.host:
        forwarded.append(("X-Forwarded-Host", host or via.host or ""))
    return forwarded


def _first(pairs: list[tuple[str, str]], name: str) -> str | None:
    return next((value.strip() for key, value in pairs if key.lower() == name), None)


def valid_trace_context(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` with W3C trace context only if it is well formed: one valid `traceparent`,
    and `tracestate` (its lines joined) while that is valid too. A malformed, repeated or absent
    traceparent takes tracestate with it, as the spec says; a malformed tracestate goes alone."""
    pairs = list(headers)
    parents = [value.strip() for name, value in pairs if name.lower() == TRACEPARENT]
    states = [value for name, value in pairs if name.lower() == TRACESTATE]
    if not parents and not states:
        return pairs
    kept = [(name, value) for name, value in pairs if name.lower() not in (TRACEPARENT, TRACESTATE)]
    if len(parents) != 1 or not _is_traceparent(parents[0]):
        return kept
    kept.append((TRACEPARENT, parents[0]))
    state = _tracestate(states)
    if state:
        kept.append((TRACESTATE, state))
    return kept


def _is_traceparent(value: str) -> bool:
    match = _TRACEPARENT.fullmatch(value)
    return match is not None and not (match.group(1) == "00" and match.group(2))


def _tracestate(lines: Sequence[str]) -> str | None:
    """The tracestate lines as one, or None when any member is malformed or there are too many."""
    joined = ",".join(lines)
    if not lines or len(joined) > MAX_TRACESTATE_LENGTH:
        return None
    members = [member.strip(" \t") for member in joined.split(",")]
    members = [member for member in members if member]
    keys = {member.partition("=")[0] for member in members}
    if len(members) > MAX_TRACESTATE_MEMBERS or len(keys) != len(members):
        return None
    if not all(_TRACESTATE_MEMBER.fullmatch(member) for member in members):
        return None
    return ",".join(members) or None
