"""The routes file: the issue's shape works as written; every mistake is one clear line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.ingress.keys import BodyHashKey, HeaderKey, JsonPointerKey, MessageIdKey
from app.ingress.routes_file import RouteEntry, RoutesFileError, load_routes

FIXED_POINT = """
[routes.stripe-orders]          # POST /in/stripe-orders
tenant   = "acme"               # created by `n8n-gate keys create --tenant acme`
provider = "stripe"             # preset: Stripe-Signature, key = JSON /id, tolerance 300 s
secrets  = ["whsec_test_old", "whsec_test_new"]
webhook  = "orders"             # forwards to {N8N_BASE_URL}/webhook/orders
respond  = "async"

[routes.gh]
tenant   = "acme"
provider = "github"             # X-Hub-Signature-256, key = X-GitHub-Delivery
secrets  = ["gh-secret"]
webhook  = "github-events"
respond  = "sync"

[routes.std]
tenant   = "acme"
provider = "standard-webhooks"  # webhook-id / webhook-timestamp / webhook-signature
secrets  = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
webhook  = "std"
"""

GITHUB = 'tenant = "acme"\nprovider = "github"\nsecrets = ["s"]\nwebhook = "w"'
HMAC = 'tenant = "acme"\nprovider = "hmac-sha256"\nsecrets = ["s"]\nwebhook = "w"'
# One route per mistake, and what its line must say.
MISTAKES = {
    'tenant = "acme"\nprovider = "paypal"\nsecrets = ["s"]\nwebhook = "w"': "provider",
    'tenant = "acme"\nprovider = "github"\nsecrets = []\nwebhook = "w"': "secrets",
    'tenant = "acme"\nprovider = "github"\nwebhook = "w"': "secrets: missing",
    'provider = "github"\nsecrets = ["s"]\nwebhook = "w"': "tenant: missing",
    'tenant = "a b"\nprovider = "github"\nsecrets = ["s"]\nwebhook = "w"': "tenant",
    'tenant = "acme"\nprovider = "github"\nsecrets = ["s"]\nwebhook = "../admin"': "webhook",
    GITHUB + '\nrespond = "later"': ("respond"),
    GITHUB + '\nsecret = "x"': ("unknown field 'secret'"),
    GITHUB + '\nkey = "cookie:x"': ("key: must be"),
    GITHUB
    + '\nkey = "header:X-Hub-Signature-256"': "key: x-hub-signature-256 carries the signature",
    HMAC + '\nsignature_header = "X-Sig"\nkey = "header:x-sig"': "key: x-sig carries the signature",
    GITHUB + '\nkey = "header:Authorization"': "key: authorization carries",
    'tenant = "acme"\nprovider = "github"\nsecrets = ["s"]\nwebhook = "/webhook/orders"': (
        "without a leading '/'"
    ),
    GITHUB + '\nkey = "json:id"': ("key: not a JSON Pointer"),
    HMAC + '\nkey = "body-sha256"': ("signature_header: missing"),
    HMAC + '\nsignature_header = "X-Sig"': ("key: missing"),
    'tenant = "acme"\nprovider = "standard-webhooks"\nsecrets = ["not-base64!"]\nwebhook = "w"': (
        "secrets.0"
    ),
    GITHUB + "\ntolerance_seconds = -1": ("tolerance_seconds"),
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_issues_routes_file_works_as_written(tmp_path: Path) -> None:
    routes = load_routes(write(tmp_path, FIXED_POINT))
    assert list(routes) == ["stripe-orders", "gh", "std"]
    stripe, github, standard = routes.values()
    assert (stripe.scheme, stripe.key_source, stripe.respond) == (
        "stripe",
        JsonPointerKey("/id"),
        "async",
    )
    assert stripe.secrets == ("whsec_test_old", "whsec_test_new")
    assert (stripe.mode, stripe.workflow_path) == ("webhook", "orders")
    assert (github.scheme, github.key_source, github.respond) == (
        "github",
        HeaderKey("x-github-delivery"),
        "sync",
    )
    assert (standard.scheme, standard.key_source, standard.respond) == (
        "standard-webhooks",
        MessageIdKey(),
        "async",
    )


def test_every_mistake_is_one_line_naming_the_route_and_the_field(tmp_path: Path) -> None:
    text = "\n".join(f"[routes.r{index}]\n{body}\n" for index, body in enumerate(MISTAKES))
    with pytest.raises(RoutesFileError) as raised:
        load_routes(write(tmp_path, text))
    lines = raised.value.lines
    assert len(lines) == len(MISTAKES), "\n".join(lines)
    for index, expected in enumerate(MISTAKES.values()):
        line = next(line for line in lines if f"route 'r{index}':" in line)
        assert expected in line, line


def test_a_mistake_never_echoes_a_secret(tmp_path: Path) -> None:
    secret = "whsec_!!not-base64-and-very-secret!!"
    text = f"""
    [routes.r]
    tenant = "acme"
    provider = "standard-webhooks"
    secrets = ["{secret}", 42]
    webhook = "w"
    """
    with pytest.raises(RoutesFileError) as raised:
        load_routes(write(tmp_path, text))
    assert secret not in str(raised.value)
    assert "secrets.0" in str(raised.value)
    assert "secrets.1" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[routes.r\n", "not valid TOML"),
        ("", "no routes"),
        ("[other]\nx = 1\n", "unknown table or key 'other'"),
        ('[routes."bad name"]\n', "the name must be"),
        ("[routes]\nr = 1\n", "must be a table"),
    ],
)
def test_a_file_that_is_not_a_routes_file_says_why(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(RoutesFileError) as raised:
        load_routes(write(tmp_path, text))
    assert expected in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RoutesFileError, match="cannot be read"):
        load_routes(tmp_path / "nowhere.toml")


def test_body_hash_and_overridden_key_sources(tmp_path: Path) -> None:
    text = """
    [routes.plain]
    tenant = "acme"
    provider = "hmac-sha256"
    secrets = ["s"]
    signature_header = "X-Signature"
    signature_encoding = "base64"
    key = "body-sha256"
    webhook = "w/inner"
    mode = "webhook-test"

    [routes.stripe-by-header]
    tenant = "acme"
    provider = "stripe"
    secrets = ["whsec_x"]
    key = "header:X-Request-Id"
    webhook = "w"
    """
    plain, by_header = load_routes(write(tmp_path, text)).values()
    assert plain.key_source == BodyHashKey()
    assert plain.hmac_options is not None
    assert (plain.hmac_options.header, plain.hmac_options.encoding) == ("X-Signature", "base64")
    assert (plain.mode, plain.workflow_path) == ("webhook-test", "w/inner")
    assert by_header.key_source == HeaderKey("x-request-id")


def test_a_route_never_prints_its_secrets(tmp_path: Path) -> None:
    route = load_routes(write(tmp_path, FIXED_POINT))["stripe-orders"]
    assert "whsec_test" not in repr(route)
    assert "whsec_test" not in str(route)
    entry = RouteEntry.model_validate(
        {"tenant": "acme", "provider": "github", "secrets": ["gh-secret"], "webhook": "w"}
    )
    assert "gh-secret" not in repr(entry)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=60
    )


def test_routes_check_validates_without_serving(tmp_path: Path) -> None:
    checked = run_cli("routes", "check", str(write(tmp_path, FIXED_POINT)))
    assert checked.returncode == 0, checked.stderr
    assert "3 routes, valid" in checked.stdout
    assert "/in/stripe-orders: tenant acme, stripe" in checked.stdout
    assert "whsec" not in checked.stdout


def test_routes_check_prints_one_line_per_mistake(tmp_path: Path) -> None:
    text = "\n".join(f"[routes.r{index}]\n{body}\n" for index, body in enumerate(MISTAKES))
    checked = run_cli("routes", "check", str(write(tmp_path, text)))
    assert checked.returncode == 2
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == len(MISTAKES)
    assert all(line.startswith("n8n-gate: ") for line in lines)
