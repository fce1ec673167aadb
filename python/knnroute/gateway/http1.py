"""A lean HTTP/1.1 client for the upstreams: keep-alive connection pools, httptools for the responses.

Why not aiohttp (which the gateway used before): a routed request's upstream call through aiohttp was about a
third of the gateway's CPU per request (a thread-time cProfile at 200 req/s: request and response objects,
header multidicts, timers, payload writers, tracing hooks), for a POST with a JSON body that needs none of
them. Here one request is one ``write`` of the head and body, and the answer is parsed by httptools (C, the
parser uvicorn serves with) straight into a status, a header dict and body chunks.

What it does, and nothing more:

* :class:`Pool` -- one per upstream: at most ``limit`` connections (requests beyond wait in FIFO order, a
  hanging upstream fills its own pool only), idle connections reused for ``keepalive_s``; TLS for
  ``https://`` (the system's CA store, SNI, hostname checked).
* :meth:`Pool.post` -- sends one request (``Content-Length``; ``Accept-Encoding: identity`` so that bodies
  come back as they are passed on), waits for the response head, and returns a :class:`Response`: its
  ``status``, ``headers`` (lower-case names) and the body through :meth:`Response.read` (bounded by
  ``max_body_bytes``) or :meth:`Response.iter_chunks` (streams; reading pauses while unread chunks exceed
  :data:`HIGH_WATER`). A connection the server closed while idle is detected and the request is sent again on
  a new one, once, only if not a byte of the answer had arrived.
* Timeouts are the caller's (``asyncio.wait_for`` around each wait): :class:`UpstreamTimeout`; anything that
  breaks the connection is :class:`UpstreamError`. A cancelled call closes its connection (which cancels
  the request upstream).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

__all__ = ["HIGH_WATER", "Pool", "Response", "UpstreamError", "UpstreamTimeout"]

HIGH_WATER = 1 << 20  # unread streamed bytes before reading pauses
MAX_BODY_BYTES = 256 << 20  # a non-streamed answer larger than this is refused (the upstream is broken)


class UpstreamError(Exception):
    """The connection failed or broke, or the answer was not valid HTTP; ``kind`` names it in one word."""

    def __init__(self, message: str, kind: str = "UpstreamError") -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamTimeout(UpstreamError):
    """A wait ran past its timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "timeout")


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = 0  # requests sent on this connection

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        resp.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            resp._fail(UpstreamError(f"invalid HTTP response ({e})", "InvalidResponse"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is None or resp.complete:
            return
        head = resp._head
        head_ok = head.done() and not head.cancelled() and head.exception() is None
        if exc is None and head_ok and "content-length" not in resp.headers \
                and "chunked" not in resp.headers.get("transfer-encoding", ""):
            resp.complete, resp.keep_alive = True, False  # a body delimited by the end of the connection
            resp._wake()
            return
        resp._fail(UpstreamError("connection closed by the upstream" + (f" ({exc})" if exc else ""),
                                 "ServerDisconnected"))

    # ------------------------------------------------------------------ httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.resp is not None
        self.resp._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        resp.status = self.parser.get_status_code()
        resp.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp._raw_headers}
        if not resp._head.done():
            resp._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        assert resp is not None
        resp._chunks.append(body)
        resp._size += len(body)
        if resp._size > resp.max_body_bytes and not resp.stream:
            resp._fail(UpstreamError(f"the answer is larger than {resp.max_body_bytes} bytes", "TooLarge"))
            self.close()
            return
        if resp.stream and resp._size > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            resp._paused = True
        resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        resp.complete = True
        resp.keep_alive = self.parser.should_keep_alive()
        resp._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An upstream's answer; see :mod:`knnroute.gateway.http1`."""

    def __init__(self, pool: Pool, conn: _Conn, stream: bool, max_body_bytes: int) -> None:
        self._pool, self._conn, self.stream, self.max_body_bytes = pool, conn, stream, max_body_bytes
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self._released = False

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, err: BaseException) -> None:
        if self._error is None:
            self._error = err
        if not self._head.done():
            self._head.set_exception(err)
            self._head.exception()  # retrieved: no "never retrieved" warning when nobody waits any more
        self._wake()

    async def _more(self, timeout: float | None) -> None:
        self._waiter = self._conn.loop.create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"no data within {timeout:g} s") from None
        finally:
            self._waiter = None

    async def read(self, timeout: float | None = None) -> bytes:
        """The whole body (waits at most ``timeout`` seconds in all); the connection goes back to the pool."""
        loop = self._conn.loop
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while not self.complete:
                if self._error is not None:
                    raise self._error
                await self._more(None if deadline is None else max(0.0, deadline - loop.time()))
            if self._error is not None:
                raise self._error
        except BaseException:  # failed, timed out or cancelled: the connection cannot be reused
            self.close()
            raise
        body = b"".join(self._chunks)
        self._chunks.clear()
        self.release()
        return body

    async def iter_chunks(self, timeout: float | None = None) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (at most ``timeout`` seconds between two); ends with the answer. On an
        error the connection is closed (release or close the answer when done)."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._paused and self._size <= HIGH_WATER // 2 and self._conn.transport is not None:
                    self._conn.transport.resume_reading()
                    self._paused = False
                yield chunk
            if self.complete:
                return
            try:
                if self._error is not None:
                    raise self._error
                await self._more(timeout)
            except UpstreamError:
                self.close()
                raise

    def release(self) -> None:
        """Done with it: a complete keep-alive answer's connection is reused, any other is closed."""
        if self._released:
            return
        self._released = True
        reuse = self.complete and self.keep_alive and self._error is None and not self._chunks
        self._pool._done(self._conn, reuse)

    def close(self) -> None:
        """Close the connection (an unfinished request is cancelled upstream)."""
        if not self._released:
            self._conn.close()
            self.release()


