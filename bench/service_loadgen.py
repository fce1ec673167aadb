"""Load generator for the knnroute service (run as its own process by ``bench/bench_service.py``).

A minimal HTTP/1.1 keep-alive client on asyncio streams (no client library in the hot loop, so the
generator costs the server's cores as little as possible): ``--concurrency`` connections, each sending
its share of ``--requests`` POST requests back to back, bodies taken round-robin from a JSON-lines file.
Loopback only: the target must be 127.0.0.1 / localhost / ::1.

Prints one JSON object: requests, errors (non-200 or transport), seconds, throughput, latency
percentiles (ms, client side: write to last body byte), status counts and the first few responses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


async def _conn(host: str, port: int, path: str, bodies: list[bytes], n: int, start: int,
                lat: list[float], status: dict[int, int], samples: list[str], timeout: float) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
    try:
        for i in range(n):
            body = bodies[(start + i) % len(bodies)]
            t0 = time.perf_counter()
            try:
                writer.write(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                code, data = await asyncio.wait_for(_read_response(reader), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            lat.append(time.perf_counter() - t0)
            status[code] = status.get(code, 0) + 1
            if code != 200:
                errors += 1
            if len(samples) < 3:
                samples.append(data.decode(errors="replace")[:300])
    finally:
        writer.close()
    return errors


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    line = await reader.readline()
    if not line:
        raise asyncio.IncompleteReadError(b"", None)
    code = int(line.split(b" ", 2)[1])
    length = 0
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    return code, await reader.readexactly(length)


async def _main(url: str, bodies: list[bytes], total: int, conc: int, timeout: float) -> dict:
    u = urlsplit(url)
    if u.hostname not in LOOPBACK:
        raise SystemExit(f"refusing to load-test a non-loopback host {u.hostname!r}")
    lat: list[float] = []
    status: dict[int, int] = {}
    samples: list[str] = []
    per = [total // conc + (1 if i < total % conc else 0) for i in range(conc)]
    starts = np.cumsum([0, *per[:-1]]).tolist()
    t0 = time.perf_counter()
    errs = await asyncio.gather(*[
        _conn(u.hostname, u.port or 80, u.path or "/route", bodies, per[i], starts[i], lat, status, samples, timeout)
        for i in range(conc)
    ])
    secs = time.perf_counter() - t0
    a = np.asarray(lat) * 1e3
    return {
        "requests": total,
        "completed": int(a.size),
        "errors": int(sum(errs)),
        "concurrency": conc,
        "seconds": secs,
        "throughput_rps": a.size / secs,
        "latency_ms": {q: float(np.percentile(a, float(q[1:]))) for q in ("p50", "p90", "p99")} | {
            "mean": float(a.mean()), "max": float(a.max())},
        "status": {str(k): v for k, v in sorted(status.items())},
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/route")
    p.add_argument("--bodies", required=True, help="JSON-lines file: one request body per line")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    a = p.parse_args(argv)
    with open(a.bodies, "rb") as fh:
        bodies = [line.rstrip(b"\n") for line in fh if line.strip()]
    coro = _main(a.url, bodies, a.requests, a.concurrency, a.timeout)
    try:
        import uvloop

        out = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        out = asyncio.run(coro)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
