"""Verified provider deliveries against plain async accepts, in one run (issue 16).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/ingress.py \\
        [--seconds 3] [--rounds 4] [--connections 32] [--at REV] [--no-deliveries]

Starts the fast fake n8n and `n8n-gate serve --workers 2` with a routes file holding one Stripe
route (`respond = "async"`, one secret, key = JSON /id), on a scratch database created on
DATABASE_URL's server and dropped afterwards (else on the embedded server). Then it runs timed
rounds of the two kinds in pairs, A B, B A, A B, ..., at the same concurrency with the same
1 KiB JSON body:
  plain     POST /webhook/bench with the API key, an Idempotency-Key and Prefer: respond-async
  verified  POST /in/bench-stripe signed as Stripe signs (Stripe-Signature: t=...,v1=<HMAC>),
            a new `id` in each body; the gateway verifies the HMAC and takes the key from /id
Every request of a round is built (and signed) before the round starts, so the load generator
sends bytes only. Between rounds the delivery workers drain the queue, so every round starts
with none of the previous round's deliveries left to compete with (--no-deliveries: none run at
all, the accept path alone). Prints each round, the median accepts/s of each kind, p50/p99 over
all its rounds, CPU per accept in the timed windows (the gateway's processes, deliveries running
meanwhile included; the whole machine's), and verified / plain within each pair of rounds: its
median is the figure to judge by, since the two rounds of a pair ran under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import check_imports_from, database, gateway_env, worktree  # noqa: E402
from bench.http_load import Connection  # noqa: E402
from bench.run import CLI, _wait_ready, fake_n8n, free_port, percentile  # noqa: E402

BODY_BYTES = 1024
ROUTE = "bench-stripe"
SECRET = "whsec_bench_" + "0123456789abcdef" * 2
KINDS = ("plain", "verified")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DRAIN_SECONDS = 600
COMPLETED = "SELECT count(*) FROM executions WHERE status = 'completed'"


@dataclass(frozen=True)
class Round:
    kind: str
    seconds: float
    latencies_ms: list[float]
    errors: int
    gateway_cpu_s: float
    machine_cpu_s: float  # every process's, this load generator's and Postgres's included
    delivered: int = 0  # async executions delivered during the timed window

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def cpu_us_per_accept(self) -> float:
        return self.gateway_cpu_s / max(1, len(self.latencies_ms)) * 1e6

    @property
    def machine_us_per_accept(self) -> float:
        return self.machine_cpu_s / max(1, len(self.latencies_ms)) * 1e6


def event_body(event_id: str) -> bytes:
    """A Stripe-like event of exactly BODY_BYTES bytes whose `id` is `event_id`."""
    document = {
        "id": event_id,
        "object": "event",
        "type": "charge.succeeded",
        "api_version": "2024-06-20",
        "data": {"object": {"id": "ch_bench", "amount": 4200, "currency": "eur"}},
        "padding": "",
    }
    unpadded = len(json.dumps(document, separators=(",", ":")))
    document["padding"] = "x" * (BODY_BYTES - unpadded)
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) == BODY_BYTES, len(body)
    return body


def stripe_signature(body: bytes, at: int) -> str:
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def build_requests(
    kind: str, connection: Connection, api_key: str, tag: str, n: int
) -> list[bytes]:
    """`n` requests of `kind` as bytes on the wire, each with its own key (signed, if verified)."""
    requests = []
    at = int(time.time())
    for i in range(n):
        key = f"{kind}-{tag}-{i:07d}"
        body = event_body(key)
        if kind == "verified":
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": stripe_signature(body, at),
            }
        else:
            headers = {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "Prefer": "respond-async",
            }
        requests.append(connection.encode_post(body, headers))
    return requests


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's worker processes)."""
    pids, index = [pid], 0
    while index < len(pids):
        current = pids[index]
        index += 1
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pids += [int(child) for child in children]
    return pids


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle, not waiting for I/O) so far."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


async def drive(
    kind: str,
    url: str,
    requests: list[bytes],
    *,
    connections: int,
    seconds: float,
    pids: list[int],
    expected: int = 202,
) -> Round:
    latencies: list[float] = []
    errors = 0
    pending = iter(requests)
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal errors
        connection = Connection(url)
        try:
            while time.perf_counter() < stop_at:
                request = next(pending, None)
                if request is None:
                    raise SystemExit(f"{kind}: all {len(requests)} requests sent; raise --max-rate")
                started = time.perf_counter()
                status, _ = await connection.send(request)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != expected
        finally:
            connection.close()

    cpu_before, machine_before = cpu_seconds(pids), machine_cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    gateway_cpu, machine_cpu = (
        cpu_seconds(pids) - cpu_before,
        machine_cpu_seconds() - machine_before,
    )
    return Round(kind, elapsed, latencies, errors, gateway_cpu, machine_cpu)


