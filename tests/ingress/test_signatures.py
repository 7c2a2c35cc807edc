"""Provider signatures (app/ingress/signatures.py): for every scheme a valid delivery passes, and
a tampered body, a wrong secret, a removed secret, a stale or future timestamp, a missing or a
duplicated header are refused with a reason that names no secret and no signature. The header
precheck (check_headers, before the body is read) refuses what verify refuses without the body,
with verify's reason, and passes the rest. Standard Webhooks also arrives under Svix's names.

The test signs its deliveries itself with hmac, hashlib and base64, never with the code under
test nor the standardwebhooks package; the providers' published examples pin the framing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from app.ingress.signatures import (
    MAX_SIGNATURES,
    SCHEMES,
    HmacOptions,
    SchemeName,
    SignatureRejected,
    check_headers,
    signature_headers,
    standard_webhooks_id,
    validate_secret,
    verify,
)

NOW = 1_700_000_000
TOLERANCE = 300
BODY = b'{"id": "evt_1", "amount": 4200, "note": "caf\xc3\xa9"}'
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
HMAC_OPTIONS = HmacOptions(header="X-Signature", encoding="hex", prefix="sha256=")
TIMESTAMPED: list[SchemeName] = ["standard-webhooks", "stripe", "slack"]

Headers = list[tuple[str, str]]


def mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def whsec(seed: int) -> str:
    return "whsec_" + b64(bytes((seed + i) % 256 for i in range(32)))


# Two secrets per scheme: the old and the new one of a rotation.
SECRETS: dict[SchemeName, tuple[str, str]] = {
    "standard-webhooks": (whsec(1), whsec(101)),
    "stripe": ("whsec_old0fStripeEndpoint0123456789", "whsec_new0fStripeEndpoint9876543210"),
    "github": ("old github secret", "It's a new secret to everybody"),
    "shopify": ("shpss_0ld0123456789abcdef", "shpss_new0123456789abcdef"),
    "slack": ("0ld742231b10e8888abcd99yyyzzz85a5", "new742231b10e8888abcd99yyyzzz85a5"),
    "hmac-sha256": ("old generic secret", "new generic secret"),
}
# The headers each scheme reads, as its provider spells them.
READS: dict[SchemeName, list[str]] = {
    "standard-webhooks": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "stripe": ["Stripe-Signature"],
    "github": ["X-Hub-Signature-256"],
    "shopify": ["X-Shopify-Hmac-Sha256"],
    "slack": ["X-Slack-Signature", "X-Slack-Request-Timestamp"],
    "hmac-sha256": ["X-Signature"],
}
# Svix's names for the Standard Webhooks headers (Svix, Clerk, Resend send these).
SVIX = {"webhook-id": "svix-id", "webhook-timestamp": "svix-timestamp"}
SVIX["webhook-signature"] = "svix-signature"
SVIX_READS = list(SVIX.values())
SIGNED_HEADERS = {n.lower() for scheme in SCHEMES for n in READS[scheme]} | set(SVIX_READS)


def signed(scheme: SchemeName, secret: str, body: bytes = BODY, timestamp: int = NOW) -> Headers:
    """The headers the provider would send for `body`, computed here from its documentation."""
    key = secret.encode()
    ts = str(timestamp)
    if scheme == "standard-webhooks":
        raw_key = base64.b64decode(secret.removeprefix("whsec_"))
        signature = mac(raw_key, f"{MSG_ID}.{ts}.".encode() + body)
        sent = [
            ("webhook-id", MSG_ID),
            ("webhook-timestamp", ts),
            ("webhook-signature", "v1," + b64(signature)),
        ]
    elif scheme == "stripe":
        signature = mac(key, f"{ts}.".encode() + body)
        sent = [("Stripe-Signature", f"t={ts},v1={signature.hex()}")]
    elif scheme == "github":
        sent = [("X-Hub-Signature-256", "sha256=" + mac(key, body).hex())]
    elif scheme == "shopify":
        sent = [("X-Shopify-Hmac-Sha256", b64(mac(key, body)))]
    elif scheme == "slack":
        signature = mac(key, f"v0:{ts}:".encode() + body)
        sent = [("X-Slack-Signature", "v0=" + signature.hex()), ("X-Slack-Request-Timestamp", ts)]
    else:
        sent = [("X-Signature", "sha256=" + mac(key, body).hex())]
    return [("Content-Type", "application/json"), *sent, ("User-Agent", "provider/1.0")]


@dataclass
class Rejections:
    """Every refusal the tests provoke, checked as it happens: no secret, no signature."""

    seen: list[str] = field(default_factory=list)

    def check(self, reason: str, secrets: list[str], headers: Headers) -> None:
        assert reason
        assert len(reason) < 200
        for secret in secrets:
            for fragment in (secret, secret.removeprefix("whsec_")):
                assert fragment not in reason
        for name, value in headers:
            if name.lower() in SIGNED_HEADERS:
                for token in signature_tokens(value):
                    assert token not in reason, (reason, token)
        assert BODY.decode() not in reason
        self.seen.append(reason)


def signature_tokens(value: str) -> Iterator[str]:
    """The signature-like parts of a header value (digests in hex or base64), and the value."""
    for part in [value, *value.replace(",", " ").replace("=", " ").split()]:
        if len(part) >= 16:
            yield part


REJECTIONS = Rejections()


def accepts(
    scheme: SchemeName,
    headers: Headers,
    *,
    secrets: list[str] | None = None,
    body: bytes = BODY,
    now: float = NOW,
    tolerance: float = TOLERANCE,
    options: HmacOptions | None = HMAC_OPTIONS,
) -> None:
    used = list(secrets if secrets is not None else SECRETS[scheme])
    verify(
        scheme,
        secrets=used,
        headers=headers,
        body=body,
        now=now,
        tolerance_seconds=tolerance,
        hmac_options=options,
    )


def refuses(
    scheme: SchemeName,
    headers: Headers,
    *,
    secrets: list[str] | None = None,
    body: bytes = BODY,
    now: float = NOW,
    tolerance: float = TOLERANCE,
    options: HmacOptions | None = HMAC_OPTIONS,
) -> str:
    used = list(secrets if secrets is not None else SECRETS[scheme])
    with pytest.raises(SignatureRejected) as raised:
        verify(
            scheme,
            secrets=used,
            headers=headers,
            body=body,
            now=now,
            tolerance_seconds=tolerance,
            hmac_options=options,
        )
    reason = raised.value.reason
    assert str(raised.value) == reason
    REJECTIONS.check(reason, [*used, *SECRETS[scheme]], headers)
    return reason


def replaced(headers: Headers, name: str, value: str) -> Headers:
    return [(n, value if n.lower() == name.lower() else v) for n, v in headers]


def value_of(headers: Headers, name: str) -> str:
    return next(v for n, v in headers if n.lower() == name.lower())


# --- every scheme -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_delivery_signed_with_the_secret_passes(scheme: SchemeName) -> None:
    new = SECRETS[scheme][1]
    accepts(scheme, signed(scheme, new), secrets=[new])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_raw_bytes_are_verified_even_when_they_are_not_utf8(scheme: SchemeName) -> None:
    body = b"\xff\xfe\x00binary\r\n"
    accepts(scheme, signed(scheme, SECRETS[scheme][1], body), body=body)
    accepts(scheme, signed(scheme, SECRETS[scheme][1], b""), body=b"")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_tampered_body_is_refused(scheme: SchemeName) -> None:
    headers = signed(scheme, SECRETS[scheme][1])
    for body in (BODY.replace(b"4200", b"4201"), BODY + b" ", BODY[:-1], b""):
        assert "no signature in header" in refuses(scheme, headers, body=body)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_delivery_signed_with_another_secret_is_refused(scheme: SchemeName) -> None:
    other = whsec(200) if scheme == "standard-webhooks" else "whsec_someone else's secret"
    reason = refuses(scheme, signed(scheme, other))
    assert reason.startswith("no signature in header")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rotation_old_and_new_secrets_both_pass_until_the_old_one_is_removed(
    scheme: SchemeName,
) -> None:
    old, new = SECRETS[scheme]
    for secrets in ([old, new], [new, old]):
        accepts(scheme, signed(scheme, old), secrets=secrets)
        accepts(scheme, signed(scheme, new), secrets=secrets)
    accepts(scheme, signed(scheme, new), secrets=[new])
    refuses(scheme, signed(scheme, old), secrets=[new])


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize(
    ("offset", "outcome"),
    [
        (-TOLERANCE - 1, "stale"),
        (-TOLERANCE, None),
        (0, None),
        (TOLERANCE, None),
        (TOLERANCE + 1, "future"),
    ],
)
def test_timestamps_within_the_tolerance_pass_and_others_are_refused(
    scheme: SchemeName, offset: int, outcome: str | None
) -> None:
    headers = signed(scheme, SECRETS[scheme][0], timestamp=NOW + offset)
    if outcome is None:
        accepts(scheme, headers)
    else:
        assert outcome in refuses(scheme, headers)


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_the_tolerance_is_a_setting(scheme: SchemeName) -> None:
    day_old = signed(scheme, SECRETS[scheme][0], timestamp=NOW - 86_400)
    accepts(scheme, day_old, tolerance=86_400)
    assert "stale" in refuses(scheme, day_old, tolerance=86_399)
    exact = signed(scheme, SECRETS[scheme][0])
    accepts(scheme, exact, tolerance=0)
    accepts(scheme, exact, now=NOW + 0.999, tolerance=1)
    assert "stale" in refuses(scheme, exact, now=NOW + 1.001, tolerance=1)


@pytest.mark.parametrize("scheme", ["github", "shopify", "hmac-sha256"])
def test_schemes_without_a_timestamp_ignore_the_clock(scheme: SchemeName) -> None:
    accepts(scheme, signed(scheme, SECRETS[scheme][0]), now=NOW + 10**7, tolerance=0)


@pytest.mark.parametrize(("scheme", "header"), [(s, h) for s in SCHEMES for h in READS[s]])
def test_a_missing_header_is_refused_by_name(scheme: SchemeName, header: str) -> None:
    headers = [(n, v) for n, v in signed(scheme, SECRETS[scheme][0]) if n != header]
    assert refuses(scheme, headers) == f"missing header {header.lower()}"


@pytest.mark.parametrize(("scheme", "header"), [(s, h) for s in SCHEMES for h in READS[s]])
def test_a_duplicated_header_is_refused_even_with_the_same_value(
    scheme: SchemeName, header: str
) -> None:
    old, new = SECRETS[scheme]
    headers = signed(scheme, old)
    value = value_of(headers, header)
    expected = f"duplicated header {header.lower()}"
    assert refuses(scheme, [*headers, (header, value)]) == expected
    assert refuses(scheme, [(header.upper(), value), *headers]) == expected
    # Each copy valid for one of the route's secrets: still ambiguous, still refused.
    other = value_of(signed(scheme, new), header)
    assert refuses(scheme, [*headers, (header.lower(), other)]) == expected


@pytest.mark.parametrize("scheme", SCHEMES)
def test_header_names_match_in_any_case(scheme: SchemeName) -> None:
    headers = signed(scheme, SECRETS[scheme][0])
    accepts(scheme, [(n.lower(), v) for n, v in headers])
    accepts(scheme, [(n.upper(), v) for n, v in headers])


@pytest.mark.parametrize(("scheme", "header"), [(s, h) for s in SCHEMES for h in READS[s]])
def test_an_overlong_header_is_refused(scheme: SchemeName, header: str) -> None:
    headers = replaced(signed(scheme, SECRETS[scheme][0]), header, "v" * 5000)
    assert refuses(scheme, headers) == f"header {header.lower()} is too long"


@pytest.mark.parametrize(("scheme", "header"), [(s, h) for s in SCHEMES for h in READS[s]])
def test_a_malformed_or_empty_header_is_refused(scheme: SchemeName, header: str) -> None:
    for value in ("", "garbage", "sha256=zz", "v1,not base64 at all"):
        refuses(scheme, replaced(signed(scheme, SECRETS[scheme][0]), header, value))


# --- the providers' published examples --------------------------------------------------------


def test_standard_webhooks_published_vector() -> None:
    # The Standard Webhooks reference libraries' test vector (standard-webhooks/standard-webhooks,
    # libraries/python/tests/test_webhooks.py, test_sign_function).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ]
    body = b'{"test": 2432232314}'
    accepts("standard-webhooks", headers, secrets=[secret], body=body, now=1614265330)
    refuses("standard-webhooks", headers, secrets=[secret], body=body[:-1], now=1614265330)
    # The test's own framing (used by signed()) gives the published signature.
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    content = b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + body
    assert "v1," + b64(mac(key, content)) == headers[2][1]


def test_github_published_vector() -> None:
    # docs.github.com, "Validating webhook deliveries", "Testing the webhook payload validation".
    headers = [
        (
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
    ]
    secret = "It's a Secret to Everybody"
    accepts("github", headers, secrets=[secret], body=b"Hello, World!")
    refuses("github", headers, secrets=[secret], body=b"Hello, World?")
    assert signed("github", secret, b"Hello, World!")[1] == headers[0]


SLACK_DOCS_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)


def test_slack_published_vector() -> None:
    # Slack's "Verifying requests from Slack" worked example (also the vector of Slack's own
    # python-slack-sdk, tests/slack_sdk/signature/test_signature_verifier.py).
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    headers = [
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
        ("X-Slack-Request-Timestamp", "1531420618"),
    ]
    accepts("slack", headers, secrets=[secret], body=SLACK_DOCS_BODY, now=1531420618)
    accepts("slack", headers, secrets=[secret], body=SLACK_DOCS_BODY, now=1531420618 + 300)
    assert "stale" in refuses(
        "slack", headers, secrets=[secret], body=SLACK_DOCS_BODY, now=1531420618 + 301
    )
    assert signed("slack", secret, SLACK_DOCS_BODY, 1531420618)[1:3] == headers


# --- Standard Webhooks ------------------------------------------------------------------------


def entry(secret: str, timestamp: int = NOW, body: bytes = BODY) -> str:
    return value_of(signed("standard-webhooks", secret, body, timestamp), "webhook-signature")


def with_signature(value: str, timestamp: int = NOW) -> Headers:
    headers = signed("standard-webhooks", SECRETS["standard-webhooks"][0], timestamp=timestamp)
    return replaced(headers, "webhook-signature", value)


def test_standard_webhooks_several_signatures_in_one_header() -> None:
    old, new = SECRETS["standard-webhooks"]
    stranger = entry(whsec(77))
    # The sender rotating its key signs with both; other versions are not ours to check.
    accepts("standard-webhooks", with_signature(f"{stranger} {entry(new)}"), secrets=[new])
    accepts("standard-webhooks", with_signature(f"{entry(old)}  {entry(new)}"), secrets=[old])
    v1a = "v1a," + b64(bytes(range(64)))  # an ed25519 signature: not ours to check
    accepts("standard-webhooks", with_signature(f"{v1a} {entry(old)}"))
    same_digest_other_version = "v2," + entry(old).removeprefix("v1,")
    assert "no v1 signature" in refuses(
        "standard-webhooks", with_signature(f"{v1a} {same_digest_other_version}")
    )
    refuses("standard-webhooks", with_signature(f"{stranger} garbage v1,!!! {stranger}"))


def test_standard_webhooks_caps_the_signatures_it_considers() -> None:
    old = SECRETS["standard-webhooks"][0]
    strangers = [entry(whsec(seed)) for seed in range(50, 50 + MAX_SIGNATURES)]
    accepts("standard-webhooks", with_signature(" ".join([*strangers[1:], entry(old)])))
    assert f"more than {MAX_SIGNATURES}" in refuses(
        "standard-webhooks", with_signature(" ".join([*strangers, entry(old)]))
    )


@pytest.mark.parametrize(
    "timestamp",
    # float() takes the first five, which the standardwebhooks package's own verify() would.
    [
        "1700000000.0",
        "1.7e9",
        "nan",
        "inf",
        "-1700000000",
        "+1700000000",
        "01700000000",
        "1700000000000",
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic
        "1_700_000_000",
        "0x6553f100",
        "",
    ],
)
def test_timestamps_are_strict_decimal_integers(timestamp: str) -> None:
    for scheme, header in [
        ("standard-webhooks", "webhook-timestamp"),
        ("slack", "X-Slack-Request-Timestamp"),
    ]:
        headers = replaced(signed(scheme, SECRETS[scheme][0]), header, timestamp)
        assert "timestamp" in refuses(scheme, headers)
    stripe = f"t={timestamp},v1=" + "0" * 64
    assert "timestamp" in refuses("stripe", [("Stripe-Signature", stripe)])


@pytest.mark.parametrize("msg_id", ["", "msg 1", "msg_é", "m" * 257, "msg\t1"])
def test_standard_webhooks_refuses_a_malformed_id(msg_id: str) -> None:
    headers = replaced(
        signed("standard-webhooks", SECRETS["standard-webhooks"][0]), "webhook-id", msg_id
    )
    assert refuses("standard-webhooks", headers) == "malformed header webhook-id"


def test_standard_webhooks_signs_the_id_and_the_timestamp() -> None:
    headers = signed("standard-webhooks", SECRETS["standard-webhooks"][0])
    refuses("standard-webhooks", replaced(headers, "webhook-id", "msg_other"))
    refuses("standard-webhooks", replaced(headers, "webhook-timestamp", str(NOW + 1)))


# --- Stripe -----------------------------------------------------------------------------------


def stripe_v1(secret: str, timestamp: int = NOW, body: bytes = BODY) -> str:
    return mac(secret.encode(), f"{timestamp}.".encode() + body).hex()


def test_stripe_several_v1_signatures_any_one_passes_and_v0_is_ignored() -> None:
    old, new = SECRETS["stripe"]
    stranger = stripe_v1("whsec_stranger")
    header = f"t={NOW},v1={stranger},v1={stripe_v1(new)},v0={stripe_v1(old)}"
    accepts("stripe", [("Stripe-Signature", header)], secrets=[new])
    refuses("stripe", [("Stripe-Signature", header)], secrets=[old])
    only_v0 = f"t={NOW},v0={stripe_v1(old)}"
    assert "no v1 signature" in refuses("stripe", [("Stripe-Signature", only_v0)])
    spaced = f"t={NOW}, v1={stripe_v1(old)}"
    accepts("stripe", [("Stripe-Signature", spaced)])
    upper = f"t={NOW},v1={stripe_v1(old).upper()}"
    accepts("stripe", [("Stripe-Signature", upper)])


@pytest.mark.parametrize(
    "header",
    [
        f"v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t={NOW},v1={'0' * 64},",
        f"t={NOW};v1={'0' * 64}",
        f"t={NOW}",
    ],
)
def test_stripe_malformed_headers_are_refused(header: str) -> None:
    refuses("stripe", [("Stripe-Signature", header)])


def test_stripe_a_timestamp_swapped_in_breaks_the_signature() -> None:
    old = SECRETS["stripe"][0]
    header = f"t={NOW + 1},v1={stripe_v1(old)}"
    assert "no signature" in refuses("stripe", [("Stripe-Signature", header)])


def test_stripe_caps_the_signatures_it_considers() -> None:
    old = SECRETS["stripe"][0]
    strangers = [f"v1={stripe_v1(f'whsec_{n}')}" for n in range(MAX_SIGNATURES)]
    header = ",".join([f"t={NOW}", *strangers[1:], f"v1={stripe_v1(old)}"])
    accepts("stripe", [("Stripe-Signature", header)])
    header = ",".join([f"t={NOW}", *strangers, f"v1={stripe_v1(old)}"])
    assert f"more than {MAX_SIGNATURES}" in refuses("stripe", [("Stripe-Signature", header)])


# --- GitHub, Shopify, Slack -------------------------------------------------------------------


def test_github_accepts_upper_case_hex_and_needs_its_prefix() -> None:
    digest = mac(SECRETS["github"][0].encode(), BODY).hex()
    accepts("github", [("X-Hub-Signature-256", "sha256=" + digest.upper())])
    assert "not sha256=" in refuses("github", [("X-Hub-Signature-256", digest)])
    assert "not sha256=" in refuses("github", [("X-Hub-Signature-256", "sha1=" + digest)])
    # A proxy folding two copies into one line makes it unreadable, not ambiguous.
    refuses("github", [("X-Hub-Signature-256", f"sha256={digest}, sha256={digest}")])
    # The SHA-1 header GitHub also sends is not enough on its own.
    sha1 = hmac.new(SECRETS["github"][0].encode(), BODY, hashlib.sha1).hexdigest()
    assert refuses("github", [("X-Hub-Signature", "sha1=" + sha1)]) == (
        "missing header x-hub-signature-256"
    )


def test_shopify_needs_base64() -> None:
    digest = mac(SECRETS["shopify"][0].encode(), BODY)
    accepts("shopify", [("X-Shopify-Hmac-Sha256", b64(digest).rstrip("="))])
    assert "base64" in refuses("shopify", [("X-Shopify-Hmac-Sha256", digest.hex())])
    not_base64 = b64(digest)[:-2] + "-="
    assert "base64" in refuses("shopify", [("X-Shopify-Hmac-Sha256", not_base64)])


def test_slack_needs_v0() -> None:
    headers = signed("slack", SECRETS["slack"][0])
    digest = value_of(headers, "X-Slack-Signature").removeprefix("v0=")
    assert "not v0=" in refuses("slack", replaced(headers, "X-Slack-Signature", "v1=" + digest))
    assert "not v0=" in refuses("slack", replaced(headers, "X-Slack-Signature", digest))


# --- generic HMAC-SHA256 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "encode"),
    [
        (HmacOptions("X-Signature"), lambda d: d.hex()),
        (HmacOptions("X-Signature"), lambda d: d.hex().upper()),
        (HmacOptions("x-webhook-signature", prefix="sha256="), lambda d: "sha256=" + d.hex()),
        (HmacOptions("X-Signature", encoding="base64"), b64),
        (HmacOptions("X-Sig", encoding="base64", prefix="hmac "), lambda d: "hmac " + b64(d)),
    ],
)
def test_generic_hmac_header_encoding_and_prefix(
    options: HmacOptions, encode: Callable[[bytes], str]
) -> None:
    old, new = SECRETS["hmac-sha256"]
    value = encode(mac(old.encode(), BODY))
    accepts("hmac-sha256", [(options.header.upper(), value)], options=options)
    refuses("hmac-sha256", [(options.header, value)], options=options, secrets=[new])
    refuses("hmac-sha256", [(options.header, value)], options=options, body=BODY + b"x")


def test_generic_hmac_refuses_the_wrong_prefix_or_encoding() -> None:
    digest = mac(SECRETS["hmac-sha256"][0].encode(), BODY)
    hex_options = HmacOptions("X-Signature", prefix="sha256=")
    assert "prefix" in refuses("hmac-sha256", [("X-Signature", digest.hex())], options=hex_options)
    base64_options = HmacOptions("X-Signature", encoding="base64")
    assert "base64" in refuses(
        "hmac-sha256", [("X-Signature", digest.hex())], options=base64_options
    )
    assert "hex" in refuses("hmac-sha256", [("X-Signature", "sha256=" + b64(digest))])


# --- configuration ----------------------------------------------------------------------------


def test_signature_headers_name_what_must_never_be_stored() -> None:
    assert signature_headers("standard-webhooks") == {
        "webhook-signature",
        "webhook-timestamp",
        "svix-signature",
        "svix-timestamp",
    }
    assert signature_headers("stripe") == {"stripe-signature"}
    assert signature_headers("github") == {"x-hub-signature-256", "x-hub-signature"}
    assert signature_headers("shopify") == {"x-shopify-hmac-sha256"}
    assert signature_headers("slack") == {"x-slack-signature", "x-slack-request-timestamp"}
    assert signature_headers("hmac-sha256", HmacOptions("X-My-Sig")) == {"x-my-sig"}
    with pytest.raises(ValueError, match="HmacOptions"):
        signature_headers("hmac-sha256")
    for scheme in SCHEMES:
        read = {name.lower() for name in READS[scheme]} - {"webhook-id"}
        assert read <= signature_headers(scheme, HMAC_OPTIONS)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_validate_secret_accepts_the_secrets_used_here(scheme: SchemeName) -> None:
    for secret in SECRETS[scheme]:
        assert validate_secret(scheme, secret) is None


@pytest.mark.parametrize(
    ("scheme", "secret", "says"),
    [
        ("github", "", "empty"),
        ("slack", "", "empty"),
        ("hmac-sha256", "", "empty"),
        ("shopify", " padded-secret ", "whitespace"),
        ("github", "x" * 1025, "longer"),
        ("stripe", "sk_live_notASigningSecret", "whsec_"),
        ("stripe", "", "empty"),
        ("standard-webhooks", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("standard-webhooks", "whsec_", "bytes"),
        ("standard-webhooks", "whsec_not base64!", "base64"),
        ("standard-webhooks", "whsec_" + b64(bytes(23)), "not 23"),
        ("standard-webhooks", "whsec_" + b64(bytes(65)), "not 65"),
        ("standard-webhooks", "whsec_" + "A" * 41, "base64"),
    ],
)
def test_validate_secret_refuses_and_never_echoes(
    scheme: SchemeName, secret: str, says: str
) -> None:
    reason = validate_secret(scheme, secret)
    assert reason is not None
    assert says in reason
    if secret.strip():
        assert secret.strip() not in reason
        assert secret.removeprefix("whsec_") not in reason or not secret.removeprefix("whsec_")


def test_validate_secret_bounds_and_padding_for_standard_webhooks() -> None:
    assert validate_secret("standard-webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") is None
    assert validate_secret("standard-webhooks", "whsec_" + b64(bytes(64))) is None
    assert validate_secret("standard-webhooks", "whsec_" + b64(bytes(32)).rstrip("=")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secrets": []}, "one or more secrets"),
        ({"secrets": "whsec_abc"}, "one or more secrets"),
        ({"secrets": ["", "ok"]}, "secret 1 is unusable"),
        ({"tolerance_seconds": -1}, "tolerance"),
        ({"tolerance_seconds": float("nan")}, "tolerance"),
        ({"now": float("inf")}, "now"),
        ({"scheme": "hmac-sha256", "hmac_options": None}, "HmacOptions"),
        ({"scheme": "md5"}, "unknown"),
    ],
)
def test_a_wrong_configuration_is_a_value_error_not_a_pass(
    change: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "scheme": "github",
        "secrets": [SECRETS["github"][0]],
        "headers": signed("github", SECRETS["github"][0]),
        "body": BODY,
        "now": NOW,
        "tolerance_seconds": TOLERANCE,
        "hmac_options": None,
    } | change
    scheme = arguments.pop("scheme")
    with pytest.raises(ValueError, match=message):
        verify(scheme, **arguments)  # type: ignore[arg-type]


def test_hmac_options_are_checked() -> None:
    with pytest.raises(ValueError, match="header"):
        HmacOptions("X Signature")
    with pytest.raises(ValueError, match="header"):
        HmacOptions("")
    with pytest.raises(ValueError, match="encoding"):
        HmacOptions("X-Signature", encoding="base32")  # type: ignore[arg-type]


# --- reasons ----------------------------------------------------------------------------------


def every_refusal() -> Iterator[tuple[SchemeName, Headers, dict[str, object]]]:
    """One delivery of each kind this module refuses, for every scheme."""
    for scheme in SCHEMES:
        old, new = SECRETS[scheme]
        good = signed(scheme, old)
        yield scheme, good, {"body": BODY + b"!"}
        yield scheme, signed(scheme, new), {"secrets": [old]}
        yield scheme, signed(scheme, old), {"secrets": [new]}
        for header in READS[scheme]:
            value = value_of(good, header)
            yield scheme, [(n, v) for n, v in good if n != header], {}
            yield scheme, [*good, (header, value)], {}
            yield scheme, replaced(good, header, value[:-2]), {}
            yield scheme, replaced(good, header, value + "," + value), {}
            yield scheme, replaced(good, header, value * 100), {}
        if scheme in TIMESTAMPED:
            yield scheme, signed(scheme, old, timestamp=NOW - TOLERANCE - 1), {}
            yield scheme, signed(scheme, old, timestamp=NOW + TOLERANCE + 1), {}


def test_no_reason_holds_a_secret_or_a_signature() -> None:
    reasons = set()
    for scheme, headers, change in every_refusal():
        reasons.add(refuses(scheme, headers, **change))  # type: ignore[arg-type]
    # The reasons say what went wrong, in few words, and there are several kinds of them.
    assert len(reasons) >= 15
    for reason in reasons:
        assert "whsec_" not in reason
    # Every refusal of the whole module went through the same check.
    assert len(REJECTIONS.seen) >= len(reasons)


# --- the header precheck, before the body is read ---------------------------------------------


def precheck(
    scheme: SchemeName,
    headers: Headers,
    *,
    now: float = NOW,
    tolerance: float = TOLERANCE,
    options: HmacOptions | None = HMAC_OPTIONS,
) -> None:
    check_headers(
        scheme, headers=headers, now=now, tolerance_seconds=tolerance, hmac_options=options
    )


def precheck_refuses(
    scheme: SchemeName,
    headers: Headers,
    *,
    now: float = NOW,
    tolerance: float = TOLERANCE,
    options: HmacOptions | None = HMAC_OPTIONS,
) -> str:
    """check_headers' reason, which must be the one verify gives the same delivery."""
    with pytest.raises(SignatureRejected) as raised:
        precheck(scheme, headers, now=now, tolerance=tolerance, options=options)
    reason = raised.value.reason
    REJECTIONS.check(reason, list(SECRETS[scheme]), headers)
    assert refuses(scheme, headers, now=now, tolerance=tolerance, options=options) == reason
    return reason


