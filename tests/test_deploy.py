"""The compose file, read as Docker Compose would (no engine here to run it): safe by default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.real_n8n import N8N_VERSION

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


def test_n8n_is_reachable_only_through_the_gateway_and_pinned() -> None:
    n8n = compose()["services"]["n8n"]
    assert "ports" not in n8n
    assert n8n["image"].endswith(f":{N8N_VERSION}")


def test_no_secret_has_a_default_and_the_gateway_logs_in_as_its_own_role() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "GATE_DB_PASSWORD", "N8N_ENCRYPTION_KEY"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(use.startswith(":?") for use in uses), (secret, uses)
    gateway = compose()["services"]["gateway"]
    assert gateway["environment"]["DATABASE_URL"].startswith("postgresql://gate:")
    init = (ROOT / "deploy" / "postgres" / "10-gate-role.sh").read_text()
    assert "CREATE ROLE gate LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE" in init


def test_a_stop_waits_longer_than_the_longest_forward() -> None:
    gateway = compose()["services"]["gateway"]
    timeout = float(gateway["environment"]["GATE_N8N_TIMEOUT_SECONDS"])
    assert seconds(gateway["stop_grace_period"]) > timeout
