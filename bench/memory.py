"""Peak memory of one gateway process under the loads of issue 14, item 9.

    .venv/bin/python bench/memory.py [--base REVISION]

Each load runs against a fresh `n8n-gate serve` process (one worker, default settings) in front
of the fast fake n8n (bench/fast_n8n.py), on DATABASE_URL's server or an embedded one. The
process's peak RSS (VmHWM) is read from /proc after the load, with the gateway still holding
whatever its callers left it holding:
  fresh-60MiB      12 callers trigger a workflow answering 60 MiB and read nothing of it
  replay-8MiB      60 callers ask for the replay of an 8 MiB answer and read nothing of it
  bodies-8MiB      64 callers send 8 MiB bodies to a workflow that answers after 3 s
  headers-256KiB   1,200 answers with 256 KiB of headers, each replayed once (the replay cache)
"held" is the RSS while the callers still hold what they sent or asked for, over the baseline;
the bound checked on it is GATE_MAX_BYTES_IN_FLIGHT + GATE_REPLAY_CACHE_BYTES + 128 MiB for
copies in passing and what the C allocator keeps of freed memory. "peak" (VmHWM) also counts the
transient copies of the README's worst case (rows read from Postgres, joined bodies). With
--base, the same loads also run against that revision (a git worktree sharing this tree's
migrations), side by side in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import check_imports_from, database, gateway_env, worktree  # noqa: E402
from bench.run import CLI, fake_n8n, free_port, migrate_and_create_key  # noqa: E402

MIB = 1024 * 1024
BUDGET = 256 * MIB  # the defaults of GATE_MAX_BYTES_IN_FLIGHT and GATE_REPLAY_CACHE_BYTES
CACHE = 64 * MIB
SLACK = 128 * MIB
SETTLE_SECONDS = 2.0
HEADER_TRIGGERS = int(os.environ.get("BENCH_HEADER_TRIGGERS", "1200"))


@dataclass(frozen=True)
class Gate:
    port: int
    pid: int
    api_key: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # keys new to each gateway

    def head(self, path: str, key: str, *, length: int = 0) -> bytes:
        return (
            f"POST /webhook/{path} HTTP/1.1\r\nHost: gate\r\n"
            f"Authorization: Bearer {self.api_key}\r\nIdempotency-Key: {self.run}-{key}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()


@dataclass(frozen=True)
class Measured:
    load: str
    baseline_mib: float
    held_mib: float
    peak_mib: float
    statuses: dict[int, int]


def rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for process {pid}")


async def stalled(gate: Gate, path: str, key: str, body: bytes = b"") -> tuple[Any, Any]:
    """A caller that sends a trigger and reads nothing yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gate.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(gate.head(path, key, length=len(body)) + body)
    await writer.drain()
    return reader, writer


async def status_of(reader: asyncio.StreamReader) -> int:
    """Reads the status line and head of the answer, and nothing more."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
    return int(head.split(b" ", 2)[1])


async def trigger(gate: Gate, path: str, key: str, body: bytes = b"") -> int:
    """A caller that reads its whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port, limit=MIB)
    writer.write(gate.head(path, key, length=len(body)) + body)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    writer.close()
    return int(head.split(b" ", 2)[1])


Loaded = tuple[list[int], float]  # the answers' statuses, and RSS while callers hold them


async def fresh_answers(gate: Gate) -> Loaded:
    callers = [stalled(gate, f"large?bytes={60 * MIB}", f"fresh-{i}") for i in range(12)]
    return await _hold(gate, callers)


async def replays(gate: Gate) -> Loaded:
    assert await trigger(gate, f"large?bytes={8 * MIB}", "stored") == 200
    callers = [stalled(gate, f"large?bytes={8 * MIB}", "stored") for _ in range(60)]
    return await _hold(gate, callers)


async def bodies(gate: Gate) -> Loaded:
    body = b"\0" * (8 * MIB)
    callers = [stalled(gate, "slow?delay=5", f"body-{i}", body) for i in range(64)]
    return await _hold(gate, callers)


