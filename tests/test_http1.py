"""The gateway's HTTP/1.1 client (knnroute/gateway/http1.py) against real loopback servers that answer in
every way HTTP allows: content-length, chunked, delimited by the connection's end, slow, broken, too large,
closing idle connections, and over TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("httptools")

from knnroute.gateway.http1 import HIGH_WATER, Pool, UpstreamError, UpstreamTimeout  # noqa: E402

Handler = Callable[[bytes, asyncio.StreamWriter], "asyncio.Future[None] | None"]


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode() \
        + b"\r\n" + extra + b"\r\n" + body


class Server:
    """A loopback HTTP server; ``answer(request_bytes, writer)`` writes each answer (a coroutine)."""

    def __init__(self, answer: Callable[..., object]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                             if line.lower().startswith(b"content-length")))
                req = head + await reader.readexactly(n)
                self.requests.append(req)
                await self.answer(req, writer)  # type: ignore[misc]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> str:
        self.srv = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=ssl_ctx)
        port = self.srv.sockets[0].getsockname()[1]
        return f"{'https' if ssl_ctx else 'http'}://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self.srv.close()
        for w in self.writers:
            w.close()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    async def answer(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_ok(b'{"n": %d}' % len(req)))

    async def main() -> None:
        srv = Server(answer)
        url = await srv.start()
        pool = Pool(url, limit=4)
        for i in range(5):
            r = await pool.post("/chat/completions", b'{"i": %d}' % i, {"authorization": "Bearer k"})
            assert r.status == 200 and r.headers["content-type"] == "application/json"
            assert (await r.read(5)).startswith(b'{"n": ')
        assert srv.connections == 1 and pool.in_use == 0
        head = srv.requests[0].split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"post /v1/chat/completions http/1.1")
        assert b"authorization: bearer k" in head and b"accept-encoding: identity" in head
        assert srv.requests[0].endswith(b'{"i": 0}')
        await pool.aclose()
        await srv.stop()

    run(main())


def test_chunked_and_end_delimited_bodies() -> None:
    chunks = [b'{"a":', b' 1', b"}"]

    async def chunked(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for c in chunks:
            w.write(b"%x\r\n%s\r\n" % (len(c), c))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")

    async def until_close(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await w.drain()
        w.close()

    async def main() -> None:
        for answer, want, stream in ((chunked, b'{"a": 1}', False), (chunked, b'{"a": 1}', True),
                                     (until_close, b"all of it", False)):
            srv = Server(answer)
            pool = Pool(await srv.start())
            r = await pool.post("/x", b"{}", {}, stream=stream)
            if stream:
                got = [c async for c in r.iter_chunks(5)]
                assert b"".join(got) == want and len(got) >= 2  # as they came, not all at once
                r.release()
            else:
                assert await r.read(5) == want
            assert pool.in_use == 0
            await pool.aclose()
            await srv.stop()

    run(main())


def test_timeouts_errors_and_limits() -> None:
    async def hang(req: bytes, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async def garbage(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"NOT HTTP AT ALL\r\n\r\n")

    async def huge(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_ok(b"x" * 5000))

    async def main() -> None:
        srv = Server(hang)
        pool = Pool(await srv.start(), limit=1)
        with pytest.raises(UpstreamTimeout):
            await pool.post("/x", b"{}", {}, head_timeout=0.2)
        assert pool.in_use == 0  # the timed-out connection was closed and its place freed
        first = asyncio.ensure_future(pool.post("/x", b"{}", {}))
        await asyncio.sleep(0.1)
        with pytest.raises(UpstreamTimeout, match="no free connection"):  # the one connection is busy
            await pool.post("/x", b"{}", {}, connect_timeout=0.2)
        first.cancel()  # a cancelled call closes its connection, which frees the pool
        await asyncio.gather(first, return_exceptions=True)
        assert pool.in_use == 0
        await pool.aclose()
        await srv.stop()

        for answer, kind in ((garbage, "InvalidResponse"), (huge, "TooLarge")):
            srv = Server(answer)
            pool = Pool(await srv.start())
            async def whole(pool: Pool = pool) -> bytes:
                r = await pool.post("/x", b"{}", {}, max_body_bytes=1000)
                return await r.read(5)

            with pytest.raises(UpstreamError) as e:
                await whole()
            assert e.value.kind == kind and pool.in_use == 0
            await pool.aclose()
            await srv.stop()

        pool = Pool("http://127.0.0.1:1/v1")  # nothing listens there
        with pytest.raises(UpstreamError) as e:
            await pool.post("/x", b"{}", {}, connect_timeout=5)
        assert e.value.kind == "ConnectionRefusedError" and pool.in_use == 0

    run(main())


def test_an_idle_connection_closed_by_the_server_is_replaced_once() -> None:
    async def answer_then_close(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_ok(b"{}"))  # keep-alive by default ...
        await w.drain()
        w.close()  # ... but the server drops it while idle

    async def main() -> None:
        srv = Server(answer_then_close)
        pool = Pool(await srv.start())
        for _ in range(3):
            r = await pool.post("/x", b"{}", {})
            assert await r.read(5) == b"{}"
            await asyncio.sleep(0.05)
        assert srv.connections == 3 and len(srv.requests) == 3  # each request sent once, on a new connection
        await pool.aclose()
        await srv.stop()

    run(main())


def test_a_request_lost_on_a_reused_connection_is_sent_again_on_a_new_one() -> None:
    """The server drops a kept-alive connection as the next request arrives (no byte of an answer): the
    request goes once more on a fresh connection; a drop on a fresh connection is an error."""
    seen: dict[int, int] = {}

    async def second_request_dropped(req: bytes, w: asyncio.StreamWriter) -> None:
        k = id(w)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] == 2:
            w.close()
            return
        w.write(_ok(b"{}"))

    async def always_dropped(req: bytes, w: asyncio.StreamWriter) -> None:
        w.close()

    async def main() -> None:
        srv = Server(second_request_dropped)
        pool = Pool(await srv.start())
        for _ in range(2):
            r = await pool.post("/x", b"{}", {})
            assert await r.read(5) == b"{}"
        assert srv.connections == 2 and len(srv.requests) == 3
        await pool.aclose()
        await srv.stop()
        srv = Server(always_dropped)
        pool = Pool(await srv.start())
        with pytest.raises(UpstreamError) as e:
            await pool.post("/x", b"{}", {})
        assert e.value.kind == "ServerDisconnected" and srv.connections == 1 and pool.in_use == 0
        await srv.stop()

    run(main())


def test_streaming_pauses_reading_until_the_consumer_catches_up() -> None:
    block = b"y" * 65536
    n = 4 * HIGH_WATER // len(block)

    async def big(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(n * len(block)).encode() + b"\r\n\r\n")
        for _ in range(n):
            w.write(block)
            await w.drain()

    async def main() -> None:
        srv = Server(big)
        pool = Pool(await srv.start())
        r = await pool.post("/x", b"{}", {}, stream=True)
        await asyncio.sleep(0.5)  # nobody reads: the client must not buffer the whole answer
        assert r._size <= HIGH_WATER + 2 * len(block)
        total = 0
        async for c in r.iter_chunks(5):
            total += len(c)
        assert total == n * len(block)
        r.release()
        await pool.aclose()
        await srv.stop()

    run(main())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def answer(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(_ok(b'{"tls": true}'))

    async def main() -> None:
        srv = Server(answer)
        url = await srv.start(server_ctx)
        with pytest.raises(UpstreamError):  # not trusted by the system's store
            await Pool(url).post("/x", b"{}", {}, connect_timeout=5)
        pool = Pool(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            r = await pool.post("/x", b"{}", {}, connect_timeout=5)
            assert await r.read(5) == b'{"tls": true}'
        assert srv.connections == 1  # one kept-alive TLS connection (the refused handshake never got this far)
        await pool.aclose()
        await srv.stop()

    run(main())
