"""A per-tenant rate limit, kept in Postgres so that every process shares it."""

from __future__ import annotations

import uuid

from tests.conftest import ClientFactory, new_api_key
from tests.support.executions_api import new_key
from tests.support.fake_n8n import FakeN8n
from tests.support.problems import assert_problem

LIMIT = {"rate_limit_per_second": 0.01, "rate_limit_burst": 2}  # two, then one in 100 s


async def test_past_its_burst_a_tenant_gets_429_with_retry_after_and_nothing_runs(
    make_client: ClientFactory, n8n: FakeN8n, database_url: str
) -> None:
    api_key = await new_api_key(database_url, tenant_name=f"rl-{uuid.uuid4().hex[:12]}")
    keys = [new_key() for _ in range(3)]
    async with make_client(api_key=api_key, **LIMIT) as gateway:
        answers = [
            await gateway.post("/webhook/echo", json={}, headers={"Idempotency-Key": key})
            for key in keys
        ]
    assert [answer.status_code for answer in answers[:2]] == [200, 200]
    problem = assert_problem(answers[2], 429, "rate-limited")
    assert "nothing was forwarded" in problem["detail"]
    assert 90 <= int(answers[2].headers["retry-after"]) <= 100
    assert n8n.calls_for(keys[2]) == []


async def test_the_limit_is_shared_by_every_process_and_kept_per_tenant(
    make_client: ClientFactory, database_url: str
) -> None:
    tenant = f"rl-{uuid.uuid4().hex[:12]}"
    api_key = await new_api_key(database_url, tenant_name=tenant)
    other = await new_api_key(database_url)
    # Two gateways with pools of their own, as two processes would be.
    async with (
        make_client(api_key=api_key, **LIMIT) as first,
        make_client(api_key=api_key, **LIMIT) as second,
        make_client(api_key=other, **LIMIT) as elsewhere,
    ):
        for gateway in (first, second):
            answer = await gateway.post(
                "/webhook/echo", json={}, headers={"Idempotency-Key": new_key()}
            )
            assert answer.status_code == 200
        for gateway in (first, second):
            answer = await gateway.post(
                "/webhook/echo", json={}, headers={"Idempotency-Key": new_key()}
            )
            assert_problem(answer, 429, "rate-limited")
        answer = await elsewhere.post(
            "/webhook/echo", json={}, headers={"Idempotency-Key": new_key()}
        )
        assert answer.status_code == 200
