"""The `n8n-gate` command, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.migrations import head_revision
from tests.conftest import empty_database
from tests.support.fake_n8n import FakeN8n
from tests.support.processes import Gateway, cli_env
from tests.support.servers import blackhole_port, refusing_port

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_keys_create_list_and_revoke(database_url: str) -> None:
    env = cli_env(DATABASE_URL=database_url)
    created = run_cli("keys", "create", "--tenant", "cli-tenant", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().split(": ")[1]
    prefix = secret.split("_")[1]
    assert secret.startswith("n8ng_")

    listed = run_cli("keys", "list", env=env)
    assert prefix in listed.stdout
    assert secret not in listed.stdout

    assert run_cli("keys", "revoke", prefix, env=env).returncode == 0
    again = run_cli("keys", "revoke", prefix, env=env)
    assert again.returncode == 2
    assert "no live API key" in again.stderr


def test_a_bad_tenant_name_is_one_clear_line(database_url: str) -> None:
    result = run_cli(
        "keys", "create", "--tenant", "no spaces please", env=cli_env(DATABASE_URL=database_url)
    )
    assert result.returncode == 2
    assert result.stderr.startswith("n8n-gate: Tenant names are")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATE_N8N_TIMEOUT_SECONDS", "soon"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("N8N_BASE_URL", "not a url"),
        ("GATE_DB_POOL_MAX_SIZE", "0"),
    ],
)
def test_bad_config_is_one_line_naming_the_setting(name: str, value: str) -> None:
    result = run_cli("migrate", env=cli_env(**{name: value}))
    assert result.returncode == 2
    assert result.stderr.startswith(f"n8n-gate: invalid setting {name}:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["migrate"], ["keys", "list"]])
def test_a_database_that_refuses_is_one_clear_line(command: list[str]) -> None:
    with refusing_port() as port:
        env = cli_env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/gate")
        result = run_cli(*command, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("n8n-gate: cannot connect to the database:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_database_that_does_not_answer_is_one_line_within_the_connect_timeout() -> None:
    with blackhole_port() as port:
        env = cli_env(
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/gate",
            GATE_DB_CONNECT_TIMEOUT_SECONDS="0.5",
        )
        result = run_cli("serve", "--port", "1", env=env, timeout=30)  # asyncpg's default: 60 s
    assert result.returncode == 2
    assert "did not answer within 0.5 s" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_database_whose_schema_is_behind(database_url: str) -> None:
    with empty_database(database_url) as empty:
        result = run_cli("serve", "--port", "1", env=cli_env(DATABASE_URL=empty))
    assert result.returncode == 2
    assert "run 'n8n-gate migrate' first" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_brings_an_empty_database_to_head(database_url: str) -> None:
    with empty_database(database_url) as empty:
        first = run_cli("migrate", env=cli_env(DATABASE_URL=empty))
        second = run_cli("migrate", env=cli_env(DATABASE_URL=empty))
    assert first.returncode == second.returncode == 0, first.stderr
    assert f"schema is at {head_revision()}" in second.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "gate-data"
    path.parent.chmod(0o755)  # the embedded server runs as its own user when we are root
    return path


def start_gateway(data_dir: Path, n8n_url: str) -> Gateway:
    return Gateway(cli_env(GATE_DATA_DIR=str(data_dir), N8N_BASE_URL=n8n_url))


def stop_gateway(gateway: Gateway) -> str:
    assert gateway.stop() == 0, gateway.output()
    return gateway.output()


@pytest.fixture
def n8n_url(fake_n8n: tuple[FakeN8n, str]) -> str:
    return fake_n8n[1]


@pytest.mark.slow
def test_serve_without_database_url_uses_embedded_postgres_that_survives_a_restart(
    data_dir: Path, n8n_url: str
) -> None:
    first = start_gateway(data_dir, n8n_url)
    try:
        trigger = httpx.post(
            f"{first.base_url}/webhook/echo",
            json={"n": 1},
            headers={"Idempotency-Key": "persist-1"},
        )
        assert trigger.status_code == 401
    finally:
        output = stop_gateway(first)
    api_key = next(line.strip() for line in output.splitlines() if line.strip().startswith("n8ng_"))

    auth = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "persist-1"}
    second = start_gateway(data_dir, n8n_url)
    try:
        fresh = httpx.post(f"{second.base_url}/webhook/echo", json={"n": 1}, headers=auth)
        assert fresh.status_code == 200
    finally:
        second_output = stop_gateway(second)
    assert "n8ng_" not in second_output  # the default key is printed on first start only

    third = start_gateway(data_dir, n8n_url)
    try:
        replay = httpx.post(f"{third.base_url}/webhook/echo", json={"n": 1}, headers=auth)
    finally:
        stop_gateway(third)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"


def test_serve_refuses_a_bad_routes_file_with_one_line_per_mistake(
    database_url: str, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[routes.a]\ntenant = "acme"\nprovider = "paypal"\nsecrets = ["s"]\nwebhook = "w"\n'
        '[routes.b]\ntenant = "acme"\nprovider = "github"\nsecrets = ["s"]\n'
    )
    env = cli_env(DATABASE_URL=database_url, GATE_ROUTES_FILE=str(routes))
    result = run_cli("serve", "--port", "1", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "route 'a': provider:" in lines[0]
    assert "route 'b': webhook: missing" in lines[1]


def test_serve_refuses_a_route_whose_tenant_does_not_exist(
    database_url: str, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[routes.gh]\ntenant = "nobody-here"\nprovider = "github"\nsecrets = ["s"]\nwebhook = "w"\n'
    )
    env = cli_env(DATABASE_URL=database_url, GATE_ROUTES_FILE=str(routes))
    result = run_cli("serve", "--port", "1", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"n8n-gate: {routes}: route 'gh': tenant: 'nobody-here' does not exist "
        "(create it with 'n8n-gate keys create --tenant nobody-here')"
    ]