class Pool:
    """Connections to one upstream (``base_url``): at most ``limit``, idle ones kept ``keepalive_s``."""

    def __init__(self, base_url: str, limit: int = 256, keepalive_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"upstream URL {base_url!r}: expected http(s)://host[:port]/path")
        self.host, self.tls = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = self.host if ":" not in self.host else f"[{self.host}]"  # an IPv6 literal
        self.host_header = host + ("" if default else f":{self.port}")
        self.prefix = u.path.rstrip("/")
        self.limit, self.keepalive_s = int(limit), float(keepalive_s)
        self._idle: list[_Conn] = []
        self._busy = 0  # connections handed out or being opened
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        self._closed = False

    @property
    def in_use(self) -> int:
        return self._busy

    async def _acquire(self, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise UpstreamError("the pool is closed")
        while self._busy >= self.limit:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise UpstreamTimeout(f"no free connection within {timeout:g} s") from None
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self._busy += 1
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.keepalive_s:
                conn.close()
                continue
            return conn
        try:
            conn = _Conn(loop)
            await asyncio.wait_for(loop.create_connection(lambda: conn, self.host, self.port, ssl=self._ssl,
                                                          server_hostname=self.host if self.tls else None), timeout)
            return conn
        except asyncio.TimeoutError:
            self._done(None, False)
            raise UpstreamTimeout(f"connect timed out after {timeout:g} s") from None
        except (OSError, ssl.SSLError) as e:
            self._done(None, False)
            raise UpstreamError(f"connect failed ({type(e).__name__}: {e})", type(e).__name__) from None
        except BaseException:
            self._done(None, False)
            raise

    def _done(self, conn: _Conn | None, reuse: bool) -> None:
        self._busy -= 1
        if conn is not None:
            conn.resp = None
            if reuse and not conn.closed and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    async def post(self, path: str, body: bytes, headers: dict[str, str], *, stream: bool = False,
                   connect_timeout: float | None = None, head_timeout: float | None = None,
                   max_body_bytes: int = MAX_BODY_BYTES) -> Response:
        """POST ``body`` to ``prefix + path``; returns once the answer's head has arrived."""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (f"POST {self.prefix}{path} HTTP/1.1\r\nhost: {self.host_header}\r\ncontent-length: {len(body)}\r\n"
                f"accept-encoding: identity\r\n{head}\r\n").encode("latin-1") + body
        loop = asyncio.get_running_loop()
        deadline = None if head_timeout is None else loop.time() + head_timeout
        for _ in range(2):
            conn = await self._acquire(connect_timeout)
            reused = conn.used > 0
            conn.used += 1
            resp = Response(self, conn, stream, max_body_bytes)
            conn.resp = resp
            try:
                if conn.closed or conn.transport is None:
                    raise UpstreamError("connection closed by the upstream", "ServerDisconnected")
                conn.transport.write(data)
                left = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    await asyncio.wait_for(resp._head, left)
                except asyncio.TimeoutError:
                    raise UpstreamTimeout(f"no answer within {head_timeout:g} s") from None
                return resp
            except UpstreamTimeout:
                resp.close()
                raise
            except UpstreamError:
                resp.close()
                if reused and not resp.got_bytes:  # the server had closed the idle connection: once more
                    continue
                raise
            except BaseException:  # cancelled: the connection cannot be reused
                resp.close()
                raise
        raise UpstreamError("connection closed by the upstream", "ServerDisconnected")

    async def aclose(self) -> None:
        self._closed = True
        for c in self._idle:
            c.close()
        self._idle.clear()