def svix(headers: Headers) -> Headers:
    """The same delivery under Svix's header names."""
    return [(SVIX.get(name.lower(), name), value) for name, value in headers]


# Every scheme, and Standard Webhooks under Svix's names too: (scheme, headers it reads, signer).
Signer = Callable[..., Headers]
NAMINGS: list[tuple[SchemeName, list[str], Signer]] = [
    *[(scheme, READS[scheme], signed) for scheme in SCHEMES],
    ("standard-webhooks", SVIX_READS, lambda *a, **k: svix(signed(*a, **k))),
]
NAMING_IDS = [f"{scheme}:{reads[0].lower()}" for scheme, reads, _ in NAMINGS]
EACH_HEADER = [(s, h, sign) for s, reads, sign in NAMINGS for h in reads]
EACH_HEADER_IDS = [f"{s}:{h.lower()}" for s, h, _ in EACH_HEADER]


@pytest.mark.parametrize(("scheme", "reads", "sign"), NAMINGS, ids=NAMING_IDS)
def test_precheck_passes_a_valid_delivery_without_its_body_or_secrets(
    scheme: SchemeName, reads: list[str], sign: Signer
) -> None:
    old, new = SECRETS[scheme]
    for secret in (old, new):
        precheck(scheme, sign(scheme, secret))
        precheck(scheme, sign(scheme, secret, b"any body at all"))
    # It cannot tell a stranger's signature from the route's: verify() does, with the body.
    stranger = whsec(200) if scheme == "standard-webhooks" else "whsec_someone else's secret"
    precheck(scheme, sign(scheme, stranger))
    assert "no signature in header" in refuses(scheme, sign(scheme, stranger))
    precheck(scheme, [(n.upper(), v) for n, v in sign(scheme, old)])


