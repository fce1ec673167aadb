"""Accepting new connections while the event loop is busy (knnroute.service.accept).

uvloop's libuv accepts one connection per loop iteration; with iterations of tens of milliseconds (an
overloaded gateway), new connections wait in the kernel's listen queue, then overflow it, and never get the
gateway's fast 503. :class:`~knnroute.service.accept.Server` accepts them in bursts. Real servers on loopback,
real sockets; the loop is kept busy by requests whose handler blocks it for 50 ms."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn")
import uvicorn  # noqa: E402

from knnroute.service import accept  # noqa: E402
from tests.servers import free_port  # noqa: E402

BLOCK_S = 0.05


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/busy":
        time.sleep(BLOCK_S)  # holds the loop, as a long iteration of a loaded gateway does
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def serving(server_class: type) -> Iterator[int]:
    port = free_port()
    server = server_class(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not server.started:
        assert th.is_alive() and time.monotonic() - t0 < 20, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        th.join(10)


def _busy_clients(port: int, stop: threading.Event, n: int = 4) -> list[threading.Thread]:
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            while not stop.is_set():
                s.sendall(b"GET /busy HTTP/1.1\r\nhost: x\r\n\r\n")
                data = b""
                while not data.endswith(b"ok"):
                    chunk = s.recv(4096)
                    if not chunk:
                        return
                    data += chunk

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def answered_while_busy(port: int, n: int = 300, window: float = 4.0) -> int:
    """Open ``n`` new connections while the loop is busy; how many get their answer within ``window`` s."""
    stop = threading.Event()
    busy = _busy_clients(port, stop)
    time.sleep(0.3)  # the loop is now running 50 ms iterations back to back
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)  # the kernel completes the handshake
            s.sendall(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
            socks.append(s)
        ok = 0
        deadline = time.monotonic() + window
        while ok < n and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
                key.data.extend(chunk)
                if key.data.endswith(b"ok") or not chunk:
                    ok += key.data.startswith(b"HTTP/1.1 200")
                    sel.unregister(key.fileobj)
        return ok
    finally:
        stop.set()
        for s in socks:
            s.close()
        for t in busy:
            t.join(10)


def test_new_connections_are_accepted_while_the_loop_is_busy() -> None:
    """300 new connections during back-to-back 50 ms loop iterations: uvicorn's own server accepts one per
    iteration (at most 80 in the 4 s window); the burst server accepts them all within a few iterations."""
    with serving(accept.Server) as port:
        ours = answered_while_busy(port)
    with serving(uvicorn.Server) as port:
        stock = answered_while_busy(port)
    assert ours >= 295, f"burst server answered {ours} of 300 new connections"
    assert stock < ours, (stock, ours)


def test_burst_server_pauses_on_resource_errors_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE pauses accepting for _RETRY_S (the connection waits in the kernel) instead of spinning on a ready
    socket; accepting resumes after it; close() stops accepting and closes the listening socket."""
    import asyncio
    import errno

    monkeypatch.setattr(accept, "_RETRY_S", 0.3)
    calls = []

    class Failing(socket.socket):
        def accept(self) -> Any:
            calls.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")

    async def main() -> tuple[int, int, bool]:
        loop = asyncio.get_running_loop()
        (sock,) = accept._listen("127.0.0.1", 0, None, 16)
        failing = Failing(fileno=sock.detach())
        srv = accept.BurstServer(loop, asyncio.Protocol, [failing])
        c = socket.create_connection(failing.getsockname(), timeout=5)  # stays ready: accept keeps failing
        await asyncio.sleep(0.2)
        during_pause = len(calls)
        await asyncio.sleep(0.3)
        after = len(calls)
        srv.close()
        c.close()
        return during_pause, after, failing.fileno() == -1 and not srv.is_serving()

    during_pause, after, closed = asyncio.run(main())
    assert during_pause == 1  # one failed accept, then no spinning
    assert after == 2  # retried once after the pause
    assert closed


def test_listens_on_every_address_of_the_host() -> None:
    """``localhost`` may resolve to both ::1 and 127.0.0.1: a socket for each, as asyncio's own server makes."""
    import asyncio

    want = {a[4][:2] for a in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)}
    socks = accept._listen("localhost", 0, None, 16)
    try:
        assert len(socks) == len({fam for fam, *_ in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)})
        assert {s.getsockname()[0] for s in socks} == {host for host, _ in want}
    finally:
        for s in socks:
            s.close()

    async def main() -> bytes:  # a connection to 127.0.0.1 is served
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                got.set_result(data)
                self.transport.close()

        srv = accept.BurstServer(loop, Echo, accept._listen("127.0.0.1", 0, None, 16))
        _, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
        w.write(b"hi")
        data = await asyncio.wait_for(got, 5)
        w.close()
        await w.wait_closed()
        srv.close()
        return data

    assert asyncio.run(main()) == b"hi"
