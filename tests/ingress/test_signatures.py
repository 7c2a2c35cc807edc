"""Provider signatures (app/ingress/signatures.py): for every scheme a valid delivery passes, and
a tampered body, a wrong secret, a removed secret, a stale or future timestamp, a missing or a
duplicated header are refused with a reason that names no secret and no signature.

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
    signature_headers,
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
            if name.lower() in {n.lower() for scheme in SCHEMES for n in READS[scheme]}:
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
    assert signature_headers("standard-webhooks") == {"webhook-signature", "webhook-timestamp"}
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