@pytest.mark.parametrize(("scheme", "header", "sign"), EACH_HEADER, ids=EACH_HEADER_IDS)
def test_precheck_refuses_a_missing_header_as_verify_does(
    scheme: SchemeName, header: str, sign: Signer
) -> None:
    headers = [(n, v) for n, v in sign(scheme, SECRETS[scheme][0]) if n != header]
    assert precheck_refuses(scheme, headers) == f"missing header {header.lower()}"


@pytest.mark.parametrize(("scheme", "header", "sign"), EACH_HEADER, ids=EACH_HEADER_IDS)
def test_precheck_refuses_a_duplicated_header_as_verify_does(
    scheme: SchemeName, header: str, sign: Signer
) -> None:
    old, new = SECRETS[scheme]
    headers = sign(scheme, old)
    expected = f"duplicated header {header.lower()}"
    assert precheck_refuses(scheme, [*headers, (header, value_of(headers, header))]) == expected
    other = value_of(sign(scheme, new), header)
    assert precheck_refuses(scheme, [(header.upper(), other), *headers]) == expected


def same_verdict(scheme: SchemeName, headers: Headers) -> str | None:
    """verify refuses; check_headers gives the same reason, or passes when verify's is a
    signature that does not match (which, but for no digest at all, takes the body to tell)."""
    reason = refuses(scheme, headers)
    early = precheck_reason(scheme, headers)
    if early is None:
        assert reason.startswith("no signature in header"), reason
        return None
    assert early == reason
    return reason


