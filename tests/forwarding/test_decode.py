"""Compressed answers decoded as they are held: within the answer limit, on disk when the
budget has no room, and refused when corrupt, cut short or followed by other bytes."""

from __future__ import annotations

import gzip
import zlib

import pytest

from app.forwarding.client import UndecodableAnswer, decode
from app.memory import Body, ByteBudget

PLAIN = b'{"order": 42, "lines": [' + b'"line", ' * 20_000 + b'"end"]}'


def held(data: bytes, budget: ByteBudget | None = None) -> Body:
    body = Body(budget)
    for start in range(0, len(data), 1000):
        body.write(data[start : start + 1000])
    return body


def content(body: Body | None) -> bytes:
    assert body is not None
    return b"".join(body.chunks())


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
)
def test_gzip_and_both_deflates_decode_whole(encoding: str, compress: object) -> None:
    assert callable(compress)
    decoded = decode(held(compress(PLAIN)), encoding=encoding, max_bytes=len(PLAIN))
    assert content(decoded) == PLAIN


def test_a_bomb_stops_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert decode(held(bomb), encoding="gzip", max_bytes=1 << 20) is None


def test_what_does_not_fit_the_budget_is_decoded_to_disk() -> None:
    budget = ByteBudget(limit=len(PLAIN) // 2)
    decoded = decode(held(gzip.compress(PLAIN)), encoding="gzip", max_bytes=1 << 20, budget=budget)
    assert decoded is not None
    assert decoded.on_disk
    assert content(decoded) == PLAIN


@pytest.mark.parametrize(
    "damaged",
    [
        gzip.compress(PLAIN)[:-100],  # cut short
        gzip.compress(PLAIN) + b"trailing bytes",
        b"not gzip at all",
    ],
)
def test_damaged_answers_are_undecodable(damaged: bytes) -> None:
    with pytest.raises(UndecodableAnswer):
        decode(held(damaged), encoding="gzip", max_bytes=1 << 20)
