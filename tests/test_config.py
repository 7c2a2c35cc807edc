"""Settings: .env.example documents every one, with its real default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"GATE_{field.upper()}"


def test_env_example_names_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    missing = [env_name(f) for f in Settings.model_fields if f"{env_name(f)}=" not in text]
    assert missing == []


def test_env_example_values_are_the_defaults() -> None:
    assert load_settings(_env_file=ENV_EXAMPLE) == load_settings(_env_file=None)


def test_the_settings_documents_are_written_from_the_settings() -> None:
    """docs/configuration.md's table and .env.example come from app/config.py alone."""
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    "url",
    ["mysql://gate:hunter2@db:3306/gate", "postgresq://gate:hunter2@db/gate", "gate:hunter2@db"],
)
def test_a_bad_database_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, DATABASE_URL=url)
    assert "DATABASE_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