def precheck_reason(scheme: SchemeName, headers: Headers) -> str | None:
    try:
        precheck(scheme, headers)
    except SignatureRejected as rejected:
        return rejected.reason
    return None


@pytest.mark.parametrize(("scheme", "header", "sign"), EACH_HEADER, ids=EACH_HEADER_IDS)
def test_precheck_refuses_a_malformed_or_overlong_header_as_verify_does(
    scheme: SchemeName, header: str, sign: Signer
) -> None:
    headers = sign(scheme, SECRETS[scheme][0])
    value = value_of(headers, header)
    refused = 0
    for bad in ("", "garbage", "sha256=zz", "v1,not base64 at all", value[:-2], "msg 1"):
        refused += same_verdict(scheme, replaced(headers, header, bad)) is not None
    # An id is any visible ASCII: "garbage" and the like are ids, refused by the signature.
    assert refused == (3 if header.lower().endswith("-id") else 6)
    if header.lower().endswith("-id"):
        bad_id = replaced(headers, header, "msg 1")
        assert precheck_refuses(scheme, bad_id) == f"malformed header {header.lower()}"
    long_value = "v" * 5000
    assert precheck_refuses(scheme, replaced(headers, header, long_value)) == (
        f"header {header.lower()} is too long"
    )


@pytest.mark.parametrize("naming", ["webhook", "svix"])
def test_precheck_refuses_signatures_with_no_digest_among_them(naming: str) -> None:
    rename = svix if naming == "svix" else list
    no_match = f"no signature in header {naming}-signature matches a secret of the route"
    for value in ("v1,not base64 at all", "v1," + b64(bytes(31)), f"v1a,{b64(bytes(64))} v1,!!"):
        assert precheck_refuses("standard-webhooks", rename(with_signature(value))) == no_match
    digest = "0" * 63
    stripe = [("Stripe-Signature", f"t={NOW},v1={digest},v1=zz")]
    assert precheck_refuses("stripe", stripe) == (
        "no signature in header stripe-signature matches a secret of the route"
    )
    # One well-formed digest among them is enough to wait for the body.
    precheck("standard-webhooks", rename(with_signature(f"v1,!! {entry(whsec(9))}")))
    precheck("stripe", [("Stripe-Signature", f"t={NOW},v1=zz,v1={'0' * 64}")])