async def headers(gate: Gate) -> Loaded:
    """Each answer once fresh, then replayed: a replay keeps the execution in the cache."""
    statuses = []
    for i in range(HEADER_TRIGGERS):
        statuses.append(await trigger(gate, "big?headers=32", f"headers-{i}"))
        statuses.append(await trigger(gate, "big?headers=32", f"headers-{i}"))
    return statuses, rss_mib(gate.pid, "VmRSS")


async def _hold(gate: Gate, callers: Sequence[Awaitable[tuple[Any, Any]]]) -> Loaded:
    connected = await asyncio.gather(*callers)
    await asyncio.sleep(SETTLE_SECONDS)  # the gateway reads, forwards and spools meanwhile
    held = rss_mib(gate.pid, "VmRSS")
    statuses = await asyncio.gather(*(status_of(reader) for reader, _ in connected))
    for _, writer in connected:
        writer.transport.abort()
    return list(statuses), held


LOADS: dict[str, Callable[[Gate], Coroutine[Any, Any, Loaded]]] = {
    "fresh-60MiB": fresh_answers,
    "replay-8MiB": replays,
    "bodies-8MiB": bodies,
    "headers-256KiB": headers,
}


@contextmanager
def gateway(env: dict[str, str], root: Path, api_key: str) -> Iterator[Gate]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(port, process)
            yield Gate(port=port, pid=process.pid, api_key=api_key)
        finally:
            process.terminate()
            process.wait(60)


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the gateway on port {port} did not start")


def measure(env: dict[str, str], root: Path, api_key: str, load: str) -> Measured:
    with gateway(env, root, api_key) as gate:
        for i in range(20):  # warm up: imports, pools, first allocations
            asyncio.run(trigger(gate, "started", f"warm-{uuid.uuid4().hex}-{i}"))
        baseline = rss_mib(gate.pid, "VmRSS")
        statuses, held = asyncio.run(LOADS[load](gate))
        peak = rss_mib(gate.pid, "VmHWM")
    counted: dict[int, int] = {}
    for status in statuses:
        counted[status] = counted.get(status, 0) + 1
    return Measured(load, baseline, held, peak, counted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also measure this revision (a git worktree)")
    parser.add_argument("--load", choices=sorted(LOADS), action="append")
    args = parser.parse_args()
    loads = args.load or list(LOADS)
    n8n_port = free_port()
    with ExitStack() as stack:
        url = stack.enter_context(database())
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        env.update(
            DATABASE_URL=url,
            N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}",
            GATE_ACCESS_LOG="false",
        )
        builds = {"this tree": (ROOT, env)}
        if args.base:
            base_root = stack.enter_context(worktree(args.base))
            base_env = gateway_env(base_root, env)
            check_imports_from(base_root, base_env)
            builds = {args.base: (base_root, base_env), **builds}
        api_key = migrate_and_create_key(env, tenant_prefix="memory")
        stack.enter_context(fake_n8n(n8n_port, env))
        rows = [
            (name, measure(build_env, root, api_key, load))
            for load in loads
            for name, (root, build_env) in builds.items()
        ]
    print_table(rows)


def print_table(rows: list[tuple[str, Measured]]) -> None:
    bound = (BUDGET + CACHE + SLACK) / MIB
    print(f"held: RSS while callers hold what they sent or asked for (bound +{bound:.0f} MiB)")
    print("| load | build | baseline | held | peak | answers | held within bound |")
    print("|---|---|---:|---:|---:|---|---|")
    for build, m in rows:
        answers = ", ".join(f"{count} x {status}" for status, count in sorted(m.statuses.items()))
        held = m.held_mib - m.baseline_mib
        within = "yes" if held <= bound else "**no**"
        print(
            f"| {m.load} | {build} | {m.baseline_mib:.0f} MiB | {held:+.0f} MiB "
            f"| {m.peak_mib - m.baseline_mib:+.0f} MiB | {answers} | {within} |"
        )


if __name__ == "__main__":
    main()
