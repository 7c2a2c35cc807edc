"""Interleaved A/B of the trigger path: does a change make the gateway faster at one connection?

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/gate_ab .venv/bin/python bench/ab.py \\
        --base HEAD [--kind new-key] [--requests 3000] [--rounds 3]

Compares the working tree (the change) with the `--base` revision, checked out in a temporary
git worktree. Both builds must share their migrations: they run side by side on one database
(DATABASE_URL, else an embedded server in a temporary directory), with one fake n8n and one
`n8n-gate serve` process each. One caller sends the requests one at a time, alternating
base, change, change, base, ... so that whatever the machine does meanwhile hits both alike.

Why not two bench runs one after the other: this shared 2-core VM changes speed by more than most
changes are worth. Run to run, the p50 of new keys at one connection moved by 0.3 ms and more on
the same code, and five alternated pairs of sequential runs once showed a 0.17 ms gain that
interleaving showed to be noise (-0.04 to 0.00 ms). Interleaved, on new keys, 2,000 requests a
round: the same code on both sides differed by -0.09 to +0.10 ms per round; a 100 µs busy loop
added to the trigger path showed +0.10 to +0.13 ms in each of three rounds. Trust a difference
that has one sign in every round and is larger than 0.1 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import Connection  # noqa: E402
from bench.run import (  # noqa: E402
    BODY,
    CLI,
    fake_n8n,
    free_port,
    migrate_and_create_key,
    percentile,
    running,
)

Headers = dict[str, str]
KINDS = ("new-key", "replay", "async")
WARM_UP_REQUESTS = 300


@dataclass(frozen=True)
class Build:
    name: str
    root: Path
    port: int


@dataclass(frozen=True)
class Round:
    base_ms: list[float]
    change_ms: list[float]

    @property
    def difference_ms(self) -> float:
        return percentile(self.change_ms, 0.5) - percentile(self.base_ms, 0.5)

    def describe(self) -> str:
        base, change = percentile(self.base_ms, 0.5), percentile(self.change_ms, 0.5)
        return (
            f"base p50 {base:.3f} p90 {percentile(self.base_ms, 0.9):.3f} ms | "
            f"change p50 {change:.3f} p90 {percentile(self.change_ms, 0.9):.3f} ms | "
            f"change - base {self.difference_ms:+.3f} ms ({self.difference_ms / base:+.1%})"
        )


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """`revision` checked out in a temporary directory (a detached git worktree)."""
    path = Path(tempfile.mkdtemp(prefix="n8n-gate-ab-"))
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", "--force", str(path), revision], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def database() -> Iterator[str]:
    """DATABASE_URL, or an embedded server that lives as long as this block."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from app.embedded import start_embedded

    data_dir = Path(tempfile.mkdtemp(prefix="n8n-gate-ab-db-"))
    data_dir.chmod(0o755)  # as root the server runs as another user
    server = start_embedded(data_dir)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def require_same_migrations(base_root: Path) -> None:
    """Both builds serve from one database, so they must agree on its schema."""

    def revisions(root: Path) -> list[str]:
        return sorted(path.name for path in (root / "alembic" / "versions").glob("*.py"))

    if revisions(base_root) != revisions(ROOT):
        raise SystemExit(
            "the base revision and the working tree have different migrations; "
            "compare builds that share their schema"
        )


def gateway_env(root: Path, base_env: dict[str, str]) -> dict[str, str]:
    """The environment in which `python -m app` imports the `app` package under `root`."""
    return {**base_env, "PYTHONPATH": str(root)}


def check_imports_from(root: Path, env: dict[str, str]) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        env=gateway_env(root, env),
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the gateway for {root} would import {found}")


def headers_for(kind: str, auth: Headers, tag: str) -> Callable[[int], Headers]:
    run = uuid.uuid4().hex[:8]
    if kind == "replay":
        return lambda i: {**auth, "Idempotency-Key": f"replay-{tag}-{run}-{i % 256}"}
    prefer = {"Prefer": "respond-async"} if kind == "async" else {}
    return lambda i: {**auth, **prefer, "Idempotency-Key": f"{kind}-{tag}-{run}-{i}"}


async def compare(
    base: Build, change: Build, *, api_key: str, kind: str, requests: int, rounds: int
) -> list[Round]:
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    expected = 202 if kind == "async" else 200
    connections = {
        build.name: Connection(f"http://127.0.0.1:{build.port}/webhook/bench")
        for build in (base, change)
    }
    keys = {build.name: headers_for(kind, auth, build.name) for build in (base, change)}

    sent = dict.fromkeys(connections, 0)

    async def send(build: Build, latencies: list[float]) -> None:
        headers = keys[build.name](sent[build.name])  # a new key each (replays: 256 in turn)
        sent[build.name] += 1
        started = time.perf_counter()
        status, body = await connections[build.name].post(BODY, headers)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != expected:
            raise SystemExit(f"{build.name} answered {status}: {body[:300]!r}")

    try:
        for _ in range(max(WARM_UP_REQUESTS, 256)):  # also completes every replay key once
            await send(base, [])
            await send(change, [])
        results: list[Round] = []
        for _ in range(rounds):
            round_ = Round(base_ms=[], change_ms=[])
            for i in range(requests):
                first, second = (base, change) if i % 2 == 0 else (change, base)
                for build in (first, second):
                    await send(build, round_.base_ms if build is base else round_.change_ms)
            print(f"round {len(results) + 1}: {round_.describe()}", flush=True)
            results.append(round_)
        return results
    finally:
        for connection in connections.values():
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--kind", choices=KINDS, default="new-key")
    parser.add_argument("--requests", type=int, default=3000, help="per build and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        base_root = stack.enter_context(worktree(args.base))
        require_same_migrations(base_root)
        url = stack.enter_context(database())
        n8n_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATE_")}
        env.update(
            DATABASE_URL=url, N8N_BASE_URL=f"http://127.0.0.1:{n8n_port}", GATE_ACCESS_LOG="false"
        )
        api_key = migrate_and_create_key(env, tenant_prefix="ab")
        stack.enter_context(fake_n8n(n8n_port, env))
        base = Build("base", base_root, free_port())
        change = Build("change", ROOT, free_port())
        for build in (base, change):
            check_imports_from(build.root, env)
            serve = [*CLI, "serve", "--port", str(build.port), "--workers", "1"]
            ready = f"http://127.0.0.1:{build.port}/readyz"
            stack.enter_context(running(serve, gateway_env(build.root, env), ready, build.root))
        print(f"{args.kind}, one request at a time, {args.requests} per build and round")
        rounds = uvloop.run(
            compare(
                base,
                change,
                api_key=api_key,
                kind=args.kind,
                requests=args.requests,
                rounds=args.rounds,
            )
        )
    median = statistics.median(r.difference_ms for r in rounds)
    better = sum(r.difference_ms < 0 for r in rounds)
    print(f"median of the rounds' p50 differences: {median:+.3f} ms", end="; ")
    print(f"the change was faster in {better} of {len(rounds)} rounds")


if __name__ == "__main__":
    main()
