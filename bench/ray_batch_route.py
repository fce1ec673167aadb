"""Batch routing throughput: 100,000 precomputed embeddings from Parquet, in process and on Ray Data.

Not a pytest-benchmark suite (Ray start-up and actor placement dominate a short run): a script that
fits the RouterBench router (``knnroute fit``'s tuned router on the MiniLM embeddings of the training
split), writes N query embeddings to Parquet, routes them with ``knnroute.production.batch.route_batch``
in this process and on a local Ray cluster with 1 and 2 workers, checks every Ray decision against
the in-process router (``ProductionRouter.route`` / ``predict``), and prints + writes a JSON summary.

Queries: RouterBench prompt embeddings (all splits) resampled with replacement, each perturbed with
Gaussian noise (sigma 0.02 per coordinate) and renormalised, so they are spread like real MiniLM
prompts but mostly unseen.

    python bench/ray_batch_route.py [--n 100000] [--files 8] [--out bench/results/ray_batch_route.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--lam", type=float, default=1000.0)
    ap.add_argument("--runs", default="local:1:1,local:1:0,ray:1:1,ray:1:0,ray:2:1,ray:2:0",
                    help="comma list of engine:workers:confidence (1/0)")
    ap.add_argument("--out", default="bench/results/ray_batch_route.json")
    ap.add_argument("--support", type=int, default=0,
                    help="0: the RouterBench training split; N: N support rows resampled from RouterBench "
                    "(MiniLM vectors + noise, outcomes of the source row), k=100")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from knnroute.commands.fit import fit_router
    from knnroute.data import concat, load_dataset
    from knnroute.embed import embed_dataset
    from knnroute.production.batch import read_decisions, route_batch

    tmp = Path(tempfile.mkdtemp(prefix="knnroute-raybench-"))
    try:
        t0 = time.perf_counter()
        prod, _report = fit_router("routerbench", progress=False, lexical=False)  # queries are MiniLM vectors
        if args.support:
            from knnroute.production import ProductionRouter
            from knnroute.routers.knn import KNNRouter

            src = embed_dataset(concat(load_dataset("routerbench")), progress=False)
            r0 = np.random.default_rng(1)
            pick = r0.integers(0, src.n, size=args.support)
            Xs = src.embeddings[pick] + r0.normal(scale=0.02, size=(args.support, src.embeddings.shape[1]))
            Xs = (Xs / np.linalg.norm(Xs, axis=1, keepdims=True)).astype(np.float32)
            knn = KNNRouter(k=100).fit(Xs, src.scores[pick], src.costs[pick], model_names=list(src.model_names))
            prod = ProductionRouter(knn, embedder=prod.embedder_info)
        path = prod.save(tmp / "routerbench.knnr")
        print(f"router: {prod!r}, file {path.stat().st_size / 1e6:.1f} MB, fit {time.perf_counter() - t0:.1f} s")
        ds = embed_dataset(concat(load_dataset("routerbench")), progress=False)
        rng = np.random.default_rng(0)
        base = ds.embeddings[rng.integers(0, ds.n, size=args.n)]
        Q = base + rng.normal(scale=0.02, size=base.shape).astype(np.float32)
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
        Q = Q.astype(np.float32)
        d = Q.shape[1]
        ids = np.asarray([f"q{i:06d}" for i in range(args.n)], dtype=object)
        inp = tmp / "in"
        inp.mkdir()
        for f, part in enumerate(np.array_split(np.arange(args.n), args.files)):
            tbl = pa.table({"id": pa.array(list(ids[part])),
                            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(Q[part].ravel()), d)})
            pq.write_table(tbl, inp / f"part-{f:03d}.parquet")

        # memory of one worker's router: RSS of a fresh process before and after knnroute.load
        import subprocess
        import sys

        code = ("import knnroute, knnroute.production as p\n"
                "def rss():\n"
                "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
                f"a = rss(); r = p.load({str(path)!r}); b = rss(); print(a, b)")
        before, after = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                check=True).stdout.split())
        load_rss_mb = (after - before) / 1024
        print(f"router load adds {load_rss_mb:.0f} MB RSS to a process (file {path.stat().st_size / 1e6:.0f} MB)")

        # in-process references: batch route (names) and predictions
        t0 = time.perf_counter()
        ref_model = prod.route(Q, args.lam)
        t_ref_route = time.perf_counter() - t0
        S, C = prod.predict(Q)

        results: dict[str, object] = {
            "n": args.n, "dim": d, "support": prod.size, "models": prod.n_models, "k": int(prod.core.k),
            "lambda": args.lam, "files": args.files, "cpus": os.cpu_count(), "python": platform.python_version(),
            "in_process_route_batch_seconds": t_ref_route, "runs": [],
            "router_file_mb": path.stat().st_size / 1e6, "router_load_rss_mb": load_rss_mb,
        }

        def check(out_dir: Path) -> dict[str, object]:
            df = read_decisions(out_dir)
            assert len(df) == args.n
            order = np.argsort(df["id"].to_numpy().astype(str))
            df = df.iloc[order].reset_index(drop=True)
            assert (df["id"].to_numpy() == ids).all()
            same_model = int((df["model"].to_numpy() == ref_model).sum())
            j = np.asarray([prod.model_names.index(m) for m in ref_model])
            rows = np.arange(args.n)
            same_score = int((df["predicted_score"].to_numpy() == S[rows, j].astype(np.float64)).sum())
            same_cost = int((df["predicted_cost"].to_numpy() == C[rows, j].astype(np.float64)).sum())
            return {"rows": len(df), "same_model": same_model, "same_score": same_score, "same_cost": same_cost}

        # fixed cost of one Ray job (actor start, router load, tiny read/write): 1,000 rows
        (tmp / "tiny").mkdir()
        tiny = pa.table({"id": pa.array(list(ids[:1000])),
                         "embedding": pa.FixedSizeListArray.from_arrays(pa.array(Q[:1000].ravel()), d)})
        pq.write_table(tiny, tmp / "tiny" / "tiny.parquet")
        runs = [(e, int(w), c == "1") for e, w, c in (r.split(":") for r in args.runs.split(","))]
        started_ray = False
        for engine, w, conf in runs:
            if engine == "ray" and not started_ray:
                import ray

                t0 = time.perf_counter()
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         object_store_memory=1 << 30)
                results["ray_init_seconds"] = time.perf_counter() - t0
                started_ray = True
            if engine == "ray" and conf:
                r = route_batch(path, tmp / "tiny", tmp / f"tiny-out-{w}", lam=args.lam, use_ray=True, workers=w,
                                confidence=False, progress=False)
                results[f"ray_1000_rows_seconds_{w}_workers"] = r.seconds
                shutil.rmtree(tmp / f"tiny-out-{w}")
                print(f"ray, {w} worker(s): 1,000 rows in {r.seconds:.2f} s (fixed cost per job)")
            out_dir = tmp / f"out-{engine}-{w}-{int(conf)}"
            r = route_batch(path, str(inp / "*.parquet"), out_dir, lam=args.lam, use_ray=engine == "ray",
                            workers=w, confidence=conf, progress=False)
            row = {"engine": engine, "workers": w, "confidence": conf, "seconds": r.seconds,
                   "rows_per_second": r.rows_per_second, **check(out_dir)}
            print(json.dumps(row))
            results["runs"].append(row)  # type: ignore[union-attr]
            shutil.rmtree(out_dir)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"json: {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
