"""Single-query route latency: search + aggregate + argmax, ours against NumPy, faiss, hnswlib, sklearn.

Each case (N, threads, d, k) builds one support set and runs every implementation on the same rotating
set of queries, one after the other in this process. Ours is ``Router.route_one`` (the production hot
path: normalise, search, aggregate, argmax; no allocation). References: top-k by their own search, then
the same aggregation in NumPy (the mean of the neighbours' scores/costs) and argmax.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import knnroute_core as kc
from bench.conftest import QUICK, ROUNDS, SINGLE_N, D, clustered, outcomes, record, run_bench

LAM = 200.0  # score per USD: mid-range, the routed model varies across queries
CASES = [(n, t, D, 100) for n in SINGLE_N for t in (1, 2)]
if not QUICK:
    CASES += [(10000, 1, 768, 100), (10000, 1, D, 10)]
IMPLS = ["ours-f32", "ours-bf16", "ours-f16", "ours-int8", "numpy", "faiss", "hnswlib-bf", "sklearn"]

_cache: dict = {}


def problem(n: int, d: int):
    key = (n, d)
    if key not in _cache:
        _cache.clear()
        X = clustered(n, d)
        S, C = outcomes(n)
        Q = clustered(64, d, seed=99, centers=max(16, min(2000, n // 500)))
        # queries near the support set: perturbed support rows
        rng = np.random.default_rng(5)
        Q = X[rng.integers(0, n, 64)] + 0.6 * Q
        Q = np.ascontiguousarray(Q / np.linalg.norm(Q, axis=1, keepdims=True), dtype=np.float32)
        _cache[key] = (X, S, C, Q)
    return _cache[key]


def make_impl(impl: str, X, S, C, k: int, threads: int):
    """Returns route(q) -> model index."""
    if impl.startswith("ours"):
        prec = impl.split("-")[1]
        r = kc.Router(X, S, C, k=k, precision=prec, query_threads=1 if threads == 1 else 0)
        return lambda q: r.route_one(q, LAM), r

    def agg(idx):
        return int(np.argmax(S[idx].mean(0) - LAM * C[idx].mean(0)))

    if impl == "numpy":
        def route(q):
            s = X @ q
            return agg(np.argpartition(-s, k)[:k])
        return route, None
    if impl == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X)
        return (lambda q: agg(index.search(q[None], k)[1][0])), index
    if impl == "hnswlib-bf":
        import hnswlib

        bf = hnswlib.BFIndex(space="ip", dim=X.shape[1])
        bf.init_index(max_elements=len(X))
        bf.add_items(X, np.arange(len(X)))
        return (lambda q: agg(bf.knn_query(q[None], k=k, num_threads=threads)[0][0].astype(np.int64))), bf
    if impl == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine", n_jobs=threads).fit(X)
        return (lambda q: agg(nn.kneighbors(q[None], return_distance=False)[0])), nn
    raise ValueError(impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("n", "threads", "d", "k"), CASES, ids=[f"N{n}-t{t}-d{d}-k{k}" for n, t, d, k in CASES])
def test_single_query_route(benchmark, bounds, impl, n, threads, d, k):
    from threadpoolctl import threadpool_limits

    if impl == "sklearn" and n >= 100000 and not QUICK and threads == 2:
        pass
    X, S, C, Q = problem(n, d)
    case = f"single/N={n}/t={threads}/d={d}/k={k}"
    with threadpool_limits(limits=threads):
        route, obj = make_impl(impl, X, S, C, k, threads)
        queries = itertools.cycle(list(Q))
        # agreement with the exact float32 answer over all 64 queries
        routed = np.array([route(q) for q in Q])
        rounds = ROUNDS if impl.startswith("ours") or impl in ("numpy", "faiss", "hnswlib-bf") else max(20, ROUNDS // 5)
        if n >= 100000 and impl == "sklearn":
            rounds = max(10, ROUNDS // 10)
        times = run_bench(benchmark, lambda: route(next(queries)), rounds=rounds, warmup=5)
    bytes_f32 = n * d * 4
    bw = bounds[f"read_GBps_{threads}t"] * 1e9
    extra = {
        "N": n, "d": d, "k": k, "threads": threads,
        "bytes_f32": bytes_f32,
        "bound_ms": bytes_f32 / bw * 1e3,
        "routed": routed.tolist(),
    }
    if impl.startswith("ours"):
        extra["memory_bytes"] = int(obj.memory_bytes)
        rer = []
        for q in Q[:16]:
            obj.search(q[None], k)
            rer.append(kc.last_rerank_count())
        extra["reranked_mean"] = float(np.mean(rer))
    e = record(case, impl, times, **extra)
    e["bound_fraction"] = e["bound_ms"] / e["p50_ms"]
