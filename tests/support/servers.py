"""Real servers for tests: uvicorn in a thread on a loopback socket, and free ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import uvicorn


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port that is bound but never listens: connecting to it is refused at once."""
    with bound_socket() as sock:
        yield sock.getsockname()[1]


@contextmanager
def bound_socket() -> Iterator[socket.socket]:
    """A loopback socket, bound, not listening (refusing) until a server is started on it."""
    sock = loopback_socket()
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def serve_in_thread(
    app: Any, *, timeout: float = 10.0, sock: socket.socket | None = None
) -> Iterator[str]:
    """Run an ASGI app in a real uvicorn on loopback (on `sock` if given); yields its URL."""
    sock = sock or loopback_socket()
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextmanager
def blackhole_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting to it hangs until the client gives up."""
    server = loopback_socket()
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        with suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        queued.append(client)
    try:
        yield port
    finally:
        for client in queued:
            client.close()
        server.close()
