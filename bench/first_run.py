"""Issue 31, "fast end to end again": every target against its reference, measured in one run.

    python -m bench.first_run [--quick] [--skip-commands] [--out bench/first_run.json]

1. First run: wall time of ``knnroute eval -q`` (the demo), ``knnroute eval --data routerbench -q`` (from the
   embedding cache) and ``knnroute fit --data routerbench``, each as a fresh process, against the issue's
   targets (10 s, 20 s, 5 s on 2 cores). In process, on the same neighbour lists: the tuner's whole grid in one
   core call (``knnroute_core.tune_grid``) against the per-configuration loop it replaces (aggregate + sweep +
   hull per configuration); the AUCs must be identical.
2. Hybrid fast path: ``route_prompts([prompt])`` p50 with the static WordLlama embedder on RouterBench ARC-C
   (support: its training prompts, k = 100, f32), the hybrid router (w = 0.5, lexical model fitted on the
   training prompts) against the dense router, against the same hybrid with the NumPy transform (the path
   before issue 31) and through the batch ``Embedder.encode`` instead of ``encode_one``, in the same run,
   target 0.2 ms; the lexical transform alone, core (``knnroute_core.LexicalIndex``) against the NumPy path;
   and the number of test prompts whose decision differs between the two transforms, and between the lean and
   the batch encode (both must be 0).
3. Transformer path (ONNX Runtime): ``bench.embed_onnx`` (all-MiniLM-L6-v2, int8 and fp32, against
   sentence-transformers on torch, each runtime in its own process, batch texts/s and single-prompt p50); left
   out with ``--quick``.
4. Core on AVX2: ``Router.route_one`` int8 at N = 10k, d = 384, k = 100, M = 11 at ``KNNROUTE_ISA=avx2``
   against NumPy (``X @ q``, ``argpartition``, mean, argmax) in the same run; target 3x. And the batch int8
   search (1,024 queries, one thread) against the SGEMM rate of ``X @ Q.T`` on one BLAS thread; target 1x.

Every figure carries the host, the core's ISA and the load average before and after its measurement: the
development host is shared, so compare ratios measured in the same run, not absolute times across runs.
Without real data (``$KNNROUTE_DATA``) or with ``--quick`` the RouterBench parts are skipped. Nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"eval_demo_s": 10.0, "eval_routerbench_cached_s": 20.0, "fit_routerbench_s": 5.0,
           "hybrid_p50_ms": 0.2, "route_one_avx2_ratio": 3.0}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def host() -> dict[str, Any]:
    import knnroute_core

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover - not Linux
        pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": knnroute_core.isa(),
            "available_isas": knnroute_core.available_isas(), "python": platform.python_version()}


# ------------------------------------------------------------------------------------------ 1. first run
def time_command(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    import resource

    before = load()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "knnroute", *args], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command and its worker processes: on a shared host the wall time waits for the CPU,
    # this does not (wall on an idle 2-core host lies between cpu_s / 2 and cpu_s)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = {"command": "knnroute " + " ".join(args), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
           "exit": proc.returncode, "load_before": before, "load_after": load()}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-400:]
    return out


def tuner_grid(quick: bool) -> dict[str, Any]:
    """The tuner's grid on one tuning problem: one core call against the per-configuration loop."""
    from knnroute.routers import curves
    from knnroute.routers import tuned as T
    from knnroute.routers.neighbours import loo_search, search

    rng = np.random.default_rng(0)
    n, nv, M, d = (400, 60, 5, 32) if quick else (1950, 280, 11, 640)  # RouterBench fit's sizes
    X = rng.normal(size=(n + nv, d)).astype(np.float32)
    S = (rng.random((n + nv, M)) < np.linspace(0.3, 0.9, M)).astype(float)
    C = np.geomspace(2e-5, 3e-3, M) * rng.uniform(0.5, 1.5, (n + nv, M))
    cfgs = T.knn_grid(n - 1)
    kmax = max(c.k for c in cfgs)
    idx, sim = search(X[:n], X[n:], kmax)
    li, ls = loo_search(X[:n], kmax)
    idx, sim = np.concatenate([idx, li]), np.concatenate([sim, ls])
    ts, tc = curves.fill_missing(np.concatenate([S[n:], S[:n]]), np.concatenate([C[n:], C[:n]]))
    c_max = curves.cost_scale(tc)
    s32, c32 = S[:n].astype(np.float32), C[:n].astype(np.float32)
    before = load()
    t0 = time.perf_counter()
    ref = [curves.curve_from_predictions(sh, ch, ts, tc, c_max).auc
           for sh, ch in T.grid_predictions(idx, sim, s32, c32, cfgs)]
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = T.grid_aucs(idx, sim, s32, [(c32, 0.0)], ts, tc, c_max, cfgs)[0]
    t_grid = time.perf_counter() - t0
    return {"configs": len(cfgs), "tuning_prompts": int(idx.shape[0]), "support": n, "models": M,
            "loop_s": round(t_loop, 4), "one_call_s": round(t_grid, 4), "speedup": round(t_loop / t_grid, 1),
            "aucs_identical": bool(np.array_equal(np.asarray(ref), got)), "load_before": before,
            "load_after": load()}


