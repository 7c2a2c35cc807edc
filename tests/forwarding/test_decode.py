"""Compressed answers decoded as they are held: within the answer limit, on disk when the
budget has no room, and refused when corrupt, cut short or followed by other bytes."""

from __future__ import annotations

import gzip
import tracemalloc
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
async def test_gzip_and_both_deflates_decode_whole(encoding: str, compress: object) -> None:
    assert callable(compress)
    decoded = await decode(held(compress(PLAIN)), encoding=encoding, max_bytes=len(PLAIN))
    assert content(decoded) == PLAIN


async def test_a_bomb_stops_one_byte_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert await decode(held(bomb), encoding="gzip", max_bytes=1 << 20) is None


async def test_what_does_not_fit_the_budget_is_decoded_to_disk() -> None:
    budget = ByteBudget(limit=len(PLAIN) // 2)
    decoded = await decode(
        held(gzip.compress(PLAIN)), encoding="gzip", max_bytes=1 << 20, budget=budget
    )
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
async def test_damaged_answers_are_undecodable(damaged: bytes) -> None:
    with pytest.raises(UndecodableAnswer):
        await decode(held(damaged), encoding="gzip", max_bytes=1 << 20)


async def test_an_answer_that_decodes_to_exactly_its_limit_is_whole() -> None:
    """Zeros compress so well that all input is read long before all output is out."""
    zeros = b"\0" * (1 << 20)
    decoded = await decode(held(gzip.compress(zeros)), encoding="gzip", max_bytes=len(zeros))
    assert content(decoded) == zeros


async def test_decoding_holds_a_slice_at_a_time_beyond_what_the_budget_admits() -> None:
    """A 64 KiB gzip of 64 MiB once came out in one piece: 128 MiB the budget never saw."""
    bomb = held(gzip.compress(b"\0" * (64 << 20)))
    budget = ByteBudget(limit=1 << 20)
    tracemalloc.start()
    try:
        decoded = await decode(bomb, encoding="gzip", max_bytes=64 << 20, budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded is not None
    assert decoded.on_disk
    assert decoded.size == 64 << 20
    assert peak < 4 << 20
