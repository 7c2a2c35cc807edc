"""Provider signatures, checked on the raw body bytes before anything is stored or forwarded.

Schemes (docs/adr/0005-signature-verification.md says why each is done the way it is):

    standard-webhooks  webhook-id, webhook-timestamp, webhook-signature: "v1,<base64>" entries,
                       space-delimited; HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the
                       base64 after "whsec_" (the `standardwebhooks` package signs). Or the same
                       under svix-id, svix-timestamp, svix-signature (Svix, and Clerk or Resend
                       through it): one family or the other, never both, never a mix
    stripe             Stripe-Signature: "t=<unix>,v1=<hex>[,v1=<hex>...]"; HMAC of "{t}.{body}"
    github             X-Hub-Signature-256: "sha256=<hex>"; HMAC of the body
    shopify            X-Shopify-Hmac-Sha256: "<base64>"; HMAC of the body
    slack              X-Slack-Signature: "v0=<hex>", X-Slack-Request-Timestamp; HMAC of
                       "v0:{timestamp}:{body}"
    hmac-sha256        a configured header: [prefix]<hex or base64>; HMAC of the body

All HMAC-SHA256. Every scheme but Standard Webhooks keys it with the secret's UTF-8 bytes
(Stripe's "whsec_" included). A route may have several secrets (rotation): any one is enough.
Where the scheme has a timestamp it must be within `tolerance_seconds` of `now`, either way.

A header the scheme reads that is missing, sent twice, malformed or too long refuses the
delivery: with two copies, which one a proxy or framework hands on is anybody's guess.
`check_headers` runs every one of those checks (and the timestamp's) without the body, so the
edge can refuse before reading it; `verify` runs them again, from the same parsing code. Digests
are compared as bytes with `hmac.compare_digest`, every secret against every offered signature
(at most MAX_SIGNATURES of them). A refusal's reason names the header or the check that failed,
never a secret, a signature or the body: it is logged and told to the sender.

Pure: no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from standardwebhooks.webhooks import Webhook

SchemeName = Literal["standard-webhooks", "stripe", "github", "shopify", "slack", "hmac-sha256"]
SCHEMES: tuple[SchemeName, ...] = get_args(SchemeName)

# Bounds on what a sender can make the gateway do: one header value's length, and the number
# of signatures one delivery may offer (several during the sender's own key rotation).
MAX_HEADER_CHARS = 4096
MAX_SIGNATURES = 16
# Unix seconds, canonical decimal: up to 12 digits reaches past the year 9999.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
# 32 bytes in standard base64: 43 characters and one "=" of padding (accepted without it).
_BASE64_DIGEST = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=?")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# webhook-id: visible ASCII, as every sender uses; it is part of the signed content.
_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,256}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

# Standard Webhooks' (id, timestamp, signature) headers: the spec's names, then Svix's (Svix
# signs the same content with the same whsec_ secrets, and Clerk and Resend send through it).
_STANDARD_WEBHOOKS: tuple[tuple[str, str, str], ...] = (
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ("svix-id", "svix-timestamp", "svix-signature"),
)
_STANDARD_WEBHOOKS_IDS = frozenset(family[0] for family in _STANDARD_WEBHOOKS)

_WHSEC = "whsec_"
# The Standard Webhooks spec: a symmetric secret is 24 to 64 random bytes.
_WHSEC_MIN_BYTES = 24
_WHSEC_MAX_BYTES = 64
MAX_SECRET_CHARS = 1024


@dataclass(frozen=True, slots=True)
class HmacOptions:
    """Where the generic "hmac-sha256" scheme finds its signature."""

    header: str  # e.g. "X-Signature" (matched case-insensitively)
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""  # e.g. "sha256="

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.header):
            raise ValueError("HmacOptions.header must be an HTTP header name")
        if self.encoding not in ("hex", "base64"):
            raise ValueError("HmacOptions.encoding must be 'hex' or 'base64'")


class SignatureRejected(Exception):
    """The delivery is not signed by any of the route's secrets, or not recently enough.

    `reason` is short and safe to log or answer with: it never holds a secret, a signature or
    the body.
    """

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(
    scheme: SchemeName,
    *,
    secrets: Sequence[str],
    headers: Sequence[tuple[str, str]],
    body: bytes,
    now: float,
    tolerance_seconds: float,
    hmac_options: HmacOptions | None = None,
) -> None:
    """Returns when one of `secrets` signed this delivery; raises SignatureRejected otherwise.

    ValueError means the caller's configuration is wrong (no secrets, an unusable secret, a
    negative tolerance, "hmac-sha256" without options): never a reason to let a delivery in.
    """
    _check_configuration(scheme, secrets, now, tolerance_seconds, hmac_options)
    offer = _read_headers(scheme, headers, now, tolerance_seconds, hmac_options)
    _require_match(_expected(scheme, secrets, offer, body), offer.digests, offer.where)


def check_headers(
    scheme: SchemeName,
    *,
    headers: Sequence[tuple[str, str]],
    now: float,
    tolerance_seconds: float,
    hmac_options: HmacOptions | None = None,
) -> None:
    """Everything verify() checks that does not need the body: the scheme's headers are present,
    each once, well formed (digest lengths/encodings, at most MAX_SIGNATURES, ids), and the
    timestamp (where the scheme has one) is within the tolerance. Raises SignatureRejected with
    the same reasons verify() would give; verify() still checks all of it again.

    Passing says nothing about the signature itself: only verify() with the body can.
    ValueError means the caller's configuration is wrong, as for verify().
    """
    _check_configuration(scheme, None, now, tolerance_seconds, hmac_options)
    _read_headers(scheme, headers, now, tolerance_seconds, hmac_options)


def signature_headers(
    scheme: SchemeName, hmac_options: HmacOptions | None = None
) -> frozenset[str]:
    """Lower-case names of the headers that carry the signature (and its timestamp) for this
    scheme, so the gateway can strip them before storing or forwarding (never store a signature).

    `webhook-id` (`svix-id`) is not among them: it names the delivery, and is its idempotency
    key. GitHub's legacy SHA-1 `X-Hub-Signature`, sent beside the SHA-256 one, is; so are both
    namings of Standard Webhooks' timestamp and signature, whichever the sender uses.
    """
    if scheme == "standard-webhooks":
        return frozenset(
            name
            for _, timestamp, signature in _STANDARD_WEBHOOKS
            for name in (timestamp, signature)
        )
    if scheme == "stripe":
        return frozenset({"stripe-signature"})
    if scheme == "github":
        return frozenset({"x-hub-signature-256", "x-hub-signature"})
    if scheme == "shopify":
        return frozenset({"x-shopify-hmac-sha256"})
    if scheme == "slack":
        return frozenset({"x-slack-signature", "x-slack-request-timestamp"})
    if scheme == "hmac-sha256":
        if hmac_options is None:
            raise ValueError("the hmac-sha256 scheme needs HmacOptions")
        return frozenset({hmac_options.header.lower()})
    raise ValueError(f"unknown signature scheme {scheme!r}")


def validate_secret(scheme: SchemeName, secret: str) -> str | None:
    """None if the secret is usable for the scheme, else a one-line reason that never holds it."""
    if scheme not in SCHEMES:
        return f"unknown signature scheme {scheme!r}"
    if not secret:
        return "the secret is empty"
    if secret != secret.strip():
        return "the secret has leading or trailing whitespace"
    if len(secret) > MAX_SECRET_CHARS:
        return f"the secret is longer than {MAX_SECRET_CHARS} characters"
    if scheme == "standard-webhooks":
        if not secret.startswith(_WHSEC):
            return "a Standard Webhooks secret starts with whsec_"
        key = _strict_base64(secret.removeprefix(_WHSEC))
        if key is None:
            return "a Standard Webhooks secret is whsec_ followed by base64"
        if not _WHSEC_MIN_BYTES <= len(key) <= _WHSEC_MAX_BYTES:
            return (
                f"a Standard Webhooks secret decodes to {_WHSEC_MIN_BYTES} to "
                f"{_WHSEC_MAX_BYTES} bytes, not {len(key)}"
            )
    if scheme == "stripe" and not secret.startswith(_WHSEC):
        return "a Stripe endpoint signing secret starts with whsec_ (not an API key)"
    return None


def standard_webhooks_id(headers: Sequence[tuple[str, str]]) -> str | None:
    """The Standard Webhooks delivery id, `webhook-id` or Svix's `svix-id`, surrounding blanks
    removed: None unless exactly one of the two is sent, once. (verify() checks its form.)"""
    values = [value for key, value in headers if key.lower() in _STANDARD_WEBHOOKS_IDS]
    return values[0].strip(" \t") if len(values) == 1 else None


# --- the schemes: each reads its headers into an _Offer ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Offer:
    """What a delivery's headers say, every rule on them checked: all that verify() needs to
    compare the signatures, besides the body and the secrets."""

    where: str  # the header holding the signatures, as reasons name it
    digests: tuple[bytes | None, ...]  # None: an entry in a signature's place that is no digest
    timestamp: str = ""  # as sent, and signed: a canonical decimal (schemes that have one)
    message_id: str = ""  # Standard Webhooks: the delivery's id, signed too
    signed_at: datetime | None = None  # Standard Webhooks: the timestamp, for the package


def _read_headers(
    scheme: SchemeName,
    headers: Sequence[tuple[str, str]],
    now: float,
    tolerance_seconds: float,
    hmac_options: HmacOptions | None,
) -> _Offer:
    offer = _read_scheme(scheme, headers, now, tolerance_seconds, hmac_options)
    if all(digest is None for digest in offer.digests):
        # Not one offered entry is a digest: no body and no secret can match. verify() would
        # say so after reading the body; this says it before.
        raise SignatureRejected(_no_match(offer.where))
    return offer


def _read_scheme(
    scheme: SchemeName,
    headers: Sequence[tuple[str, str]],
    now: float,
    tolerance_seconds: float,
    hmac_options: HmacOptions | None,
) -> _Offer:
    if scheme == "standard-webhooks":
        return _read_standard_webhooks(headers, now, tolerance_seconds)
    if scheme == "stripe":
        return _read_stripe(headers, now, tolerance_seconds)
    if scheme == "github":
        value = _single_header(headers, "x-hub-signature-256")
        if not value.startswith("sha256="):
            raise SignatureRejected("malformed header x-hub-signature-256 (not sha256=)")
        digest = _hex_digest(value.removeprefix("sha256="), "x-hub-signature-256")
        return _Offer("x-hub-signature-256", (digest,))
    if scheme == "shopify":
        value = _single_header(headers, "x-shopify-hmac-sha256")
        digest = _base64_digest(value, "x-shopify-hmac-sha256")
        return _Offer("x-shopify-hmac-sha256", (digest,))
    if scheme == "slack":
        return _read_slack(headers, now, tolerance_seconds)
    assert hmac_options is not None  # _check_configuration made sure
    return _read_generic(headers, hmac_options)


def _expected(
    scheme: SchemeName, secrets: Sequence[str], offer: _Offer, body: bytes
) -> list[bytes]:
    """The digest each secret gives this delivery."""
    if scheme == "standard-webhooks":
        assert offer.signed_at is not None  # _read_standard_webhooks made sure
        expected: list[bytes] = []
        for secret in secrets:
            # The package signs "{id}.{floor(timestamp)}.{body}", which is the header's text
            # again: _TIMESTAMP admits only canonical decimals.
            versioned = Webhook(secret).sign(offer.message_id, offer.signed_at, body)
            expected.append(base64.b64decode(versioned.partition(",")[2]))
        return expected
    if scheme == "stripe":
        return _hmacs(secrets, offer.timestamp.encode() + b"." + body)
    if scheme == "slack":
        return _hmacs(secrets, b"v0:" + offer.timestamp.encode() + b":" + body)
    return _hmacs(secrets, body)


def _standard_webhooks_names(headers: Sequence[tuple[str, str]]) -> tuple[str, str, str]:
    """The id, timestamp and signature header names this delivery uses: the spec's or Svix's."""
    sent = {key.lower() for key, _ in headers}
    used = [family for family in _STANDARD_WEBHOOKS if sent.intersection(family)]
    if len(used) > 1:
        if all(sent.issuperset(family) for family in used):
            raise SignatureRejected("ambiguous: both webhook-* and svix-* headers sent")
        raise SignatureRejected("mixed webhook-* and svix-* headers")
    return used[0] if used else _STANDARD_WEBHOOKS[0]


def _read_standard_webhooks(
    headers: Sequence[tuple[str, str]], now: float, tolerance_seconds: float
) -> _Offer:
    id_name, timestamp_name, signature_name = _standard_webhooks_names(headers)
    msg_id = _single_header(headers, id_name)
    raw_timestamp = _single_header(headers, timestamp_name)
    offered = _single_header(headers, signature_name)
    if not _MESSAGE_ID.fullmatch(msg_id):
        raise SignatureRejected(f"malformed header {id_name}")
    timestamp = _fresh_timestamp(raw_timestamp, timestamp_name, now, tolerance_seconds)
    # Space-delimited "<version>,<base64>" entries; versions other than v1 (v1a: asymmetric)
    # are not ours to check, and an entry that is not even that is nobody's signature.
    digests: list[bytes | None] = []
    for entry in offered.split():
        version, comma, signature = entry.partition(",")
        if comma and version == "v1":
            digests.append(_base64_digest_or_none(signature))
    if not digests:
        raise SignatureRejected(f"no v1 signature in header {signature_name}")
    _limit_signatures(digests, signature_name)
    try:
        signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise SignatureRejected(f"malformed header {timestamp_name}") from None
    return _Offer(
        signature_name,
        tuple(digests),
        timestamp=raw_timestamp,
        message_id=msg_id,
        signed_at=signed_at,
    )


def _read_stripe(
    headers: Sequence[tuple[str, str]], now: float, tolerance_seconds: float
) -> _Offer:
    value = _single_header(headers, "stripe-signature")
    timestamps: list[str] = []
    digests: list[bytes | None] = []
    for item in value.split(","):
        name, equals, text = item.strip().partition("=")
        if not equals:
            raise SignatureRejected("malformed header stripe-signature")
        if name == "t":
            timestamps.append(text)
        elif name == "v1":
            digests.append(_hex_digest_or_none(text))
        # v0 (test-mode legacy) and any later scheme: not ours to check.
    if len(timestamps) != 1:
        raise SignatureRejected("malformed header stripe-signature (needs exactly one t=)")
    if not digests:
        raise SignatureRejected("no v1 signature in header stripe-signature")
    _limit_signatures(digests, "stripe-signature")
    _fresh_timestamp(timestamps[0], "stripe-signature t=", now, tolerance_seconds)
    return _Offer("stripe-signature", tuple(digests), timestamp=timestamps[0])


def _read_slack(headers: Sequence[tuple[str, str]], now: float, tolerance_seconds: float) -> _Offer:
    value = _single_header(headers, "x-slack-signature")
    raw_timestamp = _single_header(headers, "x-slack-request-timestamp")
    if not value.startswith("v0="):
        raise SignatureRejected("malformed header x-slack-signature (not v0=)")
    digest = _hex_digest(value.removeprefix("v0="), "x-slack-signature")
    _fresh_timestamp(raw_timestamp, "x-slack-request-timestamp", now, tolerance_seconds)
    return _Offer("x-slack-signature", (digest,), timestamp=raw_timestamp)


def _read_generic(headers: Sequence[tuple[str, str]], options: HmacOptions) -> _Offer:
    name = options.header.lower()
    value = _single_header(headers, name)
    if not value.startswith(options.prefix):
        raise SignatureRejected(f"malformed header {name} (no {options.prefix!r} prefix)")
    text = value[len(options.prefix) :]
    decode = _hex_digest if options.encoding == "hex" else _base64_digest
    return _Offer(name, (decode(text, name),))


# --- shared checks ----------------------------------------------------------------------------


def _check_configuration(
    scheme: SchemeName,
    secrets: Sequence[str] | None,  # None: check_headers(), which has none
    now: float,
    tolerance_seconds: float,
    hmac_options: HmacOptions | None,
) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    if secrets is not None:
        if isinstance(secrets, str) or not secrets:
            raise ValueError("verify needs a sequence of one or more secrets")
        for index, secret in enumerate(secrets):
            reason = validate_secret(scheme, secret)
            if reason is not None:
                raise ValueError(f"secret {index + 1} is unusable: {reason}")
    if not (math.isfinite(tolerance_seconds) and tolerance_seconds >= 0):
        raise ValueError("tolerance_seconds must be a finite number, 0 or more")
    if not math.isfinite(now):
        raise ValueError("now must be a finite unix time")
    if scheme == "hmac-sha256" and hmac_options is None:
        raise ValueError("the hmac-sha256 scheme needs HmacOptions")


def _single_header(headers: Sequence[tuple[str, str]], name: str) -> str:
    """The one value of header `name` (lower case), surrounding blanks removed."""
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        raise SignatureRejected(f"missing header {name}")
    if len(values) > 1:
        raise SignatureRejected(f"duplicated header {name}")
    if len(values[0]) > MAX_HEADER_CHARS:
        raise SignatureRejected(f"header {name} is too long")
    return values[0].strip(" \t")


def _fresh_timestamp(text: str, where: str, now: float, tolerance_seconds: float) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureRejected(f"malformed timestamp in {where}")
    timestamp = int(text)
    if timestamp < now - tolerance_seconds:
        raise SignatureRejected(f"stale timestamp in {where} (older than the tolerance)")
    if timestamp > now + tolerance_seconds:
        raise SignatureRejected(f"timestamp in {where} is in the future (beyond the tolerance)")
    return timestamp


def _limit_signatures(digests: Sequence[object], where: str) -> None:
    if len(digests) > MAX_SIGNATURES:
        raise SignatureRejected(f"more than {MAX_SIGNATURES} signatures in header {where}")


def _hmacs(secrets: Sequence[str], signed: bytes) -> list[bytes]:
    return [hmac.new(secret.encode(), signed, hashlib.sha256).digest() for secret in secrets]


def _require_match(expected: Sequence[bytes], offered: Sequence[bytes | None], where: str) -> None:
    """Every expected digest against every well-formed offered one, in constant time each."""
    matched = False
    for digest in expected:
        for candidate in offered:
            if candidate is not None:
                matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise SignatureRejected(_no_match(where))


def _no_match(where: str) -> str:
    return f"no signature in header {where} matches a secret of the route"


def _hex_digest_or_none(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX_DIGEST.fullmatch(text) else None


def _hex_digest(text: str, where: str) -> bytes:
    digest = _hex_digest_or_none(text)
    if digest is None:
        raise SignatureRejected(f"malformed header {where} (not a hex SHA-256 HMAC)")
    return digest


def _base64_digest_or_none(text: str) -> bytes | None:
    if not _BASE64_DIGEST.fullmatch(text):
        return None
    return base64.b64decode(text if text.endswith("=") else text + "=")


def _base64_digest(text: str, where: str) -> bytes:
    digest = _base64_digest_or_none(text)
    if digest is None:
        raise SignatureRejected(f"malformed header {where} (not a base64 SHA-256 HMAC)")
    return digest


def _strict_base64(text: str) -> bytes | None:
    """Standard base64, padding optional; None for anything else."""
    padded = text + "=" * (-len(text) % 4)
    if not _BASE64.fullmatch(padded):
        return None
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error:
        return None
