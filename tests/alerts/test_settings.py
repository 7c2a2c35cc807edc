"""GATE_ALERT_URL is a credential (a Slack incoming webhook's path is its secret)."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings


@pytest.mark.parametrize(
    "url", ["hooks.slack.com/services/T0/B0/s3cr3t", "ftp://hooks.example.com/s3cr3t"]
)
def test_a_bad_alert_url_is_named_without_its_value(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, alert_url=url)
    assert "GATE_ALERT_URL" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_the_alert_url_is_not_in_the_settings_repr() -> None:
    settings = load_settings(_env_file=None, alert_url="https://hooks.example.com/s3cr3t")
    assert "s3cr3t" not in repr(settings)
    assert str(settings.alert_url) == "https://hooks.example.com/s3cr3t"


def test_an_empty_alert_url_or_public_url_is_unset() -> None:
    settings = load_settings(_env_file=None, alert_url="", public_url="")
    assert (settings.alert_url, settings.public_url) == (None, None)
