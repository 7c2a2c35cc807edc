"""The trigger path with metrics and JSON logs on, against both off, in one run (issue 17).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python \\
        bench/observability.py [--seconds 3] [--rounds 6] [--connections 32] [--workers 2]

Starts the fast fake n8n and two `n8n-gate serve --workers N` side by side on one scratch
database (created on DATABASE_URL's server and dropped afterwards, else on the embedded server):
  on   GATE_METRICS_TOKEN set and /metrics scraped every second meanwhile (so under
       --workers > 1 the multiprocess files are written and read), GATE_LOG_FORMAT=json: the
       access log's line for each request is a JSON object
  off  no token (/metrics 404), text logs (the access log on, as by default)
Then timed rounds of sync triggers with a new Idempotency-Key each (claim, forward, record: the
path every trigger takes), 1 KiB JSON bodies, in pairs on, off / off, on / ...; only one gateway
is loaded at a time. The figure to judge by is on / off within each pair, its median: the two
rounds of a pair ran under the same conditions. Counting itself is never off (a counter's
increment costs about a microsecond); what "off" leaves out is the exposition, its scrapes and
the JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import check_imports_from, database, gateway_env  # noqa: E402
from bench.http_load import Connection  # noqa: E402
from bench.ingress import (  # noqa: E402
    Round,
    commit,
    create_key,
    drive,
    event_body,
    gateway,
    scratch_database,
)
from bench.run import CLI, fake_n8n, free_port, percentile  # noqa: E402

KINDS = ("on", "off")
TOKEN = "bench-metrics-token-0123456789"  # noqa: S105 (a scratch gateway's)


def build_requests(connection: Connection, api_key: str, tag: str, n: int) -> list[bytes]:
    """`n` sync triggers as bytes on the wire, each with a new Idempotency-Key."""
    auth = f"Bearer {api_key}"
    requests = []
    for i in range(n):
        key = f"{tag}-{i:07d}"
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        headers["Idempotency-Key"] = key
        requests.append(connection.encode_post(event_body(key), headers))
    return requests


async def scraping(url: str, stop: asyncio.Event) -> int:
    """Scrapes `url` every second until `stop`; returns how many scrapes answered 200."""
    answered = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
                await answer.read()
                answered += answer.status == 200
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
    return answered


async def run_rounds(
    args: argparse.Namespace, ports: dict[str, int], api_key: str, pids: dict[str, list[int]]
) -> list[Round]:
    urls = {kind: f"http://127.0.0.1:{port}/webhook/bench" for kind, port in ports.items()}
    run = uuid.uuid4().hex[:8]
    stop = asyncio.Event()
    scraper = asyncio.create_task(scraping(f"http://127.0.0.1:{ports['on']}/metrics", stop))
    n = int(args.max_rate * args.seconds)
    for kind in KINDS:  # warm-up: every worker's connections, each first answer checked
        probe = Connection(urls[kind])
        status, body = await probe.send(build_requests(probe, api_key, f"{run}-probe-{kind}", 1)[0])
        probe.close()
        if status != 200:
            raise SystemExit(f"{kind}: {status} {body[:300]!r}")
        warm = build_requests(Connection(urls[kind]), api_key, f"{run}-warm-{kind}", n // 4)
        await drive(kind, urls[kind], warm, connections=args.connections, seconds=1,
                    pids=pids[kind], expected=200)  # fmt: skip
    rounds: list[Round] = []
    for number in range(args.rounds):
        for kind in KINDS if number % 2 == 0 else KINDS[::-1]:
            tag = f"{run}-{number}-{kind}"
            requests = build_requests(Connection(urls[kind]), api_key, tag, n)
            result = await drive(
                kind,
                urls[kind],
                requests,
                connections=args.connections,
                seconds=args.seconds,
                pids=pids[kind],
                expected=200,
            )
            del requests
            print(
                f"round {number + 1} {kind:3}: {result.throughput:7,.0f} triggers/s, "
                f"p50 {percentile(result.latencies_ms, 0.5):.2f} ms, "
                f"p99 {percentile(result.latencies_ms, 0.99):.2f} ms, "
                f"CPU/trigger {result.cpu_us_per_accept:.0f} µs gateway, "
                f"{result.machine_us_per_accept:.0f} µs machine, {result.errors} unexpected",
                flush=True,
            )
            rounds.append(result)
    stop.set()
    scrapes = await scraper
    print(f"/metrics of 'on' answered 200 to {scrapes} scrapes meanwhile")
    if scrapes == 0:
        raise SystemExit("the 'on' gateway never answered a scrape: metrics were not on")
    return rounds


def report(rounds: list[Round], args: argparse.Namespace, served: str) -> None:
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"gateway at {served} ({args.workers} workers each), {args.connections} connections, "
        f"sync triggers with new keys, {args.rounds} rounds of {args.seconds:g} s per kind\n"
    )
    print("| kind | triggers/s (median) | rounds | p50 ms | p99 ms | CPU µs/trigger: gateway "
          "| machine | unexpected status |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    by_kind = {kind: [r for r in rounds if r.kind == kind] for kind in KINDS}
    for kind, mine in by_kind.items():
        latencies = [ms for r in mine for ms in r.latencies_ms]
        print(
            f"| {kind} | {statistics.median(r.throughput for r in mine):,.0f} | "
            f"{', '.join(f'{r.throughput:,.0f}' for r in mine)} | "
            f"{percentile(latencies, 0.5):.2f} | {percentile(latencies, 0.99):.2f} | "
            f"{statistics.median(r.cpu_us_per_accept for r in mine):.0f} | "
            f"{statistics.median(r.machine_us_per_accept for r in mine):.0f} | "
            f"{sum(r.errors for r in mine)} |"
        )
    pairs = [
        on.throughput / off.throughput
        for on, off in zip(by_kind["on"], by_kind["off"], strict=True)
    ]
    ratio = statistics.median(pairs)
    print(
        f"\non / off, pair by pair: {', '.join(f'{p:.3f}' for p in pairs)}; median {ratio:.3f}, "
        f"geometric mean {statistics.geometric_mean(pairs):.3f}. Metrics and JSON logs cost "
        f"{1 - ratio:+.1%} of trigger throughput "
        f"(target ≤ 10 %: {'met' if 1 - ratio <= 0.10 else 'missed'})"
    )


@contextmanager
def two_gateways(
    args: argparse.Namespace, env: dict[str, str], work: Path
) -> Iterator[tuple[dict[str, int], dict[str, list[int]]]]:
    ports = {kind: free_port() for kind in KINDS}
    settings = {
        # The access log is on in both, as it is by default: what differs is its format.
        "on": {"GATE_METRICS_TOKEN": TOKEN, "GATE_LOG_FORMAT": "json"},
        "off": {"GATE_LOG_FORMAT": "text"},
    }
    pids = {}
    with ExitStack() as stack:
        for kind in KINDS:
            serve = [*CLI, "serve", "--port", str(ports[kind]), "--workers", str(args.workers)]
            ready = f"http://127.0.0.1:{ports[kind]}/readyz"
            kind_env = {**env, **settings[kind], "GATE_DATA_DIR": str(work / kind)}
            pids[kind] = stack.enter_context(gateway(serve, kind_env, ready, ROOT))
        yield ports, pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=6, help="per kind, in pairs A B, B A, ...")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--max-rate", type=float, default=8_000, help="requests/s to build ahead for a round"
    )
    args = parser.parse_args()
    served = commit(None)
    with ExitStack() as stack:
        url = stack.enter_context(database())
        if os.environ.get("DATABASE_URL"):
            url = stack.enter_context(scratch_database(url))
        work = Path(tempfile.mkdtemp(prefix="n8n-gate-bench-observability-"))
        stack.callback(shutil.rmtree, work, True)
        work.chmod(0o755)
        n8n_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(DATABASE_URL=url, N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}")
        stack.enter_context(fake_n8n(n8n_port, env))
        env = gateway_env(ROOT, env)
        check_imports_from(ROOT, env)
        api_key = create_key(env, ROOT, f"bench-{uuid.uuid4().hex[:8]}")
        ports, pids = stack.enter_context(two_gateways(args, env, work))
        rounds = uvloop.run(run_rounds(args, ports, api_key, pids))
    report(rounds, args, served)


if __name__ == "__main__":
    main()