def test_precheck_names_the_digest_encoding_it_needs() -> None:
    digest = mac(SECRETS["github"][0].encode(), BODY)
    assert "hex" in precheck_refuses("github", [("X-Hub-Signature-256", "sha256=" + b64(digest))])
    assert "not sha256=" in precheck_refuses("github", [("X-Hub-Signature-256", digest.hex())])
    assert "base64" in precheck_refuses("shopify", [("X-Shopify-Hmac-Sha256", digest.hex())])
    assert "not v0=" in precheck_refuses(
        "slack", replaced(signed("slack", SECRETS["slack"][0]), "X-Slack-Signature", digest.hex())
    )
    base64_options = HmacOptions("X-Signature", encoding="base64")
    assert "base64" in precheck_refuses(
        "hmac-sha256", [("X-Signature", digest.hex())], options=base64_options
    )
    assert "prefix" in precheck_refuses("hmac-sha256", [("X-Signature", digest.hex())])
    assert "(needs exactly one t=)" in precheck_refuses(
        "stripe", [("Stripe-Signature", f"t={NOW},t={NOW},v1={digest.hex()}")]
    )
    assert "no v1 signature" in precheck_refuses(
        "stripe", [("Stripe-Signature", f"t={NOW},v0={digest.hex()}")]
    )


