"""Load test of the HTTP service: a real uvicorn server process and a load generator in a second process.

    python bench/bench_service.py                       # RouterBench router, 20,000 requests, concurrency 32
    python bench/bench_service.py --requests 2000 --quick

Steps: fit and save a router (``knnroute fit`` on RouterBench when the data is present, else a labelled
synthetic router), start ``knnroute serve --no-embedder`` on a free loopback port, write request bodies
(embeddings of held-out prompts, lambdas cycling over a few values), run ``bench/service_loadgen.py`` in
a second process, then check a sample of HTTP answers against in-process routing and read the server's
own counters from ``/metrics``. The reference beside it: the same decisions in-process
(``ProductionRouter.decide``, one query at a time, one thread), so the HTTP overhead is a ratio measured
in the same run. Everything is bounded (request count, per-request and overall timeouts) and loopback
only. Results: JSON on stdout and in ``bench/results/service-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _router(tmp: Path, quick: bool):
    """(router file, held-out query embeddings, description)."""
    from knnroute.data import data_dir

    if data_dir(required=False) is not None:
        from knnroute.commands.fit import fit_router
        from knnroute.data import concat, load_dataset
        from knnroute.embed import embed_dataset

        prod, report = fit_router("routerbench", progress=False, lexical=False)  # queries are MiniLM vectors
        ds = embed_dataset(concat(load_dataset("routerbench")), progress=False)
        Q = ds.embeddings[ds.split_index("test")]
        desc = f"RouterBench subset (real): knn {report['config']}, support {prod.size}, test queries {len(Q)}"
    else:
        from knnroute.production import ProductionRouter
        from knnroute.routers.knn import KNNRouter

        rng = np.random.default_rng(0)
        X = rng.normal(size=(2000, 384)).astype(np.float32)
        S = (rng.random((2000, 11)) < 0.6).astype(float)
        C = rng.random((2000, 11)) * 1e-3
        prod = ProductionRouter(KNNRouter(k=100).fit(X, S, C))
        Q = rng.normal(size=(1000, 384)).astype(np.float32)
        desc = "SYNTHETIC router (no real data found): 2000 x 384, 11 models, k=100"
    path = prod.save(tmp / "router.knnr")
    return prod, path, Q, desc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 requests")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON result")
    p.add_argument("--max-seconds", type=float, default=600.0, help="overall bound on the load phase")
    a = p.parse_args(argv)
    n_req = 2000 if a.quick else a.requests

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        prod, path, Q, desc = _router(tmp, a.quick)
        lams = [0.0, 100.0, 1000.0, 10000.0]
        bodies = tmp / "bodies.jsonl"
        with open(bodies, "w") as fh:
            fh.writelines(
                json.dumps({"embedding": q.tolist(), "lambda": lams[i % len(lams)]}) + "\n" for i, q in enumerate(Q)
            )

        # reference: the same decisions in-process, one query at a time
        t0 = time.perf_counter()
        n_ref = min(len(Q), 2000)
        for i in range(n_ref):
            prod.decide(Q[i], lams[i % len(lams)])
        ref_rps = n_ref / (time.perf_counter() - t0)

        port = _free_port()
        log = open(tmp / "server.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "knnroute", "serve", "--router", str(path), "--host", "127.0.0.1",
             "--port", str(port), "--no-embedder", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            import httpx

            base = f"http://127.0.0.1:{port}"
            t0 = time.monotonic()
            while True:
                if server.poll() is not None:
                    raise RuntimeError((tmp / "server.log").read_text()[-2000:])
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - t0 > 120:
                    raise RuntimeError("server did not start in 120 s")
                time.sleep(0.1)
            ready = time.monotonic() - t0
            # warm-up (not measured)
            for i in range(50):
                httpx.post(base + "/route", json={"embedding": Q[i].tolist()}, timeout=10)
            gen = subprocess.run(
                [sys.executable, str(HERE / "service_loadgen.py"), "--url", base + "/route", "--bodies", str(bodies),
                 "--requests", str(n_req), "--concurrency", str(a.concurrency)],
                capture_output=True, text=True, timeout=a.max_seconds, check=True,
            )
            load = json.loads(gen.stdout)
            # correctness sample over HTTP against in-process decisions
            mism = 0
            with httpx.Client(base_url=base, timeout=10) as c:
                for i in range(0, len(Q), max(1, len(Q) // 200)):
                    lam = lams[i % len(lams)]
                    got = c.post("/route", json={"embedding": Q[i].tolist(), "lambda": lam}).json()["model"]
                    mism += got != prod.decide(Q[i], lam).model
                metrics = c.get("/metrics").text
            served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                         if line.startswith('knnroute_requests_total{endpoint="/route",method="POST",status="200"}'))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    import knnroute_core

    result = {
        "bench": "service",
        "router": desc,
        "machine": {"cpus": os.cpu_count(), "isa": knnroute_core.isa(), "python": platform.python_version()},
        "server": "uvicorn (1 process, httptools, uvloop) + FastAPI, sync endpoint in the thread pool",
        "server_ready_seconds": round(ready, 2),
        "load": load,
        "in_process_reference_rps": ref_rps,
        "http_over_in_process": ref_rps / load["throughput_rps"],
        "sample_mismatches_vs_in_process": int(mism),
        "server_counted_route_200": served,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"service-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if load["errors"] == 0 and mism == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
