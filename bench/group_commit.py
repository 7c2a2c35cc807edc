"""What group commit saves: accepts stored one per transaction vs in batches.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/gate_bench .venv/bin/python \\
        bench/group_commit.py [--calls 4000]

Stores `--calls` async triggers through `repo.accept_many` (the statement the gateway uses)
with batches of 1, 8 and 16 calls from 16 concurrent tasks, on a migrated database (it runs the
migrations), and prints calls/s and the CPU the whole machine spent per call (Postgres, the
client, and anything else running: keep the machine otherwise idle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import db  # noqa: E402
from app.config import load_settings  # noqa: E402
from app.executions import repo  # noqa: E402
from app.tenants import repo as tenants  # noqa: E402

CONCURRENCY = 16


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def measure(pool: db.Pool, tenant_id: uuid.UUID, *, batch: int, calls: int) -> str:
    run = uuid.uuid4().hex[:8]
    counter = iter(range(calls))

    async def worker() -> None:
        while chunk := [n for _, n in zip(range(batch), counter, strict=False)]:
            async with db.connection(pool) as conn:
                await repo.accept_many(
                    conn,
                    [
                        repo.AcceptCall(
                            tenant_id=tenant_id,
                            key=f"group-commit-{run}-{n}",
                            fingerprint=b"f",
                            method="POST",
                            mode="webhook",
                            workflow_path="bench",
                            raw_path="/webhook/bench",
                            query="",
                            headers=[("content-type", "application/json")],
                            body=b'{"event":"charge.succeeded","amount":4200}',
                        )
                        for n in chunk
                    ],
                    notify=False,
                )

    busy, started = busy_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed, cpu = time.perf_counter() - started, busy_seconds() - busy
    return f"| {batch} | {calls / elapsed:,.0f} | {cpu / calls * 1e6:,.0f} |"


async def main(calls: int, database_url: str) -> None:
    settings = load_settings()
    conn = await asyncpg.connect(database_url)
    try:
        tenant_id = await tenants.upsert_tenant(conn, name=f"bench-{uuid.uuid4().hex[:8]}")
    finally:
        await conn.close()
    pool = await db.create_pool(database_url, settings)
    try:
        print("| calls per statement | calls/s | machine CPU µs per call |")
        print("|---:|---:|---:|")
        for batch in (1, 8, 16):
            print(await measure(pool, tenant_id, batch=batch, calls=calls))
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    database_url = load_settings().database_url
    if database_url is None:
        raise SystemExit("set DATABASE_URL to a server database")
    subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, check=True)
    asyncio.run(main(args.calls, database_url))
