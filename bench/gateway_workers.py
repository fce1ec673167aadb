"""Issue 28: the routed path's added latency and sustained rate, 1 and 2 gateway workers, beside the upstream
alone, in one run, open-loop at fixed arrival rates.

Processes (loopback): a zero-delay chat-completions upstream (``tests/fake_upstream.py`` on uvicorn, its own
process), ``knnroute gateway --workers N`` on a SQLite store with the static WordLlama embedder, and the
open-loop generator ``bench/openloop.py`` (its own process). For each rate: the upstream alone, then the
gateway's routed path (``"model": "knnroute"``). Added latency = gateway percentile - upstream percentile
at the same rate; sustained = 200s answered within the window per second; errors = non-200 + timeouts.

    python -m bench.gateway_workers --out docs/gateway-workers.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.gateway_replicas import ROOT, Replica, _cpu, env, make_router, prompts, write_config

UPSTREAM = ("import sys, uvicorn; from tests.fake_upstream import make_upstream; "
            "uvicorn.run(make_upstream(sys.argv[2])[0], host='127.0.0.1', port=int(sys.argv[1]), "
            "log_level='warning', access_log=False)")


@contextlib.contextmanager
def _upstreams(names: list[str]) -> Iterator[dict[str, str]]:
    from tests.servers import free_port

    procs, urls = [], {}
    try:
        for m in names:
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port), m], env=env(), cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[m] = f"http://127.0.0.1:{port}"
        for u in urls.values():
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(u + "/v1/models", timeout=1)
                    break
                time.sleep(0.1)
        yield urls
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _openloop(url: str, bodies: Path, rate: float, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.openloop", "--url", url, "--bodies", str(bodies), "--rate",
                          str(rate), "--seconds", str(seconds), "--timeout", "5"], capture_output=True, text=True,
                         env=env(), cwd=ROOT, check=True)
    r = dict(json.loads(out.stdout))
    ok = r["latency_ms"].get("200", {})
    errors = r["requests"] - r["ok"]
    return {"offered_per_s": rate, "sustained_per_s": round(r["answered_in_window_rps"], 1),
            "p50_ms": round(ok.get("p50", float("nan")), 3), "p99_ms": round(ok.get("p99", float("nan")), 3),
            "errors": errors, "error_rate": round(errors / max(1, r["requests"]), 4), "status": r["status"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="100,200,300,1000")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch-wait-ms", type=float, default=None,
                    help="server.embed_batch_wait_ms (default: the config's; short texts are routed inline anyway "
                         "with the static embedder)")
    args = ap.parse_args(argv)
    from tests.servers import free_port

    rates = [float(x) for x in args.rates.split(",")]
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    ps, _ = prompts()
    with tempfile.TemporaryDirectory() as tmp_, _upstreams(["small", "coder", "big"]) as ups:
        tmp = Path(tmp_)
        router = tmp / "router.knnr"
        make_router(router)
        up_bodies = tmp / "up.jsonl"
        up_bodies.write_text("".join(json.dumps({"model": "small", "messages": [{"role": "user", "content": p}]})
                                     + "\n" for p in ps))
        gw_bodies = tmp / "gw.jsonl"
        gw_bodies.write_text("".join(json.dumps({"model": "knnroute", "messages": [{"role": "user", "content": p}]})
                                     + "\n" for p in ps))
        for w in [int(x) for x in args.workers.split(",")]:
            cfg = write_config(tmp / f"gw{w}.toml", router, ups, f"sqlite:///{tmp}/feedback-{w}.db")
            if args.batch_wait_ms is not None:
                wait = f"[server]\nembed_batch_wait_ms = {args.batch_wait_ms}\n"
                cfg.write_text(cfg.read_text().replace("[server]\n", wait))
            rep = Replica(cfg, free_port(), tmp / f"gw{w}.log", workers=w)
            rep.start()
            try:
                for rate in rates:
                    up = _openloop(ups["small"] + "/v1/chat/completions", up_bodies, rate, args.seconds)
                    gw = _openloop(rep.url + "/v1/chat/completions", gw_bodies, rate, args.seconds)
                    row = {"workers": w, "offered_per_s": rate, "upstream": up, "gateway": gw,
                           "added_p50_ms": round(gw["p50_ms"] - up["p50_ms"], 3),
                           "added_p99_ms": round(gw["p99_ms"] - up["p99_ms"], 3),
                           "sustained_vs_upstream": round(gw["sustained_per_s"] / max(1e-9, up["sustained_per_s"]), 3)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                rep.stop()
    out = {"host": {"cpu": _cpu(), "cores": os.cpu_count(), "load_before": load, "load_after": os.getloadavg()},
           "seconds_per_rate": args.seconds, "embed_batch_wait_ms": args.batch_wait_ms, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