@pytest.mark.parametrize(
    ("scheme", "reads", "sign"),
    [n for n in NAMINGS if n[0] in TIMESTAMPED],
    ids=[i for n, i in zip(NAMINGS, NAMING_IDS, strict=True) if n[0] in TIMESTAMPED],
)
def test_precheck_refuses_stale_and_future_timestamps_as_verify_does(
    scheme: SchemeName, reads: list[str], sign: Signer
) -> None:
    old = SECRETS[scheme][0]
    where = "stripe-signature t=" if scheme == "stripe" else reads[-1 if scheme == "slack" else 1]
    stale = precheck_refuses(scheme, sign(scheme, old, timestamp=NOW - TOLERANCE - 1))
    assert stale == f"stale timestamp in {where.lower()} (older than the tolerance)"
    future = precheck_refuses(scheme, sign(scheme, old, timestamp=NOW + TOLERANCE + 1))
    assert future == f"timestamp in {where.lower()} is in the future (beyond the tolerance)"
    for offset in (-TOLERANCE, 0, TOLERANCE):
        precheck(scheme, sign(scheme, old, timestamp=NOW + offset))
    assert "stale" in precheck_refuses(scheme, sign(scheme, old), now=NOW + 1.001, tolerance=1)
    precheck(scheme, sign(scheme, old, timestamp=NOW - 86_400), tolerance=86_400)
    for text in ("1700000000.0", "1.7e9", "nan", "-1", "01700000000", "1700000000000", ""):
        if scheme == "stripe":
            headers = [("Stripe-Signature", f"t={text},v1=" + "0" * 64)]
        else:
            headers = replaced(sign(scheme, old), where, text)
        assert precheck_refuses(scheme, headers) == f"malformed timestamp in {where.lower()}"


