"""Approximate search for big support sets: KNNRouter(index="hnsw") at N = 1M, d = 384, clustered data.

Reports build time (2 threads), memory, recall@100 against exact search (our batch kernel) on 200
queries, single-query route latency p50/p99 (1 thread) for a few query beams, and the routed-model
agreement with the exact router on the real RouterBench subset across lambda.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import knnroute_core as kc
from bench.conftest import HNSW_N, QUICK, D, clustered, outcomes, record, run_bench

K = 100
LAM = 200.0


@pytest.fixture(scope="module")
def big():
    X = clustered(HNSW_N, centers=max(16, min(5000, HNSW_N // 200)))
    S, C = outcomes(HNSW_N)
    rng = np.random.default_rng(21)
    Q = X[rng.integers(0, HNSW_N, 200)] + 0.6 * clustered(200, seed=96)
    Q = np.ascontiguousarray(Q / np.linalg.norm(Q, axis=1, keepdims=True), dtype=np.float32)
    return X, S, C, Q


@pytest.fixture(scope="module")
def built(big):
    from knnroute import KNNRouter

    X, S, C, Q = big
    t0 = time.perf_counter()
    h = KNNRouter(k=K, index="hnsw", hnsw_m=16, hnsw_ef_construction=100, n_threads=2).fit(X, S, C)
    build_s = time.perf_counter() - t0
    exact = kc.SupportSet(X)
    gt, _ = exact.search(Q, K, 2)
    return h, build_s, gt


@pytest.mark.parametrize("ef", [100, 128, 200])
def test_hnsw_latency_recall(benchmark, big, built, ef):
    X, S, C, Q = big
    h, build_s, gt = built
    h.index_.ef = ef
    h.n_threads = 1
    ia, _ = h.kneighbors(Q)
    recall = float(np.mean([len(set(a) & set(g)) / K for a, g in zip(ia, gt, strict=False)]))
    qs = iter(list(Q) * 100)
    times = run_bench(benchmark, lambda: h.route_one(next(qs), LAM), rounds=300 if not QUICK else 20, warmup=5)
    record(f"hnsw/N={HNSW_N}/d={D}/k={K}/M=16/efC=100", f"ef={ef}", times, recall_at_100=recall,
           build_s=build_s, bytes_per_prompt=h.memory_bytes() / HNSW_N)


def test_hnsw_routing_agreement_real():
    try:
        from knnroute.data import load_dataset
        from knnroute.embed import embed_dataset

        parts = [embed_dataset(ds, progress=False) for ds in load_dataset("routerbench")]
    except Exception as exc:
        pytest.skip(f"real data unavailable: {exc}")
    from knnroute import KNNRouter

    X = np.concatenate([ds.embeddings[ds.split == "train"] for ds in parts])
    S = np.concatenate([ds.scores[ds.split == "train"] for ds in parts])
    C = np.concatenate([ds.costs[ds.split == "train"] for ds in parts])
    Q = np.concatenate([ds.embeddings[ds.split == "test"] for ds in parts])
    c_max = float(np.nanmean(C, axis=0).max())
    lams = np.concatenate([[0.0], np.geomspace(1e-3, 1e5, 199)]) / c_max
    exact = KNNRouter(k=K).fit(X, S, C)
    re = exact.route(Q, lams)
    ie, _ = exact.kneighbors(Q)
    for ef in (128, 200):
        h = KNNRouter(k=K, index="hnsw", hnsw_ef=ef).fit(X, S, C)
        ia, _ = h.kneighbors(Q)
        record(f"hnsw-real/routerbench-0shot (MiniLM)/support={len(X)}/test={len(Q)}/k={K}", f"ef={ef}",
               recall_at_100=float(np.mean([len(set(a) & set(g)) / K for a, g in zip(ia, ie, strict=False)])),
               routed_agreement=float((h.route(Q, lams) == re).mean()))
