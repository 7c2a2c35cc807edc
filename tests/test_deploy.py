"""What deploy/ holds, checked without an engine to run it: the compose file, read as Docker
Compose would (safe by default), and the Prometheus rules and Grafana dashboard, checked by
promtool over the metrics the gateway exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from app import metrics
from app.config import ConfigError, load_settings
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


# --- deploy/prometheus and deploy/grafana: checked by promtool, over metrics the gateway has ---

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "n8n-gate.json"
METRIC_NAME = re.compile(r"\bn8n_gate_[a-z0-9_]+")


def promtool() -> str:
    """Prometheus's promtool (scripts/install-promtool); CI must have it, elsewhere the tests
    that need it say how to get it."""
    cached = Path.home() / ".cache" / "n8n-gate" / "promtool" / "promtool"
    found = shutil.which("promtool") or (str(cached) if cached.exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: CI runs scripts/install-promtool first")
        pytest.skip("promtool is missing: run scripts/install-promtool")
    return found


def run_promtool(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_are_valid_and_fire_as_their_unit_tests_say() -> None:
    run_promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS)
    run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)


def test_the_alert_rules_cover_what_operators_must_hear_of() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert {
        "N8nGateDeadLettersRising",
        "N8nGateQueueBacklog",
        "N8nGateN8nErrorRate",
        "N8nGateDatabaseUnavailable",
    } <= set(by_name)
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    # Grafana's variables as Prometheus would get them once Grafana has filled them in.
    filled = [q.replace("$__rate_interval", "1m").replace("$job", ".+") for q in queries]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": query}
                    for n, query in enumerate(filled)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", "queries.yml", cwd=tmp_path)


def exposed_names() -> set[str]:
    """Every sample name the gateway's /metrics can carry."""
    families = [
        *REGISTRY.collect(),
        *metrics._ScrapeCollector(
            metrics.ScrapeFacts(True, metrics.QueueFacts(0, 0, 0, 0.0))
        ).collect(),
    ]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in families
        if family.name.startswith("n8n_gate_")
        for suffix in suffixes[family.type]
    }


def test_the_dashboard_and_the_alerts_use_only_metrics_the_gateway_exposes() -> None:
    exposed = exposed_names()
    used = set(METRIC_NAME.findall(DASHBOARD.read_text())) | set(
        METRIC_NAME.findall((PROMETHEUS / "alerts.yml").read_text())
    )
    assert used, "no metric found"
    assert used <= exposed, sorted(used - exposed)
    required = {
        "n8n_gate_triggers_total",
        "n8n_gate_forward_duration_seconds_bucket",
        "n8n_gate_n8n_failures_total",
        "n8n_gate_queue_depth",
        "n8n_gate_dead_letters_total",
    }
    assert required <= exposed


def test_the_example_scrape_config_is_valid_and_sends_the_token(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["authorization"]["type"] == "Bearer"
    assert job["metrics_path"] == "/metrics"
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-sixteen-or-more\n")
    job["authorization"]["credentials_file"] = str(token_file)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_an_empty_metrics_token_in_the_compose_file_means_metrics_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = compose()["services"]["gateway"]
    assert gateway["environment"]["GATE_METRICS_TOKEN"] == "${GATE_METRICS_TOKEN:-}"
    monkeypatch.setenv("GATE_METRICS_TOKEN", "")  # as compose passes it when .env has none
    assert load_settings(_env_file=None).metrics_token is None
    monkeypatch.setenv("GATE_METRICS_TOKEN", "short")
    with pytest.raises(ConfigError, match="GATE_METRICS_TOKEN"):
        load_settings(_env_file=None)