@pytest.mark.parametrize("naming", ["webhook", "svix"])
def test_precheck_refuses_a_timestamp_beyond_what_a_date_holds(naming: str) -> None:
    # Within a (huge) tolerance, but past the year 9999: the package could not sign it.
    headers = signed("standard-webhooks", SECRETS["standard-webhooks"][0], timestamp=999999999999)
    headers = svix(headers) if naming == "svix" else headers
    reason = precheck_refuses("standard-webhooks", headers, tolerance=10**13)
    assert reason == f"malformed header {naming}-timestamp"


@pytest.mark.parametrize("naming", ["webhook", "svix"])
def test_precheck_caps_standard_webhooks_signatures_as_verify_does(naming: str) -> None:
    old = SECRETS["standard-webhooks"][0]
    rename = svix if naming == "svix" else list
    strangers = [entry(whsec(seed)) for seed in range(50, 50 + MAX_SIGNATURES)]
    precheck("standard-webhooks", rename(with_signature(" ".join(strangers))))
    too_many = rename(with_signature(" ".join([*strangers, entry(old)])))
    assert precheck_refuses("standard-webhooks", too_many) == (
        f"more than {MAX_SIGNATURES} signatures in header {naming}-signature"
    )
    v1a_only = rename(with_signature("v1a," + b64(bytes(64))))
    assert precheck_refuses("standard-webhooks", v1a_only) == (
        f"no v1 signature in header {naming}-signature"
    )


def test_precheck_caps_stripe_signatures_as_verify_does() -> None:
    strangers = [f"v1={stripe_v1(f'whsec_{n}')}" for n in range(MAX_SIGNATURES)]
    precheck("stripe", [("Stripe-Signature", ",".join([f"t={NOW}", *strangers]))])
    header = ",".join([f"t={NOW}", *strangers, f"v1={stripe_v1(SECRETS['stripe'][0])}"])
    assert precheck_refuses("stripe", [("Stripe-Signature", header)]) == (
        f"more than {MAX_SIGNATURES} signatures in header stripe-signature"
    )


def test_precheck_refuses_what_verify_refuses_unless_it_takes_the_body_or_secrets() -> None:
    """Over every refusal this file provokes: verify's reason is check_headers' reason, except
    for a signature that does not match, which only the body and the secrets can tell."""
    refusals = [*every_refusal(), *svix_refusals()]
    mismatches = 0
    for scheme, headers, change in refusals:
        if change:  # another body or other secrets: the headers themselves are fine
            precheck(scheme, headers)
            continue
        mismatches += same_verdict(scheme, headers) is None
    assert 0 < mismatches < len(refusals) / 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tolerance_seconds": -1}, "tolerance"),
        ({"tolerance_seconds": float("inf")}, "tolerance"),
        ({"now": float("nan")}, "now"),
        ({"scheme": "hmac-sha256", "hmac_options": None}, "HmacOptions"),
        ({"scheme": "md5"}, "unknown"),
    ],
)
def test_precheck_a_wrong_configuration_is_a_value_error(
    change: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "scheme": "github",
        "headers": signed("github", SECRETS["github"][0]),
        "now": NOW,
        "tolerance_seconds": TOLERANCE,
        "hmac_options": None,
    } | change
    scheme = arguments.pop("scheme")
    with pytest.raises(ValueError, match=message):
        check_headers(scheme, **arguments)  # type: ignore[arg-type]


# --- Standard Webhooks under Svix's names -----------------------------------------------------

