"""Gateway overhead (issue 18, part 7): the time ``knnroute gateway`` adds beyond its upstream's own latency,
and its throughput at concurrency 64, with the static WordLlama embedder and with MiniLM.

Processes (all on loopback): a zero-delay chat-completions upstream (``tests/fake_upstream.py`` on uvicorn),
the gateway (``python -m knnroute gateway``) routing RouterBench ARC-C test prompts with a router fitted on the
ARC-C training rows, and the load generator ``bench/service_loadgen.py``. Sequential latency: the same
prompts sent straight to the upstream and through the gateway (``"model": "knnroute"``), one keep-alive
connection each; overhead = gateway percentile - upstream percentile. Throughput: ``--requests`` at
concurrency 64 through the gateway and straight to the upstream, errors counted. MiniLM's offline batch
throughput on the same prompts (the router's PromptEncoder, batches of 64, no cache) is measured in the same
run.

    KNNROUTE_CACHE=/tmp/eqcache HF_HUB_OFFLINE=1 python -m bench.gateway_overhead --out docs/gateway-overhead.json
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ("import sys, uvicorn; from tests.fake_upstream import make_upstream; "
            "uvicorn.run(make_upstream('m')[0], host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _process(cmd: list[str], health: str, log: Path) -> Iterator[None]:
    import httpx

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                         os.environ.get("PYTHONPATH", "")])}
    for k in ("KNNROUTE_API_KEYS", "KNNROUTE_ADMIN_KEY"):
        env.pop(k, None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
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
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def _sequential(url: str, bodies: list[dict[str, Any]], n: int) -> np.ndarray:
    import httpx

    lat = []
    with httpx.Client(timeout=30) as c:
        for i in range(n + 20):
            t0 = time.perf_counter()
            r = c.post(url, json=bodies[i % len(bodies)])
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
            if i >= 20:  # warm-up
                lat.append(dt)
    return np.asarray(lat) * 1e3


def _load(url: str, bodies: list[dict[str, Any]], requests: int, conc: int, tmp: Path) -> dict[str, Any]:
    f = tmp / "bodies.jsonl"
    f.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "service_loadgen.py"), "--url", url,
                          "--bodies", str(f), "--requests", str(requests), "--concurrency", str(conc)],
                         capture_output=True, text=True, timeout=1800, check=True)
    res = json.loads(out.stdout)
    res.pop("samples", None)
    return dict(res)


def _pct(a: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.environ.get("KNNROUTE_DATA", "/work/shared/data"),
                                                   "routerbench-0shot-subset"))
    p.add_argument("--embedders", nargs="*", default=["wordllama", "minilm"])
    p.add_argument("--sequential", type=int, default=300)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch-wait-ms", type=float, nargs="*", default=[0.0, 2.0],
                   help="gateway micro-batching waits to compare (0 = no batching)")
    p.add_argument("--out", default="docs/gateway-overhead.json")
    args = p.parse_args(argv)
    import knnroute_core
    from knnroute.data import load_dataset
    from knnroute.embed import embed_dataset
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    ds0 = next(d for d in load_dataset(args.data) if d.name == "arc_challenge")
    split = np.asarray(ds0.split)
    results: dict[str, Any] = {"meta": {"isa": knnroute_core.isa(), "cpus": os.cpu_count(),
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                        "concurrency": args.concurrency, "requests": args.requests,
                                        "sequential": args.sequential}, "embedders": {}}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        up_port = _free_port()
        up = f"http://127.0.0.1:{up_port}"
        with _process([sys.executable, "-c", UPSTREAM, str(up_port)], up + "/v1/models", tmp / "up.log"):
            for spec in args.embedders:
                ds = embed_dataset(ds0, spec, progress=False)
                tr, te = split != "test", split == "test"
                knn = KNNRouter(k=20).fit(ds.embeddings[tr], ds.scores[tr], ds.costs[tr],
                                          model_names=ds.model_names)
                router_file = tmp / f"{spec}.knnr"
                ProductionRouter(knn, embedder=spec, prefix_stripper=ds.meta.get("prefix_stripper")).save(
                    router_file)
                prompts = [str(t) for t in np.asarray(ds.prompts, dtype=object)[te]]
                ups = "".join(f'[upstreams."{m}"]\nbase_url = "{up}/v1"\nmodel = "m"\n' for m in ds.model_names)
                routed = [{"model": "knnroute", "messages": [{"role": "user", "content": q}]} for q in prompts]
                direct = [{"model": "m", "messages": [{"role": "user", "content": q}]} for q in prompts]
                per_wait: dict[str, Any] = {}
                for wait in args.batch_wait_ms:
                    cfg = tmp / f"{spec}.toml"
                    cfg.write_text(f'[router]\nfile = "{router_file}"\nlambda = 0.0\n'
                                   f"[server]\nembed_batch_wait_ms = {wait}\n{ups}")
                    gw_port = _free_port()
                    gw = f"http://127.0.0.1:{gw_port}"
                    with _process([sys.executable, "-m", "knnroute", "gateway", "--config", str(cfg), "--port",
                                   str(gw_port), "--log-level", "warning"], gw + "/health", tmp / "gw.log"):
                        d_lat = _sequential(up + "/v1/chat/completions", direct, args.sequential)
                        g_lat = _sequential(gw + "/v1/chat/completions", routed, args.sequential)
                        load_gw = _load(gw + "/v1/chat/completions", routed, args.requests, args.concurrency, tmp)
                        load_up = _load(up + "/v1/chat/completions", direct, args.requests, args.concurrency, tmp)
                    d, g = _pct(d_lat), _pct(g_lat)
                    per_wait[f"batch_wait_ms={wait:g}"] = {
                        "upstream_ms": d, "gateway_ms": g,
                        "overhead_ms": {k: round(g[k] - d[k], 3) for k in ("p50", "p99", "mean")},
                        "gateway_load": load_gw, "upstream_load": load_up,
                    }
                    print(spec, wait, json.dumps(per_wait[f"batch_wait_ms={wait:g}"]), flush=True)
                res: dict[str, Any] = {"runs": per_wait}
                # the reference: the same prompts through the same PromptEncoder (prefix stripping), in batches
                enc = ProductionRouter(knn, embedder=spec, prefix_stripper=ds.meta.get("prefix_stripper"))
                texts = prompts * max(1, 500 // len(prompts))
                enc.embed(texts[:64])
                t0 = time.perf_counter()
                for i in range(0, len(texts), 64):
                    enc.embed(texts[i:i + 64])
                offline = len(texts) / (time.perf_counter() - t0)
                res["embedder_offline_batch_per_s"] = round(offline, 1)
                for r in per_wait.values():
                    r["gateway_rps_over_offline_embedding"] = round(r["gateway_load"]["throughput_rps"] / offline, 3)
                results["embedders"][spec] = res
                print(spec, "offline embedding per s", round(offline, 1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
