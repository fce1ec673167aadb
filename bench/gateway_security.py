"""Issue 27 measurements: the gateway under hostile requests, abandoned work, overload, slow clients and
SIGTERM, against real processes on loopback. The pass/fail tests are ``tests/test_gateway_security.py``;
this script measures the figures of ``docs/security.md`` and writes them as JSON.

Processes: three chat-completions upstreams (``tests/fake_upstream.py`` on uvicorn: one answers at once, one
hangs, one fails with 500), ``knnroute gateway`` (a fresh process per scenario) routing RouterBench ARC-C
test prompts with a WordLlama router of the 11 models fitted on ARC-C training rows, and the open-loop
generator ``bench/openloop.py`` in its own process.

* ``isolation``: 10 trials of 60 innocent routed requests sent at once beside one with a 401-digit
  ``lambda`` (the embedding micro-batcher groups them): innocent requests answered 200, hostile status.
* ``abandon``: one model's upstream hangs (defaults: 60 s timeout, 2 retries); 700 requests to it are
  abandoned by their clients after 1 s. A healthy model's latency (sequential pass-through requests)
  before, during and after: p50 and the ratio to the unloaded p50.
* ``overload``: open-loop at fixed rates (routed requests, the canned zero-delay upstream
  ``bench/canned_upstream.py``; the upstream alone at the same rates in the same run) to find the routed
  capacity, then 4x that rate: 200s per second against the capacity, 503s and their latency, client
  timeouts (2 s).
* ``slowloris``: 1,000 connections trickling a request head: seconds until the gateway closed them all.
* ``sigterm``: 50 requests in flight on the hanging upstream, SIGTERM: seconds to exit (``shutdown_timeout_s``
  10 s).

    HF_HUB_OFFLINE=1 python -m bench.gateway_security --out docs/gateway-security.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ("import sys, uvicorn; from tests.fake_upstream import make_upstream; app, sc = make_upstream('m'); "
            "sc.delay = float(sys.argv[2]); sc.fail = int(sys.argv[3]); "
            "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')")
HOSTILE_LAMBDA = "1" + "0" * 400


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                         os.environ.get("PYTHONPATH", "")]), "TQDM_DISABLE": "1"}
    for k in ("KNNROUTE_API_KEYS", "KNNROUTE_ADMIN_KEY"):
        env.pop(k, None)
    return env


PIN: dict[str, set[int]] = {}  # role -> CPUs (--pin): the gateway on one core, upstreams and load on the other


def _affinity(role: str) -> Any:
    cpus = PIN.get(role)
    return None if not cpus else (lambda: os.sched_setaffinity(0, cpus))


@contextlib.contextmanager
def _process(cmd: list[str], health: str, log: Path, role: str = "load") -> Iterator[subprocess.Popen[bytes]]:
    import httpx

    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
                                preexec_fn=_affinity(role))  # noqa: PLW1509 - only sets the CPU affinity
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited: {log.read_text()[-1500:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(health, timeout=1).status_code in (200, 404, 405):
                    break
            if time.monotonic() - t0 > 180:
                raise RuntimeError("did not start")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _canned(tmp: Path) -> Any:
    """The canned upstream (bench/canned_upstream.py): cheap enough not to be what a load test measures."""
    port = _port()
    return _process([sys.executable, "-m", "bench.canned_upstream", str(port)], f"http://127.0.0.1:{port}/health",
                    tmp / f"canned-{port}.log"), f"http://127.0.0.1:{port}"


def _upstream(tmp: Path, delay: float = 0.0, fail: int = 0) -> Any:
    port = _port()
    return _process([sys.executable, "-c", UPSTREAM, str(port), str(delay), str(fail)],
                    f"http://127.0.0.1:{port}/health", tmp / f"upstream-{port}.log"), f"http://127.0.0.1:{port}"


def _gateway(tmp: Path, router: Path, urls: dict[str, str], server: str = "", name: str = "gw") -> Any:
    ups = "\n".join(f'[upstreams."{m}"]\nbase_url = "{u}/v1"\n' for m, u in urls.items())
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'[router]\nfile = "{router}"\nlambda = 0.0\n[server]\n{server}\n'
                   f'[feedback]\nsave_interval_s = 3600\n{ups}')
    port = _port()
    return _process([sys.executable, "-m", "knnroute", "gateway", "--config", str(cfg), "--port", str(port),
                     "--log-level", "warning"], f"http://127.0.0.1:{port}/health", tmp / f"{name}.log", "gateway"), \
        f"http://127.0.0.1:{port}"


def _router(tmp: Path) -> tuple[Path, list[str], list[str]]:
    from knnroute.data import load_dataset
    from knnroute.embed import get_embedder
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    ds = next(d for d in load_dataset("routerbench") if d.name == "arc_challenge")
    prompts = list(ds.prompts)
    X = get_embedder("wordllama").encode(prompts[:1200])
    p = ProductionRouter(KNNRouter(k=20).fit(X, ds.scores[:1200], ds.costs[:1200], model_names=ds.model_names),
                         embedder="wordllama")
    path = tmp / "rb.knnr"
    p.save(path)
    return path, list(ds.model_names), prompts[1200:]


def _body(text: str, model: str = "knnroute", extra: str = "") -> bytes:
    return (json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})[:-1] + extra
            + "}").encode()


def _pct(a: list[float]) -> dict[str, float]:
    x = np.asarray(a) * 1e3
    return {"p50": round(float(np.percentile(x, 50)), 3), "p99": round(float(np.percentile(x, 99)), 3),
            "n": int(x.size)}


def isolation(tmp: Path, router: Path, names: list[str], prompts: list[str], ok_url: str) -> dict[str, Any]:
    import httpx

    (gw, url) = _gateway(tmp, router, dict.fromkeys(names, ok_url), "embed_batch_wait_ms = 5", "iso")
    with gw:
        async def trial() -> tuple[int, int]:
            bodies = [_body(prompts[i]) for i in range(60)]
            bodies.insert(30, _body(prompts[0], extra=f', "lambda": {HOSTILE_LAMBDA}'))
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as c:
                out = await asyncio.gather(*[c.post(url + "/v1/chat/completions", content=b) for b in bodies])
            hostile = out.pop(30)
            return sum(r.status_code == 200 for r in out), hostile.status_code

        trials = [asyncio.run(trial()) for _ in range(10)]
    return {"trials": len(trials), "innocent": 60, "innocent_ok": [t[0] for t in trials],
            "hostile_status": sorted({t[1] for t in trials})}


def abandon(tmp: Path, router: Path, names: list[str], ok_url: str, hang_url: str) -> dict[str, Any]:
    import httpx

    hang_model, healthy = names[0], names[1]
    (gw, url) = _gateway(tmp, router, {**dict.fromkeys(names, ok_url), hang_model: hang_url}, name="abandon")
    with gw, httpx.Client(base_url=url, timeout=120) as c:
        def healthy_latencies(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.post("/v1/chat/completions", content=_body("hello", healthy))
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            return out

        healthy_latencies(20)
        before = healthy_latencies(200)

        async def flood() -> int:
            # paced over 1.75 s (700 at once: admission refuses what queues behind a busy loop)
            async with httpx.AsyncClient(timeout=1.0, limits=httpx.Limits(max_connections=800)) as ac:
                async def one(i: int) -> int:
                    await asyncio.sleep(i * 0.0025)
                    try:
                        await ac.post(url + "/v1/chat/completions", content=_body("x", hang_model))
                    except httpx.TimeoutException:
                        return 1
                    return 0
                return sum(await asyncio.gather(*[one(i) for i in range(700)]))

        import threading

        during: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=120) as c2:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    c2.post("/v1/chat/completions", content=_body("hello", healthy))
                    during.append(time.perf_counter() - t0)

        th = threading.Thread(target=probe)
        th.start()
        abandoned = asyncio.run(flood())
        time.sleep(1.0)
        stop.set()
        th.join()
        after = healthy_latencies(200)
    b, a = np.median(before), np.median(after)
    return {"abandoned": abandoned, "healthy_before_ms": _pct(before), "healthy_during_ms": _pct(during),
            "healthy_after_ms": _pct(after), "after_over_before_p50": round(float(a / b), 3),
            "during_over_before_p50": round(float(np.median(during) / b), 3)}


def _openloop(url: str, bodies: Path, rate: float, seconds: float, timeout: float = 2.0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.openloop", "--url", url, "--bodies", str(bodies),
                          "--rate", str(rate), "--seconds", str(seconds), "--timeout", str(timeout)],
                         capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600, check=True,
                         preexec_fn=_affinity("load"))  # noqa: PLW1509 - only sets the CPU affinity
    return dict(json.loads(out.stdout))


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far (Linux; 0 elsewhere)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _listen_overflows() -> int | None:
    """The kernel's ListenOverflows counter (Linux), or None."""
    try:
        head, vals = Path("/proc/net/netstat").read_text().splitlines()[:2]
        return int(dict(zip(head.split(), vals.split(), strict=True))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        return None


def overload(tmp: Path, router: Path, names: list[str], prompts: list[str], ok_url: str,
             rates: list[float], seconds: float, server: str = "") -> dict[str, Any]:
    routed = tmp / "routed.jsonl"
    routed.write_bytes(b"".join(_body(p) + b"\n" for p in prompts))
    direct = tmp / "direct.jsonl"
    direct.write_bytes(b"".join(_body(p, "m") + b"\n" for p in prompts))
    (gw, url) = _gateway(tmp, router, dict.fromkeys(names, ok_url), server, name="overload")
    sweep = []
    with gw as proc:
        _openloop(url + "/v1/chat/completions", routed, 50, 2)  # warm-up
        for r in rates:
            up = _openloop(ok_url + "/v1/chat/completions", direct, r, seconds)
            c0 = _cpu_s(proc.pid)
            gwr = _openloop(url + "/v1/chat/completions", routed, r, seconds)
            gwr["gateway_cpu_s"] = round(_cpu_s(proc.pid) - c0, 2)  # the generator's start-up (idle) included
            sweep.append({"rate": r, "upstream_ok_rps": round(up["ok_rps"], 1), "gateway": gwr})
        capacity = max(s["gateway"]["ok_rps"] for s in sweep)
        drops = _listen_overflows()
        c0 = _cpu_s(proc.pid)
        over = _openloop(url + "/v1/chat/completions", routed, 4 * capacity, 2 * seconds)
        over["gateway_cpu_s"] = round(_cpu_s(proc.pid) - c0, 2)
        if drops is not None:  # handshakes the kernel dropped because a listen queue was full (any on the host)
            over["listen_overflows"] = (_listen_overflows() or 0) - drops
    return {"sweep": sweep, "capacity_rps": round(capacity, 1), "offered_4x": over,
            "served_share_of_capacity": round(over["ok_rps"] / capacity, 3)}


def slowloris(tmp: Path, router: Path, names: list[str], ok_url: str, n: int = 1000) -> dict[str, Any]:
    (gw, url) = _gateway(tmp, router, dict.fromkeys(names, ok_url), name="slowloris")
    port = int(url.rsplit(":", 1)[1])
    with gw as proc:
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            s.setblocking(False)
            socks.append(s)
        fds_open = len(os.listdir(f"/proc/{proc.pid}/fd"))
        t0 = time.monotonic()
        alive = list(socks)
        while alive and time.monotonic() - t0 < 60:
            for s in list(alive):
                try:
                    s.send(b"X-a: b\r\n")
                    if s.recv(1) == b"":
                        alive.remove(s)
                except BlockingIOError:
                    pass
                except OSError:
                    alive.remove(s)
            time.sleep(0.5)
        took = time.monotonic() - t0
        fds_after = len(os.listdir(f"/proc/{proc.pid}/fd"))
        for s in socks:
            s.close()
    return {"connections": n, "closed_all_within_s": round(took, 2), "still_open": len(alive),
            "gateway_fds_during": fds_open, "gateway_fds_after": fds_after, "read_timeout_s": 10}


def sigterm(tmp: Path, router: Path, names: list[str], ok_url: str, hang_url: str) -> dict[str, Any]:
    import threading

    import httpx

    (gw, url) = _gateway(tmp, router, {**dict.fromkeys(names, ok_url), names[0]: hang_url}, name="sigterm")
    with gw as proc:
        def hold() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url + "/v1/chat/completions", content=_body("x", names[0]), timeout=300)

        ths = [threading.Thread(target=hold, daemon=True) for _ in range(50)]
        for th in ths:
            th.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
        took = time.monotonic() - t0
    return {"in_flight": 50, "exit_after_s": round(took, 2), "shutdown_timeout_s": 10.0,
            "returncode": proc.returncode}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--rates", type=float, nargs="*", default=[400, 800, 1200, 1600, 2000])
    p.add_argument("--seconds", type=float, default=5.0, help="per open-loop rate")
    p.add_argument("--only", nargs="*", default=None, help="scenarios (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="overload scenario: this many times (fresh processes)")
    p.add_argument("--server", action="append", default=[], help="extra [server] line for the overload gateway")
    p.add_argument("--no-pin", action="store_true", help="do not pin the gateway to CPU 0 and the upstreams and "
                   "load generator to CPU 1 (pinning keeps the generator's work at 4x load off the gateway's core)")
    a = p.parse_args(argv)
    if not a.no_pin and len(os.sched_getaffinity(0)) >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        PIN.update(gateway={cpus[0]}, load={cpus[1]})
    import knnroute_core

    results: dict[str, Any] = {"host": {"cpu": _cpu_model(), "cpus": os.cpu_count(), "isa": knnroute_core.isa(),
                                        "pinned": {k: sorted(v) for k, v in PIN.items()},
                                        "loadavg_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as es:
        tmp = Path(d)
        router, names, prompts = _router(tmp)
        ok_ctx, ok_url = _upstream(tmp)
        hang_ctx, hang_url = _upstream(tmp, delay=3600)
        es.enter_context(ok_ctx)
        es.enter_context(hang_ctx)
        only = set(a.only or ["isolation", "abandon", "overload", "slowloris", "sigterm"])
        if "isolation" in only:
            results["isolation"] = isolation(tmp, router, names, prompts, ok_url)
            print("isolation", results["isolation"], flush=True)
        if "abandon" in only:
            results["abandon"] = abandon(tmp, router, names, ok_url, hang_url)
            print("abandon", results["abandon"], flush=True)
        if "overload" in only:
            rounds = []
            for _ in range(a.rounds):  # a fresh upstream and gateway each round: the run-to-run spread
                canned_ctx, canned_url = _canned(tmp)
                with canned_ctx:
                    rounds.append(overload(tmp, router, names, prompts, canned_url, a.rates, a.seconds,
                                           "\n".join(a.server)))
                print("overload", {k: v for k, v in rounds[-1].items() if k != "sweep"}, flush=True)
            results["overload"] = rounds[0]
            if a.rounds > 1:
                shares = [r["served_share_of_capacity"] for r in rounds]
                results["overload_rounds"] = {"rounds": rounds[1:], "served_share_of_capacity": shares,
                                              "mean_share": round(float(np.mean(shares)), 3),
                                              "pooled_share": round(sum(r["offered_4x"]["ok_rps"] for r in rounds)
                                                                    / sum(r["capacity_rps"] for r in rounds), 3)}
                print("overload rounds", {k: v for k, v in results["overload_rounds"].items() if k != "rounds"},
                      flush=True)
        if "slowloris" in only:
            results["slowloris"] = slowloris(tmp, router, names, ok_url)
            print("slowloris", results["slowloris"], flush=True)
        if "sigterm" in only:
            results["sigterm"] = sigterm(tmp, router, names, ok_url, hang_url)
            print("sigterm", results["sigterm"], flush=True)
    results["host"]["loadavg_end"] = os.getloadavg()
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
