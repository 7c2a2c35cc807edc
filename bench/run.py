"""Throughput and latency of the gateway, against the same load sent straight to a fake n8n.

    scripts/bench [--seconds 5] [--workers 2]

Starts a fast fake n8n and `n8n-gate serve` (on DATABASE_URL's server when set, else on the
embedded server in a temporary directory), then measures at 1 and 32 concurrent connections:
  direct            POST straight to the fake n8n
  gateway, new key  triggers through the gateway, a new Idempotency-Key each
  gateway, replay   triggers through the gateway with keys that already completed
  gateway, async accept   triggers with Prefer: respond-async (202), delivered by the workers;
                    then accept-to-delivered time for a sample of them
All phases run in one invocation, so their ratios hold even on a noisy machine.
Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import Connection  # noqa: E402

BODY = b'{"event":"charge.succeeded","amount":4200}'
CLI = [sys.executable, "-m", "app"]
Headers = dict[str, str]
HeadersFor = Callable[[int, int], Headers]


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    """The value below which a fraction `q` of `values` lies (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(
    args: list[str], env: dict[str, str], ready_url: str, cwd: Path = ROOT
) -> Iterator[None]:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(ready_url, proc)
            yield
        finally:
            proc.terminate()
            proc.wait(30)


def fake_n8n(port: int, env: dict[str, str]) -> AbstractContextManager[None]:
    """The fast fake n8n (bench/fast_n8n.py) on `port`, while the block runs."""
    command = [sys.executable, "-m", "uvicorn", "bench.fast_n8n:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    return running(command, env, f"http://127.0.0.1:{port}/webhook/ready")


def migrate_and_create_key(env: dict[str, str], *, tenant_prefix: str) -> str:
    """Migrates the database `env` names and returns an API key for a new tenant."""
    subprocess.run([*CLI, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    created = subprocess.run(
        [*CLI, "keys", "create", "--tenant", f"{tenant_prefix}-{uuid.uuid4().hex[:8]}"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().split(": ")[1]


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            command = proc.args if isinstance(proc.args, list) else [proc.args]
            raise SystemExit(f"{' '.join(map(str, command))} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} was not ready within 60 s")


async def load(
    name: str,
    url: str,
    *,
    concurrency: int,
    seconds: float,
    headers_for: HeadersFor,
    expected_status: int = 200,
) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(worker_id: int) -> None:
        nonlocal errors
        connection = Connection(url)
        sequence = 0
        try:
            while time.perf_counter() < stop_at:
                headers = headers_for(worker_id, sequence)
                sequence += 1
                started = time.perf_counter()
                status, _ = await connection.post(BODY, headers)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != expected_status
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Result(name, concurrency, elapsed, latencies, errors)


@dataclass(frozen=True)
class Delays:
    name: str
    delays_ms: list[float]

    def percentile(self, q: float) -> float:
        return percentile(self.delays_ms, q)


async def delivery_delays(
    gate: str, auth: Headers, name: str, keys: list[str], sample: int = 400
) -> Delays:
    """Accept-to-recorded-delivery time of a sample of async keys, read from the status API:
    finished_at - created_at, so it includes n8n's answer and the recording commit."""
    chosen = random.sample(keys, min(sample, len(keys)))
    delays: list[float] = []
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession(headers=auth) as session:
        for key in chosen:
            while True:
                async with session.get(f"{gate}/v1/executions/{key}") as response:
                    status = await response.json()
                if status["status"] == "completed":
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"async execution {key} was not delivered")
                await asyncio.sleep(0.05)
            created = datetime.fromisoformat(status["created_at"])
            finished = datetime.fromisoformat(status["finished_at"])
            delays.append((finished - created).total_seconds() * 1000)
    return Delays(name, delays)


async def run_phases(
    n8n_port: int, gate_port: int, api_key: str, seconds: float
) -> tuple[list[Result], list[Delays]]:
    direct_url = f"http://127.0.0.1:{n8n_port}/webhook/bench"
    gate_url = f"http://127.0.0.1:{gate_port}/webhook/bench"
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    run = uuid.uuid4().hex[:8]
    replay_keys = [f"replay-{run}-{i}" for i in range(256)]

    def direct(worker: int, sequence: int) -> Headers:
        return {"Content-Type": "application/json", "Idempotency-Key": f"d-{worker}-{sequence}"}

    def new_key(worker: int, sequence: int) -> Headers:
        return {**auth, "Idempotency-Key": f"new-{run}-{worker}-{sequence}-{time.time_ns()}"}

    def replay(worker: int, sequence: int) -> Headers:
        return {**auth, "Idempotency-Key": replay_keys[(worker * 7919 + sequence) % 256]}

    async_keys: dict[int | str, list[str]] = {"warm-up": [], 1: [], 32: []}

    def async_key(phase: int | str) -> HeadersFor:
        def headers(worker: int, sequence: int) -> Headers:
            key = f"async-{run}-{phase}-{worker}-{sequence}"
            async_keys[phase].append(key)
            return {**auth, "Idempotency-Key": key, "Prefer": "respond-async"}

        return headers

    gate = f"http://127.0.0.1:{gate_port}"
    # Warm every process's connections on both paths: the first async triggers after a start
    # took 44-72 ms from accept to delivery, against 6 ms once warm.
    await load("warm-up", gate_url, concurrency=8, seconds=1, headers_for=new_key)
    await load(
        "warm-up, async",
        gate_url,
        concurrency=8,
        seconds=0.5,
        headers_for=async_key("warm-up"),
        expected_status=202,
    )
    warm = async_keys["warm-up"]
    await delivery_delays(gate, auth, "warm-up", warm, sample=len(warm))  # all delivered
    async with aiohttp.ClientSession() as session:  # complete every replay key once
        for key in replay_keys:
            headers = {**auth, "Idempotency-Key": key}
            async with session.post(gate_url, data=BODY, headers=headers) as response:
                assert response.status == 200, await response.text()

    phases: list[tuple[str, str, HeadersFor]] = [
        ("direct to fake n8n", direct_url, direct),
        ("gateway, new key", gate_url, new_key),
        ("gateway, replay", gate_url, replay),
    ]
    results = []
    for concurrency in (1, 32):
        for name, url, headers_for in phases:
            results.append(
                await load(
                    name, url, concurrency=concurrency, seconds=seconds, headers_for=headers_for
                )
            )
        results.append(
            await load(
                "gateway, async accept",
                gate_url,
                concurrency=concurrency,
                seconds=seconds,
                headers_for=async_key(concurrency),
                expected_status=202,
            )
        )
    delays = [
        await delivery_delays(gate, auth, f"async accepted at {c} connection(s)", async_keys[c])
        for c in (1, 32)
    ]
    return results, delays


def print_report(results: list[Result], delays: list[Delays], args: argparse.Namespace) -> None:
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"gateway workers: {args.workers}, {args.seconds:g} s per phase\n"
    )
    print("| phase | connections | req/s | p50 ms | p99 ms | unexpected status |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.name} | {r.concurrency} | {r.throughput:,.0f} | {r.percentile(0.5):.2f} | "
            f"{r.percentile(0.99):.2f} | {r.errors} |"
        )
    by_phase = {(r.name, r.concurrency): r for r in results}
    direct = by_phase[("direct to fake n8n", 1)].percentile(0.5)
    added = by_phase[("gateway, new key", 1)].percentile(0.5) - direct
    print(f"\np50 added by the gateway at 1 connection, new key: {added:.2f} ms")
    print("\n| accept to delivered (async) | sample | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for d in delays:
        p50, p99 = d.percentile(0.5), d.percentile(0.99)
        print(f"| {d.name} | {len(d.delays_ms)} | {p50:.1f} | {p99:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="n8n-gate-bench-"))
    try:
        results, delays = measure(args, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)  # the embedded server's files, if used
    print_report(results, delays, args)


def measure(args: argparse.Namespace, data_dir: Path) -> tuple[list[Result], list[Delays]]:
    """Start the fake n8n and the gateway (data in `data_dir` when embedded), run the phases."""
    n8n_port, gate_port = free_port(), free_port()
    data_dir.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
    env.update(
        N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}",
        GATE_DATA_DIR=str(data_dir),
        GATE_ACCESS_LOG="false",
    )
    gate = [*CLI, "serve", "--port", str(gate_port), "--workers", str(args.workers)]
    api_key = migrate_and_create_key(env, tenant_prefix="bench")
    with (
        fake_n8n(n8n_port, env),
        running(gate, env, f"http://127.0.0.1:{gate_port}/readyz"),
    ):
        return uvloop.run(run_phases(n8n_port, gate_port, api_key, args.seconds))


if __name__ == "__main__":
    main()