# ------------------------------------------------------------------------------------------ 2. hybrid
def p50_ms(fn: Any, items: list[str], warm: int = 20) -> float:
    for t in items[:warm]:
        fn(t)
    ts = []
    for t in items:
        t0 = time.perf_counter()
        fn(t)
        ts.append(time.perf_counter() - t0)
    return round(1e3 * float(np.median(ts)), 4)


def _numpy_path(lex: Any, fn: Any) -> Any:
    """``fn()`` with the lexical model transforming every prompt in NumPy (the hybrid path before issue 31)."""
    saved = lex._core
    lex._core = False
    try:
        return fn()
    finally:
        lex._core = saved


def hybrid_path() -> dict[str, Any]:
    from knnroute.data import load_dataset
    from knnroute.data.hygiene import PrefixStripper
    from knnroute.embed import embed_texts, get_embedder
    from knnroute.embed.lexical import FIT_MAX_FEATURES, HybridLexicalEmbedder, LexicalModel
    from knnroute.production import ProductionRouter
    from knnroute.routers.knn import KNNRouter

    ds = next(d for d in load_dataset("routerbench") if d.name.startswith("arc"))
    assert ds.prompts is not None and ds.split is not None
    texts = PrefixStripper().fit_transform(list(ds.prompts), None if ds.groups is None else list(ds.groups))
    tr = np.flatnonzero(ds.split == "train")
    te = np.flatnonzero(ds.split == "test")
    dense_emb = get_embedder("wordllama")
    X = embed_texts(texts, dense_emb, progress=False)
    lex = LexicalModel.fit([texts[i] for i in tr], seed=0, max_features=FIT_MAX_FEATURES)
    assert lex is not None
    hyb = HybridLexicalEmbedder(dense_emb, lex, 0.5)
    Xh = hyb.combine(X, texts)
    S, C, names = ds.scores[tr], ds.costs[tr], list(ds.model_names)
    dense = ProductionRouter(KNNRouter(k=100).fit(X[tr], S, C, model_names=names), embedder=dense_emb)
    hybrid = ProductionRouter(KNNRouter(k=100).fit(Xh[tr], S, C, model_names=names), embedder=hyb)
    queries = [texts[i] for i in te]
    before = load()
    out: dict[str, Any] = {
        "support": int(tr.size), "queries": len(queries), "lexical_terms": lex.n_terms, "lexical_dim": lex.dim,
        "dense_p50_ms": p50_ms(lambda t: dense.route_prompts([t]), queries),
        "hybrid_p50_ms": p50_ms(lambda t: hybrid.route_prompts([t]), queries),
        "hybrid_numpy_transform_p50_ms": _numpy_path(lex, lambda: p50_ms(lambda t: hybrid.route_prompts([t]), queries)),
        "hybrid_batch_encode_p50_ms": _batch_encode(lambda: p50_ms(lambda t: hybrid.route_prompts([t]), queries)),
        "lexical_core_p50_ms": p50_ms(lambda t: lex.transform([t]), queries),
        "lexical_numpy_p50_ms": p50_ms(lambda t: lex.transform_numpy([t]), queries),
        "load_before": before, "load_after": load(),
    }
    # the same decisions with either transform (the NumPy one is what every hybrid router used before)
    d_core = hybrid.route(hyb.combine(X[te], queries), return_names=True)
    d_numpy = hybrid.route(hyb.combine(X[te], queries, lexical_rows=lex.transform_numpy(queries)),
                           return_names=True)
    out["decisions_differing"] = int(sum(a != b for a, b in zip(d_core, d_numpy, strict=True)))
    # one prompt through Embedder.encode_one (now) against the batch encode (before): the same decisions
    lean = [hybrid.route_prompts([t])[0] for t in queries]
    batch = _batch_encode(lambda: [hybrid.route_prompts([t])[0] for t in queries])
    out["decisions_differing_lean_vs_batch_encode"] = int(sum(a != b for a, b in zip(lean, batch, strict=True)))
    return out


