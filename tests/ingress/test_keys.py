"""Where a delivery's key comes from: a header, a JSON Pointer, or the body's hash."""

from __future__ import annotations

import hashlib

import pytest

from app.ingress.keys import (
    BodyHashKey,
    DeliveryKeyMissing,
    HeaderKey,
    JsonPointerKey,
    delivery_key,
    parse_key_source,
)


def key_of(source: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> str:
    return delivery_key(parse_key_source(source), headers=headers or [], body=body, max_length=100)


def test_sources_parse() -> None:
    assert parse_key_source("header:X-GitHub-Delivery") == HeaderKey("x-github-delivery")
    assert parse_key_source("json:/data/object/id") == JsonPointerKey("/data/object/id")
    assert parse_key_source("body-sha256") == BodyHashKey()


@pytest.mark.parametrize("text", ["", "header:", "header:a b", "json:", "json:id", "body", "x:y"])
def test_a_bad_source_says_what_a_source_is(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be|JSON Pointer"):
        parse_key_source(text)


def test_a_header_key_is_found_in_any_case() -> None:
    assert key_of("header:webhook-id", headers=[("Webhook-Id", " msg_1 ")]) == "msg_1"


def test_a_json_pointer_key_follows_rfc_6901() -> None:
    body = b'{"id": "evt_1", "data": {"a/b": {"~k": 7}}}'
    assert key_of("json:/id", body=body) == "evt_1"
    assert key_of("json:/data/a~1b/~0k", body=body) == "7"


def test_the_body_hash_is_sha256_of_the_raw_bytes() -> None:
    body = b'{"n": 1}'
    assert key_of("body-sha256", body=body) == f"sha256:{hashlib.sha256(body).hexdigest()}"


def test_a_long_or_unprintable_key_is_hashed_not_refused() -> None:
    long = "x" * 101
    assert key_of("header:id", headers=[("id", long)]) == (
        f"sha256:{hashlib.sha256(long.encode()).hexdigest()}"
    )
    assert key_of("json:/id", body='{"id": "évé"}'.encode()).startswith("sha256:")


@pytest.mark.parametrize(
    ("source", "headers", "body", "reason"),
    [
        ("header:id", [], b"", "no id header"),
        ("header:id", [("id", "a"), ("id", "b")], b"", "sent 2 times"),
        ("header:id", [("id", "  ")], b"", "empty"),
        ("json:/id", [], b"not json", "not JSON"),
        ("json:/id", [], b'{"other": 1}', "no string or integer"),
        ("json:/id", [], b'{"id": {"nested": 1}}', "no string or integer"),
        ("json:/id", [], b'{"id": true}', "no string or integer"),
        ("json:/id", [], b"[" * 100_000, "not JSON"),
    ],
)
def test_a_delivery_without_its_key_says_why(
    source: str, headers: list[tuple[str, str]], body: bytes, reason: str
) -> None:
    with pytest.raises(DeliveryKeyMissing) as raised:
        key_of(source, headers=headers, body=body)
    assert reason in raised.value.reason
