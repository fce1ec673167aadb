"""Issue 17 measurements: the hostile-traffic repros against a real ``knnroute serve`` on 127.0.0.1.

Not a pytest suite (the defects' pass/fail tests are ``tests/test_security.py``); this script measures
the figures of the closing note and writes them as JSON:

* ``copies``: ``serve --watch 1`` while ``cp`` rewrites the router file in place N times (default 1,000),
  a client routing throughout and ``/admin/reload`` every 10 copies: server alive, requests, errors.
* ``batch``: a 1 MiB ``/route/batch`` of empty items (and a 250k-value embedding on ``/route``), with
  ``/health`` polled every 5 ms throughout: answer latency, body size, ``/health`` p50 / max (and the
  same ``/health`` figures with no attack, for reference).
* ``emoji``: 4 concurrent 200,000-emoji prompts (static embedder): latency, ``/health`` during.
* ``slowloris``: 600 connections trickling a request head: time until the server closed them all.

Usage: ``python bench/security_probe.py ROUTER_FILE [--copies N] [--out results.json]`` (the router
file should have a static embedder, e.g. ``knnroute fit --data routerbench --embedder wordllama``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

TOKEN = "probe-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(router: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _port()
    cmd = [sys.executable, "-m", "knnroute", "serve", "--router", str(router), "--port", str(port),
           "--log-level", "error", "--admin-token", TOKEN, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 120:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


class HealthPoller:
    """Poll /health every ``period`` seconds on its own connection; latencies in ms."""

    def __init__(self, url: str, period: float = 0.005) -> None:
        self.url, self.period = url, period
        self.lat: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get("/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.lat.append((time.perf_counter() - t0) * 1e3)
                self.failures += not ok
                time.sleep(self.period)

    def __enter__(self) -> HealthPoller:
        self._th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._th.join(60)

    def summary(self) -> dict[str, Any]:
        a = np.asarray(self.lat)
        return {"n": len(a), "failures": self.failures, "p50_ms": round(float(np.median(a)), 2),
                "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def _timed(f: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = f()
    return (time.perf_counter() - t0) * 1e3, r


def probe_copies(router: Path, n: int, work: Path) -> dict[str, Any]:
    target = work / "s.knnr"
    shutil.copyfile(router, target)
    with server(target, "--watch", "1", "--no-embedder") as (url, proc):
        dim = httpx.get(url + "/health", timeout=10).json()["dim"]
        stop = threading.Event()
        counts = {"requests": 0, "errors": 0}

        def client() -> None:
            q = {"embedding": np.ones(dim).tolist()}
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        ok = c.post("/route", json=q).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    counts["requests"] += 1
                    counts["errors"] += not ok

        th = threading.Thread(target=client, daemon=True)
        th.start()
        reloads = {"200": 0, "500": 0, "other": 0}
        t0 = time.perf_counter()
        for i in range(n):
            subprocess.run(["cp", str(router), str(target)], check=True)
            if proc.poll() is not None:
                n = i + 1
                break
            if i % 10 == 0:
                try:
                    code = httpx.post(url + "/admin/reload", headers=AUTH, timeout=30).status_code
                except httpx.HTTPError:
                    code = -1
                reloads[str(code) if str(code) in reloads else "other"] += 1
        seconds = time.perf_counter() - t0
        time.sleep(1.5)  # let the watcher settle on the final file
        stop.set()
        th.join(60)
        alive = proc.poll() is None
        exit_code = proc.returncode  # None while alive; -7 (SIGBUS) was the defect
        h = httpx.get(url + "/health", headers=AUTH, timeout=10).json() if alive else {}
    return {"copies": n, "seconds": round(seconds, 1), "server_alive": alive, "exit_code": exit_code,
            **counts, "admin_reloads": reloads, "generation": h.get("router_generation"),
            "last_reload_error": h.get("last_reload_error")}


def probe_batch(router: Path) -> dict[str, Any]:
    limit = 1 << 20
    n = (limit - len(b'{"items":[]}')) // 3
    body = b'{"items":[' + b",".join([b"{}"] * n) + b"]}"
    emb = b'{"embedding":[' + b",".join([b'""'] * 250_000) + b"]}"
    hdr = {"content-type": "application/json"}
    out: dict[str, Any] = {"batch_items": n, "batch_bytes": len(body)}
    with server(router, "--no-embedder") as (url, _):
        with HealthPoller(url) as idle:
            time.sleep(3)
        out["health_idle"] = idle.summary()
        lat_b, lat_e, sizes = [], [], set()
        with httpx.Client(base_url=url, timeout=60) as c, HealthPoller(url) as hp:
            for _ in range(100):
                ms, r = _timed(lambda: c.post("/route/batch", content=body, headers=hdr))
                lat_b.append(ms)
                sizes.add((r.status_code, len(r.content)))
                ms, r = _timed(lambda: c.post("/route", content=emb, headers=hdr))
                lat_e.append(ms)
                sizes.add((r.status_code, len(r.content)))
        out.update({
            "requests_each": len(lat_b),
            "batch_ms": {"p50": round(statistics.median(lat_b), 1), "max": round(max(lat_b), 1)},
            "embedding_250k_ms": {"p50": round(statistics.median(lat_e), 1), "max": round(max(lat_e), 1)},
            "responses_status_bytes": sorted(sizes), "health_during": hp.summary(),
        })
    return out


def probe_emoji(router: Path) -> dict[str, Any]:
    prompt = "\U0001f600" * 200_000
    with server(router) as (url, _):
        if not httpx.get(url + "/health", timeout=10).json().get("prompts"):
            return {"skipped": "the router has no embedder that loaded"}
        lat: list[float] = []

        def one() -> None:
            with httpx.Client(base_url=url, timeout=120) as c:
                ms, r = _timed(lambda: c.post("/route", json={"prompt": prompt}))
                lat.append(ms if r.status_code == 200 else -r.status_code)

        with HealthPoller(url) as hp:
            for _ in range(5):
                ths = [threading.Thread(target=one) for _ in range(4)]
                for t in ths:
                    t.start()
                for t in ths:
                    t.join(120)
    return {"prompt_chars": len(prompt), "prompt_bytes": len(prompt.encode()), "concurrent": 4, "rounds": 5,
            "latency_ms": {"p50": round(statistics.median(lat), 1), "max": round(max(lat), 1)},
            "health_during": hp.summary()}


def probe_slowloris(router: Path, n: int = 600) -> dict[str, Any]:
    with server(router, "--no-embedder", "--read-timeout", "2") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /route HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
            socks.append(s)
        t0 = time.monotonic()
        open_ = set(range(n))
        with HealthPoller(url) as hp:
            while open_ and time.monotonic() - t0 < 30:
                for i in list(open_):
                    try:
                        if socks[i].recv(1024) == b"":
                            open_.discard(i)
                    except BlockingIOError:
                        try:
                            socks[i].send(b"X")  # trickle
                        except OSError:
                            open_.discard(i)
                    except OSError:
                        open_.discard(i)
                time.sleep(0.1)
        closed_after = time.monotonic() - t0
        for s in socks:
            s.close()
    return {"connections": n, "read_timeout_s": 2, "still_open": len(open_),
            "all_closed_after_s": round(closed_after, 2), "health_during": hp.summary()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("router", type=Path)
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--only", nargs="*", default=["copies", "batch", "emoji", "slowloris"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import knnroute_core

    res: dict[str, Any] = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                           "isa": knnroute_core.isa(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as td:
        for name in args.only:
            t0 = time.perf_counter()
            if name == "copies":
                res[name] = probe_copies(args.router, args.copies, Path(td))
            elif name == "batch":
                res[name] = probe_batch(args.router)
            elif name == "emoji":
                res[name] = probe_emoji(args.router)
            elif name == "slowloris":
                res[name] = probe_slowloris(args.router)
            print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(res[name])}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
