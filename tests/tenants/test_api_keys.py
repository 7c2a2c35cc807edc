"""API keys: read-only keys, rotation with an overlap, and when a key was last used."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.conftest import ClientFactory, new_api_key
from tests.support.executions_api import new_key
from tests.support.problems import assert_problem
from tests.support.processes import cli_env
from tests.test_cli import run_cli


def cli(database_url: str, *args: str) -> str:
    result = run_cli(*args, env=cli_env(DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_read_only_key_reads_but_cannot_trigger_or_retry(
    make_client: ClientFactory, database_url: str
) -> None:
    tenant = f"ro-{uuid.uuid4().hex[:12]}"
    writer = await new_api_key(database_url, tenant_name=tenant)
    reader = cli(database_url, "keys", "create", "--tenant", tenant, "--read-only").split()[-1]
    key = new_key()
    async with make_client(api_key=writer) as gateway:
        assert (
            await gateway.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
        ).status_code == 200
    async with make_client(api_key=reader) as gateway:
        assert (await gateway.get(f"/v1/executions/{key}")).status_code == 200
        assert (await gateway.get("/v1/executions")).status_code == 200
        refused = [
            await gateway.post("/webhook/echo", json={}, headers={"Idempotency-Key": new_key()}),
            await gateway.post(f"/v1/executions/{key}/retry"),
            await gateway.post("/v1/executions/retry", json={"limit": 1}),
        ]
    for answer in refused:
        assert_problem(answer, 403, "read-only-key")


async def test_a_rotated_key_works_for_its_overlap_then_the_new_one_alone(
    make_client: ClientFactory, database_url: str
) -> None:
    tenant = f"rot-{uuid.uuid4().hex[:12]}"
    old = await new_api_key(database_url, tenant_name=tenant)
    prefix = old.split("_")[1]
    new = cli(database_url, "keys", "rotate", prefix, "--overlap-seconds", "3600").strip()
    assert new.startswith("n8ng_")
    assert new != old
    for key in (old, new):
        async with make_client(api_key=key, auth_cache_seconds=0) as gateway:
            assert (await gateway.get("/v1/executions")).status_code == 200
    newest = cli(database_url, "keys", "rotate", new, "--overlap-seconds", "0").strip()
    async with make_client(api_key=new, auth_cache_seconds=0) as gateway:
        assert_problem(await gateway.get("/v1/executions"), 401, "unauthorized")
    async with make_client(api_key=old, auth_cache_seconds=0) as gateway:
        assert (await gateway.get("/v1/executions")).status_code == 200  # its overlap runs on
    async with make_client(api_key=newest, auth_cache_seconds=0) as gateway:
        assert (await gateway.get("/v1/executions")).status_code == 200
    listed = cli(database_url, "keys", "list")
    line = next(line for line in listed.splitlines() if line.startswith(prefix))
    assert line.split()[2] == "write"
    assert line.split()[-1] != "-"  # it expires


async def test_the_last_use_of_a_key_is_recorded(
    make_client: ClientFactory, database_url: str
) -> None:
    tenant = f"used-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    prefix = api_key.split("_")[1]

    def last_used() -> str:
        listed = cli(database_url, "keys", "list")
        return next(line for line in listed.splitlines() if line.startswith(prefix)).split()[4]

    assert last_used() == "-"
    forged = f"n8ng_{prefix}_{'x' * 43}"  # the right prefix, not the key
    async with make_client(api_key=forged) as gateway:
        assert_problem(await gateway.get("/v1/executions"), 401, "unauthorized")
    assert last_used() == "-"
    async with make_client(api_key=api_key) as gateway:
        for _ in range(3):
            assert (await gateway.get("/v1/executions")).status_code == 200
    deadline = time.monotonic() + 5  # noted in the background
    while last_used() == "-":
        assert time.monotonic() < deadline, "the use was never noted"
        await asyncio.sleep(0.05)
