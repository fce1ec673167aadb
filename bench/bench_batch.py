"""Batch routing throughput: 1,024 queries routed at one lambda, ours against NumPy, faiss, hnswlib, sklearn.

Ours: ``Router.route(Q, lam, n_threads)`` (search with the register-blocked batch kernel, aggregation,
argmax). References: their batch top-k, then NumPy aggregation (mean over neighbours) and argmax.
GFLOP/s counts 2 N d flops per query (the similarity GEMM); the bound is the SGEMM rate measured in
this run with the same thread count. ``ours-int8`` is the same router with int8 storage: its batch search
runs one-digit int8 queries on VNNI over shared row blocks, then re-ranks the candidates in float32, so it
routes exactly as ``ours`` (checked here); its GFLOP/s are the float32-equivalent work (2 N d per query).
"""

from __future__ import annotations

import numpy as np
import pytest

import knnroute_core as kc
from bench.conftest import QUICK, D, clustered, outcomes, record, run_bench

LAM = 200.0
B = 1024 if not QUICK else 128
K = 100
NS = [10000, 100000] if not QUICK else [5000]
CASES = [(n, t) for n in NS for t in (1, 2)]
IMPLS = ["ours", "ours-int8", "numpy", "faiss", "hnswlib-bf", "sklearn"]
_cache: dict = {}


def problem(n):
    if n not in _cache:
        _cache.clear()
        X = clustered(n)
        S, C = outcomes(n)
        rng = np.random.default_rng(7)
        Q = X[rng.integers(0, n, B)] + 0.6 * clustered(B, seed=98)
        Q = np.ascontiguousarray(Q / np.linalg.norm(Q, axis=1, keepdims=True), dtype=np.float32)
        _cache[n] = (X, S, C, Q)
    return _cache[n]


def make(impl, X, S, C, t):
    def agg(idx):  # idx (B, k)
        return np.argmax(S[idx].mean(1) - LAM * C[idx].mean(1), axis=1)

    if impl in ("ours", "ours-int8"):
        r = kc.Router(X, S, C, k=K, precision="int8" if impl == "ours-int8" else "f32")
        return lambda Q: r.route(Q, np.array([LAM]), t)[:, 0]
    if impl == "numpy":
        def f(Q):
            sims = Q @ X.T
            return agg(np.argpartition(-sims, K, axis=1)[:, :K])
        return f
    if impl == "faiss":
        import faiss

        faiss.omp_set_num_threads(t)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X)
        return lambda Q: agg(index.search(Q, K)[1])
    if impl == "hnswlib-bf":
        import hnswlib

        bf = hnswlib.BFIndex(space="ip", dim=X.shape[1])
        bf.init_index(max_elements=len(X))
        bf.add_items(X, np.arange(len(X)))
        return lambda Q: agg(bf.knn_query(Q, k=K, num_threads=t)[0].astype(np.int64))
    if impl == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=K, algorithm="brute", metric="cosine", n_jobs=t).fit(X)
        return lambda Q: agg(nn.kneighbors(Q, return_distance=False))
    raise ValueError(impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("n", "threads"), CASES, ids=[f"N{n}-t{t}" for n, t in CASES])
def test_batch_route(benchmark, bounds, impl, n, threads):
    from threadpoolctl import threadpool_limits

    X, S, C, Q = problem(n)
    with threadpool_limits(limits=threads):
        f = make(impl, X, S, C, threads)
        routed = f(Q)
        if impl == "ours-int8":
            ref = kc.Router(X, S, C, k=K).route(Q, np.array([LAM]), threads)[:, 0]
            assert np.array_equal(routed, ref), "int8 batch routing differs from f32"
        rounds = 5 if n >= 100000 else 9
        if QUICK:
            rounds = 2
        times = run_bench(benchmark, lambda: f(Q), rounds=rounds, warmup=1)
    e = record(f"batch/N={n}/B={B}/t={threads}", impl, times, N=n, B=B, threads=threads)
    e["qps"] = B / (e["p50_ms"] / 1e3)
    e["gflops"] = 2.0 * n * D * B / (e["p50_ms"] / 1e3) / 1e9
    e["sgemm_fraction"] = e["gflops"] / bounds[f"sgemm_GFLOPs_{threads}t"]
    e["routed_head"] = routed[:64].tolist()