def _batch_encode(fn: Any) -> Any:
    """``fn()`` with one prompt embedded through ``Embedder.encode`` (the path before issue 31's lean one)."""
    from knnroute.embed.prompt import PromptEncoder

    PromptEncoder.single_fast = False
    try:
        return fn()
    finally:
        PromptEncoder.single_fast = True


# ------------------------------------------------------------------------------------------ 4. core
def route_one_avx2(quick: bool) -> dict[str, Any]:
    import knnroute_core as kc
    from bench.conftest import clustered, outcomes

    n, d, k, lam = (2000 if quick else 10000), 384, 100, 200.0
    X = clustered(n, d)
    S, C = outcomes(n)
    rng = np.random.default_rng(5)
    Q = X[rng.integers(0, n, 64)] + 0.6 * clustered(64, d, seed=99)
    Q = np.ascontiguousarray(Q / np.linalg.norm(Q, axis=1, keepdims=True), dtype=np.float32)
    out: dict[str, Any] = {"n": n, "d": d, "k": k}
    prev = kc.isa()
    try:
        if "avx2" not in kc.available_isas():
            return {**out, "skipped": "no AVX2 on this CPU"}
        kc.set_isa("avx2")
        r = kc.Router(X, S, C, k=k, precision="int8", query_threads=1)

        def numpy_route(q: np.ndarray) -> int:
            idx = np.argpartition(-(X @ q), k)[:k]
            return int(np.argmax(S[idx].mean(0) - lam * C[idx].mean(0)))

        def p50_us(fn: Any, reps: int) -> float:
            ts = []
            for i in range(reps):
                q = Q[i % len(Q)]
                t0 = time.perf_counter()
                fn(q)
                ts.append(time.perf_counter() - t0)
            return round(1e6 * float(np.median(ts)), 1)

        from threadpoolctl import threadpool_limits

        before = load()
        with threadpool_limits(1):
            p50_us(lambda q: r.route_one(q, lam), 50)
            ours = p50_us(lambda q: r.route_one(q, lam), 200 if quick else 1000)
            ref = p50_us(numpy_route, 100 if quick else 500)
            # batch int8 search against the SGEMM rate (X @ Q.T), both on one thread, GFLOP/s = 2 N d B / time:
            # alternating rounds, the median of each (the host is shared: a slow spell hits both)
            B = 256 if quick else 1024
            Qb = np.ascontiguousarray(np.resize(Q, (B, d)), dtype=np.float32)
            r.search(Qb[:64], k, n_threads=1)
            rounds = [(_timed(lambda: r.search(Qb, k, n_threads=1)), _timed(lambda: X @ Qb.T))
                      for _ in range(3 if quick else 9)]
            t_ours = float(np.median([a for a, _ in rounds]))
            t_gemm = float(np.median([b for _, b in rounds]))
        gf = 2.0 * n * d * B / 1e9
        out.update(isa=kc.isa(), ours_int8_p50_us=ours, numpy_p50_us=ref, ratio=round(ref / ours, 2),
                   batch_queries=B, batch_int8_gflops=round(gf / t_ours, 1), sgemm_gflops=round(gf / t_gemm, 1),
                   batch_vs_sgemm=round(t_gemm / t_ours, 2), load_before=before, load_after=load())
    finally:
        kc.set_isa(prev)
    return out


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, no real data, no commands")
    ap.add_argument("--skip-commands", action="store_true", help="leave out the three timed commands")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args(argv)
    from knnroute.data import data_dir

    real = not args.quick and data_dir(required=False) is not None
    res: dict[str, Any] = {"host": host(), "load_at_start": load(), "targets": TARGETS,
                           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    first: dict[str, Any] = {}
    if not (args.quick or args.skip_commands):
        first["eval_demo"] = time_command(["eval", "-q"])
        if real:
            first["eval_routerbench_cached"] = time_command(["eval", "--data", "routerbench", "-q"])
            first["fit_routerbench"] = time_command(["fit", "--data", "routerbench", "-q", "--out",
                                                     str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-rb.knnr")])
    first["tuner_grid"] = tuner_grid(args.quick)
    res["1_first_run"] = first
    res["2_hybrid"] = hybrid_path() if real else {"skipped": "needs real data (RouterBench ARC-C)"}
    if args.quick:
        res["3_transformer_onnx"] = {"skipped": "quick mode (python -m bench.embed_onnx measures it alone)"}
    else:
        from bench.embed_onnx import transformer_path

        res["3_transformer_onnx"] = transformer_path()
    res["4_core_avx2"] = route_one_avx2(args.quick)
    res["load_at_end"] = load()
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