PUBLISHED_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLISHED_BODY = b'{"test": 2432232314}'
PUBLISHED = [
    ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
    ("svix-timestamp", "1614265330"),
    ("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
]


def test_standard_webhooks_published_vector_under_svix_names() -> None:
    # The same reference vector as test_standard_webhooks_published_vector, as Svix sends it.
    sw = "standard-webhooks"
    at = 1614265330
    accepts(sw, PUBLISHED, secrets=[PUBLISHED_SECRET], body=PUBLISHED_BODY, now=at)
    precheck(sw, PUBLISHED, now=at)
    reason = refuses(sw, PUBLISHED, secrets=[PUBLISHED_SECRET], body=PUBLISHED_BODY[:-1], now=at)
    assert reason == "no signature in header svix-signature matches a secret of the route"
    key = base64.b64decode(PUBLISHED_SECRET.removeprefix("whsec_"))
    content = b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330." + PUBLISHED_BODY
    assert "v1," + b64(mac(key, content)) == PUBLISHED[2][1]
    stale = refuses(sw, PUBLISHED, secrets=[PUBLISHED_SECRET], body=PUBLISHED_BODY, now=at + 301)
    assert stale == "stale timestamp in svix-timestamp (older than the tolerance)"


def test_svix_names_in_any_case_with_rotation_tampering_and_the_signed_id() -> None:
    sw: SchemeName = "standard-webhooks"
    old, new = SECRETS[sw]
    headers = svix(signed(sw, old))
    for secrets in ([old], [new, old]):
        accepts(sw, headers, secrets=secrets)
        accepts(sw, [(n.upper(), v) for n, v in headers], secrets=secrets)
    assert refuses(sw, headers, secrets=[new]) == (
        "no signature in header svix-signature matches a secret of the route"
    )
    refuses(sw, headers, body=BODY + b" ")
    refuses(sw, replaced(headers, "svix-id", "msg_other"))
    refuses(sw, replaced(headers, "svix-timestamp", str(NOW + 1)))
    several = f"{entry(whsec(77))} v1a,{b64(bytes(64))} {entry(new)}"
    accepts(sw, replaced(headers, "svix-signature", several), secrets=[new])
    for msg_id in ("", "msg 1", "msg_é", "m" * 257):
        reason = precheck_refuses(sw, replaced(headers, "svix-id", msg_id))
        assert reason == "malformed header svix-id"


def test_both_header_families_are_ambiguous_even_when_both_verify() -> None:
    sw: SchemeName = "standard-webhooks"
    old, new = SECRETS[sw]
    expected = "ambiguous: both webhook-* and svix-* headers sent"
    assert precheck_refuses(sw, [*signed(sw, old), *svix(signed(sw, old))]) == expected
    assert precheck_refuses(sw, [*svix(signed(sw, new)), *signed(sw, old)]) == expected
    assert refuses(sw, [*signed(sw, old), *svix(signed(sw, old))], secrets=[old]) == expected


@pytest.mark.parametrize(
    "names",
    [
        ["webhook-id", "svix-timestamp", "svix-signature"],
        ["svix-id", "webhook-timestamp", "webhook-signature"],
        ["webhook-id", "webhook-timestamp", "svix-signature"],
        ["webhook-id", "svix-signature"],
        ["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id"],
        ["svix-id", "svix-timestamp", "svix-signature", "webhook-signature"],
    ],
)
def test_a_mix_of_header_families_is_refused(names: list[str]) -> None:
    sw: SchemeName = "standard-webhooks"
    values = {n: v for n, v in signed(sw, SECRETS[sw][0])} | {
        n: v for n, v in svix(signed(sw, SECRETS[sw][0]))
    }
    headers = [(name, values[name]) for name in names]
    assert precheck_refuses(sw, headers) == "mixed webhook-* and svix-* headers"


def test_no_standard_webhooks_header_at_all_is_missing_the_specs_id() -> None:
    assert precheck_refuses("standard-webhooks", [("Content-Type", "application/json")]) == (
        "missing header webhook-id"
    )


def svix_refusals() -> Iterator[tuple[SchemeName, Headers, dict[str, object]]]:
    """every_refusal()'s kinds for Standard Webhooks under Svix's names."""
    sw: SchemeName = "standard-webhooks"
    for scheme, headers, change in every_refusal():
        if scheme == sw:
            yield sw, svix(headers), change
    yield sw, [*signed(sw, SECRETS[sw][0]), *svix(signed(sw, SECRETS[sw][0]))], {}
    yield sw, [("webhook-id", MSG_ID), *svix(signed(sw, SECRETS[sw][0]))[2:]], {}


def test_svix_reasons_name_the_header_used_and_hold_no_secret_or_signature() -> None:
    reasons = set()
    for scheme, headers, change in svix_refusals():
        reasons.add(refuses(scheme, headers, **change))  # type: ignore[arg-type]
    assert len(reasons) >= 8
    for reason in reasons:
        assert "svix-" in reason, reason
        assert "webhook-" not in reason or "svix-*" in reason, reason


def test_signature_headers_strip_both_namings_but_keep_the_ids() -> None:
    stripped = signature_headers("standard-webhooks")
    assert {
        "svix-signature",
        "svix-timestamp",
        "webhook-signature",
        "webhook-timestamp",
    } <= stripped
    assert not {"svix-id", "webhook-id"} & stripped


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("webhook-id", MSG_ID)], MSG_ID),
        ([("svix-id", MSG_ID)], MSG_ID),
        ([("Svix-Id", f" {MSG_ID}\t")], MSG_ID),
        ([("WEBHOOK-ID", "msg_1"), ("svix-timestamp", str(NOW))], "msg_1"),
        (signed("standard-webhooks", whsec(1)), MSG_ID),
        (svix(signed("standard-webhooks", whsec(1))), MSG_ID),
        ([], None),
        ([("x-webhook-id", MSG_ID), ("svix-ids", MSG_ID)], None),
        ([("webhook-id", MSG_ID), ("svix-id", MSG_ID)], None),
        ([("svix-id", "msg_1"), ("webhook-id", "msg_2")], None),
        ([("webhook-id", MSG_ID), ("Webhook-Id", MSG_ID)], None),
        ([("svix-id", "msg_1"), ("svix-id", "msg_2")], None),
    ],
)
def test_standard_webhooks_id_reads_either_naming_once(
    headers: Headers, expected: str | None
) -> None:
    assert standard_webhooks_id(headers) == expected