async def drained(conn: asyncpg.Connection) -> float:
    """Waits until the delivery queue is empty; returns how long that took."""
    started = time.monotonic()
    while await conn.fetchval("SELECT count(*) FROM delivery_queue"):
        if time.monotonic() - started > DRAIN_SECONDS:
            raise SystemExit(f"the delivery queue did not drain within {DRAIN_SECONDS} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def run_rounds(
    args: argparse.Namespace, gate_port: int, api_key: str, db_url: str, pids: list[int]
) -> list[Round]:
    gate = f"http://127.0.0.1:{gate_port}"
    urls = {"plain": f"{gate}/webhook/bench", "verified": f"{gate}/in/{ROUTE}"}
    run = uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(db_url)
    try:
        # Warm-up: both paths, every worker's connections; each first answer checked.
        for kind in KINDS:
            probe = Connection(urls[kind])
            request = build_requests(kind, probe, api_key, f"{run}-probe", 1)[0]
            status, body = await probe.send(request)
            probe.close()
            if status != 202:
                raise SystemExit(f"{kind}: {status} {body[:300]!r}")
            warm = build_requests(kind, probe, api_key, f"{run}-warm", int(args.max_rate / 2))
            await drive(
                kind, urls[kind], warm, connections=args.connections, seconds=0.5, pids=pids
            )
        if not args.no_deliveries:
            await drained(conn)
        rounds: list[Round] = []
        for number in range(args.rounds):
            # A B, B A, A B, ...: with deliveries on, the second round of a pair ran faster,
            # whichever kind it was (docs/benchmarks.md); an even number of pairs cancels that.
            for kind in KINDS if number % 2 == 0 else KINDS[::-1]:
                n = int(args.max_rate * args.seconds)
                tag = f"{run}-{number}"
                requests = build_requests(kind, Connection(urls[kind]), api_key, tag, n)
                delivered = await conn.fetchval(COMPLETED)
                result = await drive(
                    kind,
                    urls[kind],
                    requests,
                    connections=args.connections,
                    seconds=args.seconds,
                    pids=pids,
                )
                del requests
                result = replace(result, delivered=await conn.fetchval(COMPLETED) - delivered)
                drain = 0.0 if args.no_deliveries else await drained(conn)
                print(
                    f"round {number + 1} {kind:8}: {result.throughput:7,.0f} accepts/s, "
                    f"p50 {percentile(result.latencies_ms, 0.5):.2f} ms, "
                    f"p99 {percentile(result.latencies_ms, 0.99):.2f} ms, "
                    f"CPU/accept {result.cpu_us_per_accept:.0f} µs gateway, "
                    f"{result.machine_us_per_accept:.0f} µs machine, "
                    f"{result.delivered / result.seconds:,.0f} delivered/s meanwhile, "
                    f"{result.errors} unexpected, then drained in {drain:.1f} s",
                    flush=True,
                )
                rounds.append(result)
        statuses = await conn.fetch(
            "SELECT idempotency_key LIKE 'in:%' AS verified, status, count(*) AS n "
            "FROM executions GROUP BY 1, 2 ORDER BY 1, 2"
        )
        print(
            "executions:",
            ", ".join(
                f"{'verified' if r['verified'] else 'plain'} {r['status']} {r['n']}"
                for r in statuses
            ),
        )
        return rounds
    finally:
        await conn.close()


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new database on `url`'s server for this run, dropped afterwards."""
    name = f"n8n_gate_bench_{uuid.uuid4().hex[:8]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def gateway(
    args: list[str], env: dict[str, str], ready_url: str, root: Path
) -> Iterator[list[int]]:
    """`n8n-gate serve` while the block runs; yields its process ids (supervisor, workers)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(ready_url, proc)
            time.sleep(1)  # every worker up, not only the one that answered
            yield process_tree(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)


def routes_toml(tenant: str) -> str:
    return f"""
