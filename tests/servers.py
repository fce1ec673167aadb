"""Loopback servers for the tests: a free port, and an ASGI app on uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def thread_server(app: Any, timeout: float = 20.0, port: int | None = None, lifespan: str = "on") -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread on a loopback port; always stopped."""
    port = free_port() if port is None else port
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan=lifespan))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        t0 = time.monotonic()
        while not server.started:
            if time.monotonic() - t0 > timeout or not th.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(10)
