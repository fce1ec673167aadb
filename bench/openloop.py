"""Open-loop load generator: POST requests at a fixed arrival rate, whatever the server's answers do.

A closed loop (N clients, each waiting for its answer before the next request) slows down with the server
and hides queueing; here request i is sent at ``start + i / rate`` whether or not earlier ones have been
answered, on an idle keep-alive connection when there is one and a new connection otherwise (up to
``--max-connections``; past that the request counts as ``not_sent``). Connections are raw asyncio protocols
(no streams, no task or timer per request: about a fifth of the CPU of the first version), so that one core can
offer several thousand requests per second, four times a gateway's capacity included. A request not answered within
``--timeout`` seconds is abandoned: its connection is closed, as a client that gives up does. Latency is
measured from the request's scheduled time, so time spent waiting for a connection counts.

Run it as its own process (it must not share the server's interpreter). Loopback only. Prints one JSON
object: offered and achieved rates, counts by status, timeouts, transport errors, latency percentiles (ms)
of the 200s and of the other answers, by status.

    python -m bench.openloop --url http://127.0.0.1:8080/v1/chat/completions --bodies bodies.jsonl \\
        --rate 400 --seconds 10 [--header 'authorization: Bearer k']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import numpy as np

from bench.service_loadgen import LOOPBACK

__all__ = ["run"]


class _Conn(asyncio.Protocol):
    """One keep-alive connection: at most one request outstanding; answers parsed from the raw bytes."""

    def __init__(self, gen: _Gen) -> None:
        self.gen, self.buf = gen, b""
        self.transport: asyncio.Transport | None = None
        self.sent_at: float | None = None  # the outstanding request's scheduled time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            i = head.lower().find(b"content-length:")
            n = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n:
                return
            self.buf = self.buf[end + 4 + n:]
            self.gen.answered(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _Gen:
    """The generator's state: idle connections, outstanding requests, results."""

    def __init__(self, host: str, port: int, limit: int, timeout: float) -> None:
        self.host, self.port, self.limit, self.timeout = host, port, limit, timeout
        self.idle: list[_Conn] = []
        self.busy: set[_Conn] = set()
        self.opening = 0
        self.peak = 0
        self.lat: dict[int, list[float]] = {}
        self.done_at: list[float] = []
        self.counts = {"timeout": 0, "transport_error": 0, "not_sent": 0}

    def send(self, req: bytes, t_sched: float) -> None:
        if self.idle:
            self._write(self.idle.pop(), req, t_sched)
        elif len(self.busy) + self.opening >= self.limit:
            self.counts["not_sent"] += 1
        else:
            self.opening += 1
            self.peak = max(self.peak, len(self.busy) + self.opening)
            asyncio.ensure_future(self._open(req, t_sched))

    async def _open(self, req: bytes, t_sched: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.counts["transport_error"] += 1
            return
        finally:
            self.opening -= 1
        self._write(conn, req, t_sched)

    def _write(self, conn: _Conn, req: bytes, t_sched: float) -> None:
        conn.sent_at = t_sched
        self.busy.add(conn)
        assert conn.transport is not None
        conn.transport.write(req)

    def answered(self, conn: _Conn, code: int) -> None:
        if conn.sent_at is None:
            return
        now = time.perf_counter()
        self.lat.setdefault(code, []).append(now - conn.sent_at)
        self.done_at.append(now)
        conn.sent_at = None
        self.busy.discard(conn)
        self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        if conn.sent_at is not None:
            self.counts["transport_error"] += 1
            conn.sent_at = None
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, now: float) -> None:
        """Abandon requests older than the timeout: their connections are closed, as a client that gives up."""
        for conn in [c for c in self.busy if c.sent_at is not None and now - c.sent_at > self.timeout]:
            self.counts["timeout"] += 1
            conn.sent_at = None
            self.busy.discard(conn)
            if conn.transport is not None:
                conn.transport.abort()


async def run(url: str, bodies: list[bytes], rate: float, seconds: float, timeout: float = 5.0,
              max_connections: int = 4000, headers: list[str] | None = None) -> dict:
    """Send ``rate * seconds`` requests at their scheduled times (in 1 ms steps: every request due by then),
    each on an idle connection or a new one; abandon those unanswered after ``timeout``."""
    u = urlsplit(url)
    if u.hostname not in LOOPBACK:
        raise SystemExit(f"refusing to load-test a non-loopback host {u.hostname!r}")
    host, port = u.hostname, u.port or 80
    extra = "".join(f"{h.strip()}\r\n" for h in headers or [])
    head = f"POST {u.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}".encode()
    reqs = [head + b"Content-Length: " + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    gen = _Gen(host, port, max_connections, timeout)
    n = int(rate * seconds)
    t0 = time.perf_counter()
    i, last_sweep = 0, t0
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i / rate <= now:
            gen.send(reqs[i % len(reqs)], t0 + i / rate)
            i += 1
        if now - last_sweep > 0.02:
            gen.sweep(now)
            last_sweep = now
        await asyncio.sleep(0.001)
    sent_for = time.perf_counter() - t0
    while gen.busy or gen.opening:
        gen.sweep(time.perf_counter())
        await asyncio.sleep(0.01)
    for conn in gen.idle:
        if conn.transport is not None:
            conn.transport.close()
    window = max(seconds, 1e-9)
    lat = gen.lat
    ok = lat.get(200, [])
    ok_in_window = sum(1 for t in gen.done_at if t - t0 <= window) if ok else 0

    def pct(a: list[float]) -> dict[str, float]:
        x = np.asarray(a) * 1e3
        return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
                "p99": float(np.percentile(x, 99)), "max": float(x.max())} if x.size else {}

    return {
        "offered_rps": rate, "seconds": seconds, "requests": n, "sent_for_s": round(sent_for, 3),
        "ok": len(ok), "ok_rps": len(ok) / window, "answered_in_window_rps": ok_in_window / window,
        "status": {str(k): len(v) for k, v in sorted(lat.items())}, **gen.counts,
        "latency_ms": {str(k): pct(v) for k, v in sorted(lat.items())},
        "peak_connections": gen.peak,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True, help="JSON-lines file: one request body per line")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=5.0, help="a request's deadline from its scheduled time")
    p.add_argument("--max-connections", type=int, default=4000)
    p.add_argument("--header", action="append", default=[], help="extra header line, e.g. 'authorization: Bearer k'")
    a = p.parse_args(argv)
    if not a.rate > 0 or not a.seconds > 0:
        raise SystemExit("--rate and --seconds must be positive")
    with open(a.bodies, "rb") as fh:
        bodies = [line.rstrip(b"\n") for line in fh if line.strip()]
    coro = run(a.url, bodies, a.rate, a.seconds, a.timeout, a.max_connections, a.header)
    try:
        import uvloop

        out = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        out = asyncio.run(coro)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
