"""Open-loop load generator: POST requests at a fixed arrival rate, whatever the server's answers do.

A closed loop (N clients, each waiting for its answer before the next request) slows down with the server
and hides queueing; here request i is sent at ``start + i / rate`` whether or not earlier ones have been
answered, on an idle keep-alive connection when there is one and a new connection otherwise (up to
``--max-connections``; past that the request counts as ``not_sent``). A request not answered within
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

from bench.service_loadgen import LOOPBACK, _read_response

__all__ = ["run"]


class _Pool:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.peak = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if self.idle:
            return self.idle.pop()
        if self.open >= self.limit:
            return None
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.open -= 1
            raise

    def put(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append(conn)

    def drop(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.open -= 1
        conn[1].close()


async def run(url: str, bodies: list[bytes], rate: float, seconds: float, timeout: float = 5.0,
              max_connections: int = 4000, headers: list[str] | None = None) -> dict:
    u = urlsplit(url)
    if u.hostname not in LOOPBACK:
        raise SystemExit(f"refusing to load-test a non-loopback host {u.hostname!r}")
    host, port = u.hostname, u.port or 80
    extra = "".join(f"{h.strip()}\r\n" for h in headers or [])
    head = f"POST {u.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}".encode()
    pool = _Pool(host, port, max_connections)
    n = int(rate * seconds)
    lat: dict[int, list[float]] = {}
    counts = {"timeout": 0, "transport_error": 0, "not_sent": 0}
    done_at: list[float] = []

    async def one(i: int, t_sched: float) -> None:
        try:
            conn = await pool.get()
        except OSError:
            counts["transport_error"] += 1
            return
        if conn is None:
            counts["not_sent"] += 1
            return
        body = bodies[i % len(bodies)]
        try:
            conn[1].write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            code, _ = await asyncio.wait_for(_read_response(conn[0]), timeout - (time.perf_counter() - t_sched))
        except (asyncio.TimeoutError, ValueError):
            counts["timeout"] += 1
            pool.drop(conn)
            return
        except (OSError, asyncio.IncompleteReadError):
            counts["transport_error"] += 1
            pool.drop(conn)
            return
        now = time.perf_counter()
        lat.setdefault(code, []).append(now - t_sched)
        done_at.append(now)
        pool.put(conn)

    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        t_sched = t0 + i / rate
        delay = t_sched - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, t_sched)))
    sent_for = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    window = max(seconds, 1e-9)
    ok = lat.get(200, [])
    ok_in_window = sum(1 for t in done_at if t - t0 <= window) if ok else 0

    def pct(a: list[float]) -> dict[str, float]:
        x = np.asarray(a) * 1e3
        return {"p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
                "p99": float(np.percentile(x, 99)), "max": float(x.max())} if x.size else {}

    return {
        "offered_rps": rate, "seconds": seconds, "requests": n, "sent_for_s": round(sent_for, 3),
        "ok": len(ok), "ok_rps": len(ok) / window, "answered_in_window_rps": ok_in_window / window,
        "status": {str(k): len(v) for k, v in sorted(lat.items())}, **counts,
        "latency_ms": {str(k): pct(v) for k, v in sorted(lat.items())},
        "peak_connections": pool.peak,
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