[routes.{ROUTE}]
tenant   = "{tenant}"
provider = "stripe"
secrets  = ["{SECRET}"]
webhook  = "bench"
respond  = "async"
"""


def create_key(env: dict[str, str], root: Path, tenant: str) -> str:
    """Migrates the database `env` names and returns an API key for a new tenant `tenant`."""
    subprocess.run([*CLI, "migrate"], env=env, cwd=root, check=True, capture_output=True)
    created = subprocess.run(
        [*CLI, "keys", "create", "--tenant", tenant],
        env=env,
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().split(": ")[1]


def commit(revision: str | None) -> str:
    """The gateway's revision, short: `revision`, else HEAD, saying so when app/ has changes."""
    git = ["git", "-C", str(ROOT)]
    rev = [*git, "rev-parse", "--short", revision or "HEAD"]
    head = subprocess.run(rev, capture_output=True, text=True, check=True).stdout.strip()
    if revision is not None:
        return head
    status = [*git, "status", "--porcelain", "--", "app", "alembic"]
    dirty = subprocess.run(status, capture_output=True, text=True, check=True).stdout.strip()
    return head + (" with uncommitted changes to app/" if dirty else "")


def report(rounds: list[Round], args: argparse.Namespace, served: str) -> None:
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"gateway at {served} ({args.workers} workers), {args.connections} connections, "
        f"{BODY_BYTES} B JSON bodies, {'no deliveries, ' if args.no_deliveries else ''}"
        f"{args.rounds} rounds of {args.seconds:g} s per kind\n"
    )
    print(
        "| kind | accepts/s (median) | rounds | p50 ms | p99 ms | CPU µs/accept: gateway "
        "| machine | unexpected status |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    medians = {}
    for kind in KINDS:
        mine = [r for r in rounds if r.kind == kind]
        latencies = [ms for r in mine for ms in r.latencies_ms]
        medians[kind] = statistics.median(r.throughput for r in mine)
        each = ", ".join(f"{r.throughput:,.0f}" for r in mine)
        cpu = statistics.median(r.cpu_us_per_accept for r in mine)
        machine = statistics.median(r.machine_us_per_accept for r in mine)
        print(
            f"| {kind} | {medians[kind]:,.0f} | {each} | {percentile(latencies, 0.5):.2f} | "
            f"{percentile(latencies, 0.99):.2f} | {cpu:.0f} | {machine:.0f} | "
            f"{sum(r.errors for r in mine)} |"
        )
    by_kind = {kind: [r for r in rounds if r.kind == kind] for kind in KINDS}
    pairs = [
        v.throughput / p.throughput
        for p, v in zip(by_kind["plain"], by_kind["verified"], strict=True)
    ]
    ratio = statistics.median(pairs)
    print(
        f"\nverified / plain, pair by pair: {', '.join(f'{p:.3f}' for p in pairs)}; "
        f"median {ratio:.3f}, geometric mean {statistics.geometric_mean(pairs):.3f} (of the "
        f"medians above: {medians['verified'] / medians['plain']:.3f}). Verification costs "
        f"{1 - ratio:+.1%} of accept throughput "
        f"(target ≤ 15 %: {'met' if 1 - ratio <= 0.15 else 'missed'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=4, help="per kind, in pairs A B, B A, ...")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--no-deliveries",
        action="store_true",
        help="GATE_DELIVERY_WORKERS=0: the accept path alone, nothing delivered meanwhile",
    )
    parser.add_argument(
        "--at", metavar="REV", help="serve this git revision (a temporary worktree), not app/"
    )
    parser.add_argument(
        "--max-rate", type=float, default=12_000, help="requests/s to build ahead for a round"
    )
    args = parser.parse_args()
    served = commit(args.at)  # resolved now: HEAD may move while the bench runs
    with ExitStack() as stack:
        root = ROOT if args.at is None else stack.enter_context(worktree(served))
        url = stack.enter_context(database())
        if os.environ.get("DATABASE_URL"):
            url = stack.enter_context(scratch_database(url))
        work = Path(tempfile.mkdtemp(prefix="n8n-gate-bench-ingress-"))
        stack.callback(shutil.rmtree, work, True)
        work.chmod(0o755)
        routes = work / "routes.toml"
        n8n_port, gate_port = free_port(), free_port()
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        routes.write_text(routes_toml(tenant))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        env.update(
            DATABASE_URL=url,
            N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}",
            GATE_DATA_DIR=str(work),
            GATE_ACCESS_LOG="false",
            GATE_ROUTES_FILE=str(routes),
        )
        if args.no_deliveries:
            env["GATE_DELIVERY_WORKERS"] = "0"
        stack.enter_context(fake_n8n(n8n_port, env))
        env = gateway_env(root, env)
        check_imports_from(root, env)
        api_key = create_key(env, root, tenant)
        serve = [*CLI, "serve", "--port", str(gate_port), "--workers", str(args.workers)]
        ready = f"http://127.0.0.1:{gate_port}/readyz"
        pids = stack.enter_context(gateway(serve, env, ready, root))
        rounds = uvloop.run(run_rounds(args, gate_port, api_key, url, pids))
    report(rounds, args, served)


if __name__ == "__main__":
    main()
