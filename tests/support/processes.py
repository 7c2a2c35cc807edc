"""Gateways as real `n8n-gate serve` processes, for crash, shutdown and replica tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import loopback_socket

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**values: str) -> dict[str, str]:
    """The environment without this machine's gateway settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("GATE_")}
    return {**env, **values}


def free_port() -> int:
    sock = loopback_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


class Gateway:
    def __init__(self, env: dict[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        fd, self._log_path = tempfile.mkstemp(prefix="n8n-gate-", suffix=".log")
        with os.fdopen(fd, "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "app", "serve"),
                    *("--port", str(self.port), "--workers", str(workers)),
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self._wait_ready()

    def _wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, f"gateway exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"gateway not ready:\n{self.output()}"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)

    def output(self) -> str:
        return Path(self._log_path).read_text()

    def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(within)


@contextmanager
def gateways(count: int, env: dict[str, str]) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    try:
        for _ in range(count):
            started.append(Gateway(env))
        yield started
    finally:
        for gateway in started:
            gateway.stop(signal.SIGKILL if gateway.process.poll() is None else signal.SIGTERM)
