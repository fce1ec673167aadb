"""Accept new connections in bursts, so that an overloaded server still answers them (503) instead of the kernel
dropping them.

uvloop's libuv (1.45+, libuv PR 3696) accepts **one** connection per event-loop iteration. When each iteration
does tens of milliseconds of work (a gateway at four times its capacity), that is 50-100 new connections a
second: the listen queue fills (2,048 waiting handshakes), the kernel drops the rest (``ListenOverflows``), and
clients wait for their SYN to be retried after 1 s and 3 s. They time out without ever reaching the process,
so no admission control can answer them, however cheap its 503 (measured: 4,096 of 4,096 backlog slots full
for the whole of a 6 s run at 6,600 req/s, 59,000 overflows, 155 ``accept4`` calls in 3 s).

:func:`run` serves a uvicorn config with :class:`BurstServer` in place of the loop's own TCP server: a reader on
the listening socket accepts up to ``burst`` connections each time it is ready (then the loop runs other work
and it is called again while connections wait), and hands each to ``loop.connect_accepted_socket`` with
uvicorn's protocol. Everything else (the protocol, limits, graceful shutdown, ``--workers`` processes sharing
the socket) is uvicorn's. Errors that mean "out of file descriptors or memory" pause accepting for a second
(the kernel queues meanwhile), as asyncio's own server does.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket
import sys
from typing import Any

import uvicorn

__all__ = ["BurstServer", "Server", "freeze_heap", "install", "run"]

log = logging.getLogger("knnroute.service")

BURST = 128  # connections accepted per wake-up: enough for thousands a second at 20 ms iterations
_RETRY_S = 1.0  # pause after EMFILE/ENFILE/ENOBUFS/ENOMEM, like asyncio's ACCEPT_RETRY_DELAY
_RESOURCE = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class BurstServer:
    """Listening sockets, each served by a reader that accepts up to ``burst`` connections per call (what
    uvicorn needs of an ``asyncio.Server``: ``sockets`` and ``close``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, factory: Any, socks: list[socket.socket],
                 burst: int = BURST) -> None:
        self.loop, self.factory, self.burst = loop, factory, int(burst)
        self.sockets = list(socks)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        for sock in self.sockets:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._ready, sock)
            log.debug("listening on %s, accepting up to %d connections per wake-up", sock.getsockname(), burst)

    def _ready(self, sock: socket.socket) -> None:
        for _ in range(self.burst):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE:
                    raise
                log.warning("accept failed (%s): not accepting for %.0f s", exc.strerror, _RETRY_S)
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(_RETRY_S, self._resume, sock)
                return
            conn.setblocking(False)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - the peer is already gone
                conn.close()
                continue
            task = self.loop.create_task(self._start(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except Exception:  # the peer left between accept and the transport: nothing to answer
            conn.close()

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self.loop.add_reader(sock.fileno(), self._ready, sock)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    def is_serving(self) -> bool:
        return not self._closed

    async def wait_closed(self) -> None:
        return None


def _listen(host: str | None, port: int | None, sock: socket.socket | None, backlog: int) -> list[socket.socket]:
    """The given socket, or one bound to each address ``host`` resolves to (as asyncio's own server does:
    ``localhost`` may be both ``::1`` and ``127.0.0.1``), listening."""
    if sock is not None:
        sock.listen(backlog)
        return [sock]
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, addr in socket.getaddrinfo(host or None, port or 0, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE):
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            s.bind(addr)
            s.listen(backlog)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop.create_server`` listen through :class:`BurstServer` (plain TCP; TLS and Unix sockets keep
    the loop's own server). For a loop that serves one uvicorn server: :class:`Server` calls it at startup;
    an app factory of ``--workers`` processes calls it (uvicorn builds its own server in each process)."""
    own: Any = loop.create_server  # (overloaded in the stubs: called with what uvicorn gave)

    async def create_server(factory: Any, host: str | None = None, port: int | None = None, *,
                            sock: socket.socket | None = None, ssl: Any = None, backlog: int = 100,
                            **kw: Any) -> Any:
        if ssl is not None or kw or not isinstance(host, (str, type(None))) or \
                (sock is not None and sock.family not in (socket.AF_INET, socket.AF_INET6)):
            return await own(factory, host, port, sock=sock, ssl=ssl, backlog=backlog, **kw)
        return BurstServer(loop, factory, _listen(host, port, sock, backlog))

    loop.create_server = create_server  # type: ignore[method-assign,assignment]


class Server(uvicorn.Server):
    """uvicorn's server, listening through :class:`BurstServer`."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        install(asyncio.get_running_loop())
        await super().startup(sockets)


def freeze_heap() -> None:
    """Move everything alive now (the router, the embedder's vocabulary, the app) out of the garbage
    collector's sight: a full collection of the gateway's startup heap took 36-41 ms, a stall of the event
    loop each time one ran under load; afterwards full collections traverse only objects made since."""
    gc.collect()
    gc.freeze()


def run(app: Any, **opts: Any) -> None:
    """``uvicorn.run(app, **opts)`` with :class:`BurstServer` listening, the startup heap frozen
    (:func:`freeze_heap`). With ``workers`` > 1 uvicorn makes the server of each process itself: ``app`` must
    then be a factory that calls :func:`install` and :func:`freeze_heap`."""
    if int(opts.get("workers") or 1) > 1:
        uvicorn.run(app, **opts)
        return
    freeze_heap()
    config = uvicorn.Config(app, **opts)
    server = Server(config=config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
