"""Throughput and latency of the gateway, against the same load sent straight to a fake n8n.

    python bench/run.py [--seconds 5] [--workers 2]

Starts a fast fake n8n and `n8n-gate serve` (DATABASE_URL's server when set, else the embedded
server in a temporary directory), then measures, at 1 and 32 concurrent connections:
  direct   POST straight to the fake n8n
  new-key  triggers through the gateway, a new Idempotency-Key each
  replay   triggers through the gateway with keys that already completed
Every phase runs in this one invocation, so the ratios between them are meaningful even on a
noisy machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"event":"charge.succeeded","amount":4200}'


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], deadline_seconds: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


@contextmanager
def process(
    args: list[str], env: dict[str, str], ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(ready_url, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def load(
    name: str, url: str, *, concurrency: int, seconds: float, headers_for: object
) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(worker_id: int) -> None:
            nonlocal errors
            sequence = 0
            while time.perf_counter() < stop_at:
                headers = headers_for(worker_id, sequence)  # type: ignore[operator]
                sequence += 1
                started = time.perf_counter()
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(name, concurrency, len(latencies), elapsed, latencies, errors)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    n8n_port, gate_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    data_dir = tempfile.mkdtemp(prefix="n8n-gate-bench-")
    os.chmod(data_dir, 0o755)
    env.update(
        N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}",
        GATE_DATA_DIR=data_dir,
        GATE_DB_POOL_MAX_SIZE="20",
    )
    if env.get("DATABASE_URL"):
        subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, cwd=ROOT, check=True)
    fake = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.fast_n8n:app",
        "--port",
        str(n8n_port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    gate = [
        sys.executable,
        "-m",
        "app",
        "serve",
        "--port",
        str(gate_port),
        "--workers",
        str(args.workers),
    ]
    with process(fake, env, f"http://127.0.0.1:{n8n_port}/webhook/x") as _:
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "keys",
                "create",
                "--tenant",
                f"bench-{uuid.uuid4().hex[:8]}",
            ],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        api_key = created.stdout.strip().split(": ")[1]
        with process(
            gate, {**env, "GATE_ACCESS_LOG": "false"}, f"http://127.0.0.1:{gate_port}/readyz"
        ):
            results = asyncio.run(run_phases(n8n_port, gate_port, api_key, args.seconds))
    print_report(results, args)


async def run_phases(n8n_port: int, gate_port: int, api_key: str, seconds: float) -> list[Result]:
    direct_url = f"http://127.0.0.1:{n8n_port}/webhook/bench"
    gate_url = f"http://127.0.0.1:{gate_port}/webhook/bench"
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    run_id = uuid.uuid4().hex[:8]
    replay_keys = [f"replay-{run_id}-{i}" for i in range(256)]

    def direct(worker: int, seq: int) -> dict[str, str]:
        return {"Content-Type": "application/json", "Idempotency-Key": f"d-{worker}-{seq}"}

    def fresh(worker: int, seq: int) -> dict[str, str]:
        return {**auth, "Idempotency-Key": f"new-{run_id}-{worker}-{seq}-{time.perf_counter_ns()}"}

    def replay(worker: int, seq: int) -> dict[str, str]:
        return {**auth, "Idempotency-Key": replay_keys[(worker * 7919 + seq) % len(replay_keys)]}

    await load("warm-up", gate_url, concurrency=8, seconds=1, headers_for=fresh)
    async with aiohttp.ClientSession() as session:  # complete every replay key once
        for key in replay_keys:
            async with session.post(
                gate_url, data=BODY, headers={**auth, "Idempotency-Key": key}
            ) as response:
                assert response.status == 200, await response.text()
    results = []
    for concurrency in (1, 32):
        results.append(
            await load(
                "direct to fake n8n",
                direct_url,
                concurrency=concurrency,
                seconds=seconds,
                headers_for=direct,
            )
        )
        results.append(
            await load(
                "gateway, new key",
                gate_url,
                concurrency=concurrency,
                seconds=seconds,
                headers_for=fresh,
            )
        )
        results.append(
            await load(
                "gateway, replay",
                gate_url,
                concurrency=concurrency,
                seconds=seconds,
                headers_for=replay,
            )
        )
    return results


def print_report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"gateway workers: {args.workers}; {args.seconds:g} s per phase\n"
    )
    print("| phase | connections | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.name} | {r.concurrency} | {r.throughput:,.0f} | {r.percentile(0.5):.2f} | "
            f"{r.percentile(0.99):.2f} | {r.errors} |"
        )
    by = {(r.name, r.concurrency): r for r in results}
    added = by[("gateway, new key", 1)].percentile(0.5) - by[("direct to fake n8n", 1)].percentile(
        0.5
    )
    print(f"\np50 added by the gateway at 1 connection (new key): {added:.2f} ms")


if __name__ == "__main__":
    main()
